"""The operators' admin: grants, quotas with use, reservations and history, the ledger, groups and members."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group

from access import ledger
from access.ledger import reserve
from access.models import Grant, Quota, QuotaChange, Usage
from access.policy import Resources
from accounts.models import IdpGroup, User
from audit.models import AuditEvent


def form_data(page) -> dict[str, Any]:
    """What the browser would post back unchanged: the form's values and every inline's management form."""
    data: dict[str, Any] = {}
    form = page.context["adminform"].form
    for name in form.fields:
        value = form[name].value()
        if value not in (None, False, ""):
            data[name] = value
    for inline in page.context["inline_admin_formsets"]:
        formset = inline.formset
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        for sub in formset.forms:
            for name in sub.fields:
                value = sub[name].value()
                if value not in (None, False, ""):
                    data[f"{sub.prefix}-{name}"] = value
    return data


# --- quotas ------------------------------------------------------------------------------------------


def test_adding_a_quota_in_the_admin_keeps_history_and_audits_it(admin_client, cluster, ml_team):
    page = admin_client.get("/admin/access/quota/add/")
    data = form_data(page) | {
        "cluster": cluster.pk,
        "group": ml_team.pk,
        "gpu_hours": "10",
        "max_queued_jobs": "5",
    }
    response = admin_client.post("/admin/access/quota/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    quota = Quota.objects.get()
    change = QuotaChange.objects.get()
    assert (change.quota, change.kind, change.changed_by_name) == (quota, "created", "admin")
    assert (change.before, change.after["gpu_hours"], change.after["group"]) == ({}, 10.0, "ml-team")
    event = AuditEvent.objects.get(action="admin.add")
    assert (event.actor_name, event.cluster, event.target) == ("admin", "c1", f"access.Quota {quota.pk}")


def test_changing_a_quota_records_before_and_after_and_shows_it(admin_client, cluster, ml_team):
    quota = Quota.objects.create(cluster=cluster, group=ml_team, gpu_hours=10)
    url = f"/admin/access/quota/{quota.pk}/change/"
    data = form_data(admin_client.get(url)) | {"gpu_hours": "20", "max_walltime": "120"}
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    change = QuotaChange.objects.get(kind="changed")
    assert change.changed_by_name == "admin"
    assert change.differences == [("gpu_hours", 10.0, 20.0), ("max_walltime", None, 120)]
    page = admin_client.get(url).content.decode()
    assert "gpu_hours: 10.0 → 20.0; max_walltime: none → 120" in page
    assert AuditEvent.objects.filter(action="admin.change", target=f"access.Quota {quota.pk}").exists()


def test_saving_an_unchanged_quota_adds_no_history(cluster, ml_team):
    quota = Quota.objects.create(cluster=cluster, group=ml_team, gpu_hours=10)
    quota.save()
    assert QuotaChange.objects.filter(quota=quota).count() == 1


def test_deleting_quotas_keeps_their_history(admin_client, cluster, ml_team, jane):
    quotas = [
        Quota.objects.create(cluster=cluster, group=ml_team, gpu_hours=10),
        Quota.objects.create(cluster=cluster, user=jane, max_queued_jobs=1),
    ]
    response = admin_client.post(
        "/admin/access/quota/",
        {"action": "delete_selected", "_selected_action": [q.pk for q in quotas], "post": "yes"},
    )
    assert response.status_code == 302
    assert not Quota.objects.exists()
    deleted = QuotaChange.objects.filter(kind="deleted").order_by("quota_label")
    assert [(c.quota_label, c.quota, c.changed_by_name) for c in deleted] == [
        ("group ml-team on c1", None, "admin"),
        ("person jane on c1", None, "admin"),
    ]
    assert AuditEvent.objects.filter(action="admin.delete").count() == 2


def test_a_quota_shows_its_current_use_and_open_reservations(admin_client, cluster, ml_team, jane):
    quota = Quota.objects.create(cluster=cluster, group=ml_team, gpu_hours=10, max_queued_jobs=4)
    rid = reserve(jane, cluster, Resources("gpu", gpus=2, time_limit=90)).reservation_id
    ledger.attach(rid, 31337)
    listing = admin_client.get("/admin/access/quota/").content.decode()
    assert "0 used + 3 reserved of 10: 7 left" in listing
    assert "0 running, 1/4 queued" in listing
    page = admin_client.get(f"/admin/access/quota/{quota.pk}/change/").content.decode()
    assert "renews on 1" in page
    assert "<td>jane</td><td>31337</td><td>Reserved, waiting in the queue</td><td>gpu</td><td>3</td>" in page


def test_the_quota_history_page_is_read_only(admin_client, cluster, ml_team):
    Quota.objects.create(cluster=cluster, group=ml_team, gpu_hours=10)
    assert admin_client.get("/admin/access/quotachange/").status_code == 200
    assert admin_client.get("/admin/access/quotachange/add/").status_code == 403
    change = QuotaChange.objects.get()
    assert (
        admin_client.post(f"/admin/access/quotachange/{change.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert QuotaChange.objects.filter(pk=change.pk).exists()


# --- grants ------------------------------------------------------------------------------------------


def test_a_grant_is_for_a_group_or_a_person_not_both(admin_client, cluster, ml_team, jane):
    page = admin_client.get("/admin/access/grant/add/")
    data = form_data(page) | {
        "cluster": cluster.pk,
        "group": ml_team.pk,
        "user": jane.pk,
        "partitions": "gpu",
    }
    response = admin_client.post("/admin/access/grant/add/", data)
    assert response.status_code == 200
    assert "Choose a group or a person, not both and not neither." in response.content.decode()
    data.pop("group")
    data["partitions"] = "gpu, bad name!"
    response = admin_client.post("/admin/access/grant/add/", data)
    assert "Not a partition name: name!." in response.content.decode()
    data["partitions"] = "gpu debug"
    response = admin_client.post("/admin/access/grant/add/", data)
    assert response.status_code == 302
    assert Grant.objects.get(user=jane).partition_names == ["gpu", "debug"]
    assert AuditEvent.objects.filter(action="admin.add", cluster="c1").count() == 1


def test_the_grant_list_says_what_each_grant_covers(admin_client, cluster, ml_team, jane):
    Grant.objects.create(cluster=cluster, user=jane, partitions="debug", terminal=True)
    page = admin_client.get("/admin/access/grant/").content.decode()
    assert "group ml-team" in page
    assert "person jane" in page
    assert '<td class="field-partitions_shown">all</td>' in page
    assert '<td class="field-partitions_shown">debug</td>' in page


# --- the ledger --------------------------------------------------------------------------------------


def test_an_operator_releases_a_stuck_reservation_and_it_is_audited(admin_client, cluster, jane):
    queued = reserve(jane, cluster, Resources("cpu", time_limit=10)).reservation_id
    running = reserve(jane, cluster, Resources("cpu", time_limit=10)).reservation_id
    ledger.started(running)
    asked = admin_client.post(
        "/admin/access/usage/", {"action": "release_selected", "_selected_action": [queued, running]}
    )
    assert asked.status_code == 200
    page = asked.content.decode()
    assert "Release 1 reservation(s)?" in page
    assert f"Reservation {queued} of jane on c1 (never submitted)" in page
    assert "1 selected reservation(s) are not for queued jobs" in page
    assert Usage.objects.get(pk=queued).state == Usage.State.QUEUED  # asking released nothing
    assert not AuditEvent.objects.filter(action="ledger.released").exists()
    response = admin_client.post(
        "/admin/access/usage/",
        {"action": "release_selected", "_selected_action": [queued, running], "post": "yes"},
    )
    assert response.status_code == 302
    assert Usage.objects.get(pk=queued).state == Usage.State.RELEASED
    assert Usage.objects.get(pk=queued).release_reason == "released in the admin by admin"
    assert Usage.objects.get(pk=running).state == Usage.State.RUNNING
    event = AuditEvent.objects.get(action="ledger.released")
    assert (event.actor_name, event.cluster, event.details["reservation_id"]) == ("admin", "c1", queued)


def test_the_ledger_cannot_be_edited_or_deleted_in_the_admin(admin_client, cluster, jane):
    rid = reserve(jane, cluster, Resources("cpu", time_limit=10)).reservation_id
    page = admin_client.get(f"/admin/access/usage/{rid}/change/")
    assert page.status_code == 200
    assert page.context["adminform"].form.fields == {}
    assert admin_client.get(f"/admin/access/usage/{rid}/delete/").status_code == 403


def test_the_ledger_shows_hours_as_every_page_writes_a_figure(admin_client, cluster, jane):
    # 10 seconds on 1 CPU, settled: the float the ledger keeps is 0.002777…, never shown whole.
    rid = reserve(jane, cluster, Resources("cpu", time_limit=1)).reservation_id
    Usage.objects.filter(pk=rid).update(state=Usage.State.SETTLED, used_cpu_hours=10 / 3600)
    listing = admin_client.get("/admin/access/usage/").content.decode()
    detail = admin_client.get(f"/admin/access/usage/{rid}/change/").content.decode()
    for page in (listing, detail):
        assert "0.00278" in page
        assert "0.0027777" not in page
        assert "0.016666" not in page  # the reservation of 1 minute: 0.0167
    assert '<td class="field-used_cpu_hours_shown">0.00278</td>' in listing
    assert '<td class="field-reserved_gpu_hours_shown">0</td>' in listing


# --- groups and members ------------------------------------------------------------------------------


@pytest.fixture
def idp_group(db) -> Group:
    group = Group.objects.create(name="hpc-users")
    IdpGroup.objects.create(group=group, provider="okta", claim_value="hpc-users")
    return group


def test_the_group_list_says_who_manages_each_group(admin_client, idp_group, ml_team, jane):
    jane.groups.add(idp_group)
    listing = admin_client.get("/admin/auth/group/")
    content = listing.content.decode()
    assert "The IdP okta (claim value &#x27;hpc-users&#x27;)" in content
    assert "Hand: members are kept as set here." in content
    counts = {g.name: g.member_count for g in listing.context["cl"].result_list}
    assert counts == {"hpc-users": 1, "ml-team": 1}
    only_idp = admin_client.get("/admin/auth/group/", {"managed": "idp"}).context["cl"].result_list
    assert [g.name for g in only_idp] == ["hpc-users"]
    by_hand = admin_client.get("/admin/auth/group/", {"managed": "hand"}).context["cl"].result_list
    assert [g.name for g in by_hand] == ["ml-team"]


def test_members_of_a_hand_made_group_are_edited_in_the_admin_and_audited(admin_client, ml_team, jane):
    bob = User.objects.create(username="bob")
    url = f"/admin/auth/group/{ml_team.pk}/change/"
    page = admin_client.get(url)
    [members] = page.context["inline_admin_formsets"]
    prefix = members.formset.prefix
    data = form_data(page)
    total = int(data[f"{prefix}-TOTAL_FORMS"])
    data |= {f"{prefix}-TOTAL_FORMS": total + 1, f"{prefix}-{total}-user": bob.pk}
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert set(ml_team.user_set.values_list("username", flat=True)) == {"jane", "bob"}
    event = AuditEvent.objects.get(action="admin.change", target=f"auth.Group {ml_team.pk}")
    assert event.message == "Changed group “ml-team” in the admin: Added member “bob”."


def test_members_of_an_idp_group_are_read_only(admin_client, idp_group, jane):
    jane.groups.add(idp_group)
    page = admin_client.get(f"/admin/auth/group/{idp_group.pk}/change/")
    [members] = page.context["inline_admin_formsets"]
    assert (members.has_add_permission, members.has_change_permission, members.has_delete_permission) == (
        False,
        False,
        False,
    )
    assert "members are rewritten at each sign-in, so edit them in the IdP" in page.content.decode()
