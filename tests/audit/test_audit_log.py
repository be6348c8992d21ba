"""The audit log: append-only through the ORM, the admin and (on PostgreSQL) raw SQL; admin changes in it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.db import DatabaseError, connection, transaction

from audit.log import record
from audit.models import AppendOnly, AuditEvent
from clusters.models import Cluster


@pytest.fixture
def event(db) -> AuditEvent:
    return record("test.thing", actor="someone", target="x", message="it happened", details={"n": 1})


def test_the_orm_refuses_to_change_or_delete_an_event(event):
    event.message = "rewritten"
    with pytest.raises(AppendOnly):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(message="rewritten")
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).message == "it happened"


@pytest.mark.postgres
def test_postgresql_refuses_raw_sql_updates_and_deletes(event):
    require_postgres()
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    for sql in (
        f"UPDATE {table} SET message = 'rewritten' WHERE id = %s",  # noqa: S608 - our own table name
        f"DELETE FROM {table} WHERE id = %s",  # noqa: S608
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as c,
        ):
            c.execute(sql, [event.pk])
    kept = AuditEvent.objects.get(pk=event.pk)
    assert kept.message == "it happened"


@pytest.mark.postgres
def test_postgresql_lets_only_a_deleted_persons_name_fall_off_alone(db, django_user_model):
    require_postgres()
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    event = record("test.thing", actor=django_user_model.objects.create(username="leaver"), message="m")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
        # Clearing the actor is what deleting a person does; it is never cover for another change.
        c.execute(f"UPDATE {table} SET actor_id = NULL, message = 'x' WHERE id = %s", [event.pk])  # noqa: S608
    with connection.cursor() as c:
        c.execute(f"UPDATE {table} SET actor_id = NULL WHERE id = %s", [event.pk])  # noqa: S608
    kept = AuditEvent.objects.get(pk=event.pk)
    assert (kept.actor_id, kept.actor_name, kept.message) == (None, "leaver", "m")


def test_deleting_a_person_keeps_their_events_under_their_name(db, django_user_model):
    person = django_user_model.objects.create(username="leaver")
    record("test.thing", actor=person, message="before leaving")
    person.delete()
    kept = AuditEvent.objects.get(action="test.thing")
    assert (kept.actor_id, kept.actor_name, kept.message) == (None, "leaver", "before leaving")


def require_postgres() -> None:
    from tests.conftest import require

    require(
        connection.vendor == "postgresql",
        "the audit table's trigger exists on PostgreSQL only (DATABASE_URL)",
    )


# --- the admin ---------------------------------------------------------------------------------------


def test_the_admin_shows_events_but_offers_no_change_or_delete(admin_client, event):
    page = admin_client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    assert page.status_code == 200
    assert b"it happened" in page.content
    assert b'name="_save"' not in page.content
    assert admin_client.get(f"/admin/audit/auditevent/{event.pk}/delete/").status_code == 403
    assert admin_client.get("/admin/audit/auditevent/add/").status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_admin_searches_actor_target_message_and_client_address(admin_client, db):
    record("test.a", actor="alice", target="job 17", message="first")
    record(
        "test.b",
        actor="bob",
        message="second",
        request=type("R", (), {"META": {"REMOTE_ADDR": "10.1.2.3"}})(),
    )
    for query, expected in [
        ("alice", "test.a"),
        ("job 17", "test.a"),
        ("second", "test.b"),
        ("10.1.2", "test.b"),
    ]:
        page = admin_client.get("/admin/audit/auditevent/", {"q": query})
        assert page.status_code == 200
        actions = [e.action for e in page.context["cl"].result_list]
        assert actions == [expected], query


def test_the_admin_downloads_selected_events_as_json_lines_and_audits_it(admin_client, event):
    response = admin_client.post(
        "/admin/audit/auditevent/", {"action": "export_selected", "_selected_action": [event.pk]}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    [line] = response.content.decode().splitlines()
    assert '"message": "it happened"' in line
    download = AuditEvent.objects.get(action="audit.exported")
    assert (download.actor_name, download.details) == ("admin", {"count": 1})


def test_an_admin_change_in_any_app_appears_in_the_audit_log(admin_client, db):
    cluster = Cluster.objects.create(
        slug="c1", name="Cluster One", slurmrestd_url="http://127.0.0.1:9", jwt_key_ref="/etc/slurm/jwt.key"
    )
    page = admin_client.get(f"/admin/clusters/cluster/{cluster.pk}/change/")
    form = {k: v for k, v in page.context["adminform"].form.initial.items() if v not in (None, False)}
    form["name"] = "Cluster Uno"
    response = admin_client.post(f"/admin/clusters/cluster/{cluster.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    event = AuditEvent.objects.get(action="admin.change")
    assert (event.actor_name, event.cluster, event.target) == (
        "admin",
        "c1",
        f"clusters.Cluster {cluster.pk}",
    )
    assert event.message == "Changed cluster “Cluster Uno” in the admin: Changed Name."
    assert event.details["model"] == "clusters.Cluster"


def test_an_admin_bulk_delete_writes_one_event_per_object(admin_client, db):
    groups = [Group.objects.create(name=f"hand-{i}") for i in range(2)]
    response = admin_client.post(
        "/admin/auth/group/",
        {"action": "delete_selected", "_selected_action": [g.pk for g in groups], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Group.objects.filter(name__startswith="hand-").exists()
    targets = set(AuditEvent.objects.filter(action="admin.delete").values_list("target", flat=True))
    assert targets == {f"auth.Group {g.pk}" for g in groups}


def test_deleting_people_in_bulk_in_the_admin_is_audited_person_by_person(admin_client, django_user_model):
    people = [django_user_model.objects.create(username=f"temp{i}") for i in range(2)]
    response = admin_client.post(
        "/admin/accounts/user/",
        {"action": "delete_selected", "_selected_action": [p.pk for p in people], "post": "yes"},
    )
    assert response.status_code == 302
    assert not django_user_model.objects.filter(username__startswith="temp").exists()
    events = AuditEvent.objects.filter(action="admin.delete").order_by("id")
    assert [e.details["object"] for e in events] == ["temp0", "temp1"]
    assert {e.actor_name for e in events} == {"admin"}
