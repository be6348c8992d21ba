"""accounts.posix: Linux user names from IdP claims, and UIDs that are allocated once and never shared."""

from __future__ import annotations

import re
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from hypothesis import example, given, settings
from hypothesis import strategies as st

from accounts import posix, posix_names
from accounts.models import ClusterAccount, IdCounter, PosixAccount, User
from audit.models import AuditEvent
from clusters.models import Cluster
from tests.conftest import require

# An independent statement of what a safe Linux user name is, not posix_names.NAME.
SAFE = re.compile(r"[a-z_][a-z0-9_-]*")
SYSTEM_NAMES = {"root", "daemon", "bin", "sys", "nobody", "slurm", "munge", "sshd", "www-data", "mail", "adm"}


def is_safe_name(name: str) -> bool:
    return (
        1 <= len(name) <= 32
        and SAFE.fullmatch(name) is not None
        and name not in SYSTEM_NAMES
        and not name[0].isdigit()
        and not name.startswith("-")
    )


claim_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)),
    max_size=80,
)


@given(claim_text)
@example("")
@example("root")
@example("@")
@example("+@x")
@example("ß" * 40)
@example("İstanbul")
@example("ﬃ")
@example("-1")
def test_any_claim_gives_a_safe_name(value):
    assert is_safe_name(posix_names.make_name(value))


@given(
    claim_text,
    st.sets(st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=33), max_size=30),
)
def test_a_taken_name_is_never_handed_out_again(value, taken):
    first = posix_names.make_name(value)
    taken = taken | {first}
    name = posix_names.make_name(value, taken.__contains__)
    assert is_safe_name(name)
    assert name not in taken


@given(claim_text)
def test_making_a_name_twice_changes_nothing(value):
    name = posix_names.make_name(value)
    assert posix_names.make_name(name) == name


@given(st.emails(), st.sampled_from(["example.com", "corp.example.org"]))
def test_only_the_local_part_of_an_email_counts(email, other_domain):
    local = email.rpartition("@")[0]
    assert posix_names.make_name(email) == posix_names.make_name(f"{local}@{other_domain}")


@given(st.lists(claim_text, min_size=2, max_size=20))
@settings(max_examples=50)
def test_people_whose_claims_look_alike_still_get_distinct_names(values):
    given_out: set[str] = set()
    for value in values:
        name = posix_names.make_name(value, given_out.__contains__)
        assert name not in given_out
        given_out.add(name)


@pytest.mark.parametrize(
    ("claim", "name"),
    [
        ("Jane.Doe@corp.example", "jane_doe"),
        ("jane+hpc@corp.example", "jane"),
        ("José Müller", "jose_muller"),
        ("Øystein Ødegård", "oystein_odegard"),
        ("Straße", "strasse"),
        ("o'brien", "obrien"),
        ("123abc", "u123abc"),
        ("--x--", "x"),
        ("root@corp.example", "root2"),
        ("slurm", "slurm2"),
        ("张伟@corp.example", "user2"),
        ("a" * 40, "a" * 32),
    ],
)
def test_names_read_like_the_claim(claim, name):
    assert posix_names.make_name(claim) == name


def test_a_long_name_is_shortened_to_make_room_for_its_suffix():
    name = posix_names.make_name("a" * 40, {"a" * 32}.__contains__)
    assert name == "a" * 31 + "2"


@pytest.mark.parametrize("bad", ["", "Jane", "1abc", "-x", "a b", "a" * 33, "root", "systemd-x", "_apt"])
def test_an_admin_override_must_be_a_safe_unreserved_name(db, bad):
    assert posix_names.name_problem(bad)


# --- the database: allocation -------------------------------------------------------------------


@pytest.fixture
def uid_range(settings):
    settings.CLUSTERRA_UID_MIN = 60100
    settings.CLUSTERRA_UID_MAX = 60199
    return settings


def person(email: str, username: str | None = None) -> User:
    return User.objects.create(username=username or email, email=email)


def test_the_first_login_reserves_a_name_and_one_number_for_uid_and_gid(db, uid_range):
    account = posix.on_login(person("Jane.Doe@corp.example"), {"email": "Jane.Doe@corp.example"})
    assert (account.username, account.uid, account.gid) == ("jane_doe", 60100, 60100)
    event = AuditEvent.objects.get(action="posix.account_created")
    assert event.target == "jane_doe"
    assert event.details["uid"] == 60100


def test_it_is_idempotent(db, uid_range):
    jane = person("jane@corp.example")
    first = posix.ensure_account(jane)
    assert posix.ensure_account(jane) == first
    assert posix.on_login(jane, {"email": "someone.else@corp.example"}) == first
    assert IdCounter.objects.get(name=posix.COUNTER).next_value == 60101
    assert PosixAccount.objects.count() == 1


def test_the_claim_comes_from_the_setting(db, uid_range):
    uid_range.CLUSTERRA_POSIX_NAME_CLAIM = "preferred_username"
    jane = person("jane@corp.example")
    account = posix.on_login(jane, {"email": "jane@corp.example", "preferred_username": "JDoe@CORP"})
    assert account.username == "jdoe"


def test_a_missing_claim_falls_back_to_the_email(db, uid_range):
    uid_range.CLUSTERRA_POSIX_NAME_CLAIM = "preferred_username"
    account = posix.on_login(person("jane@corp.example"), {"email": "Jane@corp.example"})
    assert account.username == "jane"


