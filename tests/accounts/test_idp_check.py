"""The periodic check against the real test IdP: groups follow it, and a person it drops is offboarded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts import api_tokens, idp_check
from accounts.models import IdpRefresh, User
from audit.models import AuditEvent
from tests.support.fixtures_idp import sign_in

pytestmark = [pytest.mark.idp, pytest.mark.django_db]


def alice() -> User:
    return User.objects.get(email="alice@example.org")


def test_the_refresh_token_is_kept_only_encrypted(client, idp):
    sign_in(client, "alice", "alice-pw")
    row = IdpRefresh.objects.get(user=alice())
    assert row.provider_id == "testidp"
    assert row.sealed.startswith("gAAAA")  # a Fernet token, not the IdP's
    assert "refresh" not in row.sealed


def test_groups_follow_the_idp_between_sign_ins(client, idp):
    sign_in(client, "alice", "alice-pw")
    assert set(alice().groups.values_list("name", flat=True)) == {"hpc-users", "gpu"}
    idp.set_user("alice", groups=["hpc-users"])

    report = idp_check.check_due(force=True)

    assert report.checked == 1
    assert set(alice().groups.values_list("name", flat=True)) == {"hpc-users"}
    assert alice().is_active


def test_a_person_the_idp_no_longer_knows_is_offboarded(client, idp):
    sign_in(client, "alice", "alice-pw")
    _, raw = api_tokens.issue(alice())
    del idp.users["alice"]  # deleted at the IdP: it refuses the refresh
    idp._write()

    report = idp_check.check_due(force=True)

    assert (report.checked, report.offboarded) == (1, 1)
    person = alice()
    assert not person.is_active
    assert "no longer accepts" in person.deactivated_reason
    assert api_tokens.authenticate(raw) is None
    assert client.get("/").status_code == 302
    assert not IdpRefresh.objects.exists()
    assert AuditEvent.objects.filter(action="offboard.finished").exists()


def test_checks_come_every_check_minutes_and_never_with_zero(client, idp, settings):
    sign_in(client, "alice", "alice-pw")
    assert idp_check.check_due().checked == 0  # just signed in
    IdpRefresh.objects.update(checked=timezone.now() - timedelta(minutes=16))
    assert idp_check.check_due().checked == 1
    IdpRefresh.objects.update(checked=timezone.now() - timedelta(days=1))
    apps = settings.SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"]
    apps[0]["settings"]["check_minutes"] = 0
    assert idp_check.check_due().checked == 0


def test_an_idp_out_of_reach_decides_nothing(client, idp, monkeypatch):
    sign_in(client, "alice", "alice-pw")
    import requests

    def down(*args, **kwargs):
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(idp_check.requests, "post", down)
    report = idp_check.check_due(force=True)
    assert (report.checked, report.unanswered, report.offboarded) == (1, 1, 0)
    assert alice().is_active
