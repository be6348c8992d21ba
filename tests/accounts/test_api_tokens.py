"""accounts.api_tokens and `manage.py issue_api_token`: shown once, stored hashed, expiring, revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import api_tokens
from accounts.models import ApiToken, User
from audit.models import AuditEvent


def test_a_token_is_random_prefixed_and_only_its_digest_is_kept(jane):
    token, raw = api_tokens.issue(jane, name="laptop")
    assert raw.startswith("ct_")
    assert len(raw) > 40
    assert token.digest == hashlib.sha256(raw.encode()).hexdigest()
    assert token.prefix == raw[:12]
    stored = ApiToken.objects.filter(pk=token.pk).values().get()
    assert raw not in [str(v) for v in stored.values()]
    assert api_tokens.issue(jane)[1] != raw


def test_it_expires_after_90_days_unless_told_otherwise(jane, settings):
    token, _ = api_tokens.issue(jane)
    assert abs(token.expires - (timezone.now() + timedelta(days=90))) < timedelta(minutes=1)
    assert api_tokens.issue(jane, days=7)[0].expires < timezone.now() + timedelta(days=8)
    settings.CLUSTERRA_API_TOKEN_DAYS = 30
    assert api_tokens.issue(jane)[0].expires < timezone.now() + timedelta(days=31)


@pytest.mark.parametrize("days", [0, -1, 100_000])
def test_a_lifetime_out_of_range_is_refused(jane, days):
    with pytest.raises(ValueError, match="between 1 and"):
        api_tokens.issue(jane, days=days)


def test_it_authenticates_and_records_use_at_most_once_a_minute(jane):
    token, raw = api_tokens.issue(jane)
    assert api_tokens.authenticate(raw) == jane
    token.refresh_from_db()
    first = token.last_used
    assert first is not None
    api_tokens.authenticate(raw)
    token.refresh_from_db()
    assert token.last_used == first
    ApiToken.objects.filter(pk=token.pk).update(last_used=first - timedelta(minutes=2))
    api_tokens.authenticate(raw)
    token.refresh_from_db()
    assert token.last_used > first


@pytest.mark.parametrize("raw", [None, "", "ct_", "ct_unknown", "Bearer ct_x", "x" * 500])
def test_unknown_tokens_are_refused_quietly(jane, raw):
    assert api_tokens.authenticate(raw) is None
    assert not AuditEvent.objects.filter(action="api_token.refused").exists()


def test_a_revoked_token_is_refused_and_the_refusal_audited(jane):
    token, raw = api_tokens.issue(jane)
    assert api_tokens.revoke(token, reason="lost laptop")
    assert not api_tokens.revoke(token)
    assert api_tokens.authenticate(raw) is None
    assert AuditEvent.objects.get(action="api_token.refused").reason == "revoked"
    assert AuditEvent.objects.filter(action="api_token.revoked").count() == 1


def test_an_expired_token_is_refused(jane):
    token, raw = api_tokens.issue(jane)
    ApiToken.objects.filter(pk=token.pk).update(expires=timezone.now() - timedelta(seconds=1))
    assert api_tokens.authenticate(raw) is None
    assert AuditEvent.objects.get(action="api_token.refused").reason == "expired"


def test_a_deactivated_persons_token_is_refused(jane):
    _, raw = api_tokens.issue(jane)
    jane.is_active = False
    jane.save()
    assert api_tokens.authenticate(raw) is None
    assert AuditEvent.objects.get(action="api_token.refused").reason == "inactive"


def test_no_token_is_issued_to_a_deactivated_person(jane):
    jane.is_active = False
    jane.save()
    with pytest.raises(ValueError, match="deactivated"):
        api_tokens.issue(jane)


def test_revoke_all_leaves_other_people_alone(jane):
    bob = User.objects.create(username="bob", email="bob@corp.example")
    for _ in range(3):
        api_tokens.issue(jane)
    _, bobs = api_tokens.issue(bob)
    assert api_tokens.revoke_all(jane) == 3
    assert api_tokens.revoke_all(jane) == 0
    assert api_tokens.authenticate(bobs) == bob


# --- manage.py issue_api_token ---------------------------------------------------------------------


def test_the_command_prints_only_a_working_token(jane):
    out, err = StringIO(), StringIO()
    call_command(
        "issue_api_token", "JANE@corp.example", "--name", "ci", "--days", "7", stdout=out, stderr=err
    )
    raw = out.getvalue().strip()
    assert raw.startswith("ct_")
    assert "\n" not in raw
    assert api_tokens.authenticate(raw) == jane
    token = ApiToken.objects.get(user=jane)
    assert token.name == "ci"
    assert token.expires < timezone.now() + timedelta(days=8)
    assert raw not in err.getvalue()


def test_the_command_refuses_an_unknown_address(db):
    with pytest.raises(CommandError, match="No person"):
        call_command("issue_api_token", "nobody@corp.example", stdout=StringIO())


def test_the_command_refuses_an_ambiguous_address(jane):
    User.objects.create(username="jane2", email="jane@corp.example")
    with pytest.raises(CommandError, match="2 people share"):
        call_command("issue_api_token", "jane@corp.example", stdout=StringIO())


def test_the_command_refuses_a_deactivated_person(jane):
    jane.is_active = False
    jane.save()
    with pytest.raises(CommandError, match="deactivated"):
        call_command("issue_api_token", "jane@corp.example", stdout=StringIO())


# --- the admin ---------------------------------------------------------------------------------------


def test_the_admin_lists_tokens_without_their_digest_and_can_revoke_them(admin_client, jane):
    token, raw = api_tokens.issue(jane, name="laptop")
    listing = admin_client.get("/admin/accounts/apitoken/").content.decode()
    detail = admin_client.get(f"/admin/accounts/apitoken/{token.pk}/change/").content.decode()
    for page in (listing, detail):
        assert token.prefix in page
        assert token.digest not in page
        assert raw not in page
    asked = admin_client.post(
        "/admin/accounts/apitoken/", {"action": "revoke_selected", "_selected_action": [token.pk]}
    )
    assert asked.status_code == 200
    assert f"laptop ({token.prefix}…) of jane" in asked.content.decode()
    assert api_tokens.authenticate(raw) is not None  # asking revoked nothing
    admin_client.post(
        "/admin/accounts/apitoken/",
        {"action": "revoke_selected", "_selected_action": [token.pk], "post": "yes"},
    )
    assert api_tokens.authenticate(raw) is None