def test_a_name_held_by_another_account_or_a_clusters_own_users_gets_a_suffix(db, uid_range):
    Cluster.objects.create(slug="c", name="C", slurmrestd_url="http://127.0.0.1:1", service_user="svc")
    assert posix.ensure_account(person("jane@a.example")).username == "jane"
    assert posix.ensure_account(person("jane@b.example")).username == "jane2"
    assert posix.ensure_account(person("svc@b.example")).username == "svc2"


def test_numbers_are_never_reused_even_after_a_row_is_deleted(db, uid_range):
    posix.ensure_account(person("one@x.example")).delete()
    assert posix.ensure_account(person("two@x.example")).uid == 60101


def test_it_skips_numbers_already_held(db, uid_range):
    PosixAccount.objects.create(username="byhand", uid=60100, gid=60100)
    assert posix.ensure_account(person("jane@x.example")).uid == 60101


def test_a_full_range_is_a_clear_error(db, settings):
    settings.CLUSTERRA_UID_MIN = settings.CLUSTERRA_UID_MAX = 60100
    posix.ensure_account(person("one@x.example"))
    with pytest.raises(posix.UidRangeExhausted, match="CLUSTERRA_UID_MAX"):
        posix.ensure_account(person("two@x.example"))
    assert PosixAccount.objects.count() == 1


def test_a_full_range_does_not_stop_a_sign_in(db, settings):
    settings.CLUSTERRA_UID_MIN = settings.CLUSTERRA_UID_MAX = 60100
    posix.on_login(person("one@x.example"), {})
    assert posix.on_login(person("two@x.example"), {}) is None
    event = AuditEvent.objects.get(reason="uid_range_full")
    assert event.outcome == "error"


@pytest.mark.postgres
def test_concurrent_first_logins_never_share_a_name_or_a_number(transactional_db, uid_range):
    # SQLite's in-memory test database answers concurrent threads with "table is locked".
    require(connection.vendor == "postgresql", "row locks between threads need PostgreSQL (DATABASE_URL)")
    people = [person(f"same@host{i}.example", username=f"same{i}") for i in range(8)]
    barrier = threading.Barrier(len(people))
    errors: list[BaseException] = []

    def login(user):
        try:
            barrier.wait()
            posix.on_login(user, {"email": user.email})
        except BaseException as e:
            errors.append(e)
        finally:
            connection.close()

    threads = [threading.Thread(target=login, args=(p,)) for p in people]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = list(PosixAccount.objects.all())
    assert len(rows) == 8
    assert len({r.uid for r in rows}) == 8
    assert len({r.username for r in rows}) == 8


# --- the admin's name override ------------------------------------------------------------------


@pytest.fixture
def cluster(db):
    return Cluster.objects.create(slug="c", name="C", slurmrestd_url="http://127.0.0.1:1")


def test_an_admin_may_rename_before_the_linux_user_exists(db, uid_range, cluster):
    account = posix.ensure_account(person("jane@x.example"))
    ClusterAccount.objects.create(account=account, cluster=cluster, state=ClusterAccount.State.FAILED)
    account.username = "jdoe"
    account.full_clean()


def test_the_name_is_fixed_once_a_cluster_has_the_linux_user(db, uid_range, cluster):
    account = posix.ensure_account(person("jane@x.example"))
    ClusterAccount.objects.create(
        account=account, cluster=cluster, state=ClusterAccount.State.FAILED, user_created_at=timezone.now()
    )
    account.username = "jdoe"
    with pytest.raises(ValidationError, match="can no longer be renamed"):
        account.full_clean()


def test_the_admin_form_renames_and_audits_then_turns_read_only(admin_client, uid_range, cluster):
    account = posix.ensure_account(person("jane@x.example"))
    url = f"/admin/accounts/posixaccount/{account.pk}/change/"
    response = admin_client.post(url, {"username": "jdoe", **inline_management()})
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert account.username == "jdoe"
    assert AuditEvent.objects.filter(action="posix.renamed", target="jdoe").exists()

    ClusterAccount.objects.create(
        account=account,
        cluster=cluster,
        state=ClusterAccount.State.USER_CREATED,
        user_created_at=timezone.now(),
    )
    page = admin_client.get(url).content.decode()
    assert 'name="username"' not in page


def test_a_reserved_name_is_refused_by_the_admin_form(admin_client, uid_range):
    account = posix.ensure_account(person("jane@x.example"))
    url = f"/admin/accounts/posixaccount/{account.pk}/change/"
    response = admin_client.post(url, {"username": "root", **inline_management()})
    assert response.status_code == 200
    assert "reserved" in response.content.decode()
    account.refresh_from_db()
    assert account.username == "jane"


def inline_management() -> dict[str, str]:
    prefix = "clusters"
    return {
        f"{prefix}-TOTAL_FORMS": "0",
        f"{prefix}-INITIAL_FORMS": "0",
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


def test_a_local_part_with_a_reserved_prefix_still_gets_a_usable_name():
    assert posix_names.make_name("systemd-x@corp.example") == "usystemd-x"
    assert not posix_names.is_reserved(posix_names.make_name("systemd-network@corp.example"))
