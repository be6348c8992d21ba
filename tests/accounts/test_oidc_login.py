"""Sign-in through the real test IdP: people, IdP groups, refusals and their audit events."""

from __future__ import annotations

import pytest
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from accounts import oidc
from accounts.models import IdpGroup
from audit.models import AuditEvent
from tests.support.fixtures_idp import PROVIDER_ID, sign_in

pytestmark = [pytest.mark.idp, pytest.mark.django_db]


def signed_in_user(client):
    user_id = client.session.get("_auth_user_id")
    return get_user_model().objects.get(pk=user_id) if user_id else None


def group_names(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_a_first_login_creates_the_person_with_idp_groups(client, idp):
    result = sign_in(client, "alice", "alice-pw")

    assert result.console.status_code == 302
    assert result.console["Location"] == "/"
    alice = signed_in_user(client)
    assert alice is not None
    assert alice.email == "alice@example.org"
    account = SocialAccount.objects.get(user=alice)
    assert (account.provider, account.uid) == (PROVIDER_ID, "alice")
    assert account.extra_data["id_token"]["groups"] == ["hpc-users", "gpu"]
    assert group_names(alice) == {"hpc-users", "gpu"}
    marks = IdpGroup.objects.filter(group__user=alice)
    assert {(m.provider, m.claim_value) for m in marks} == {(PROVIDER_ID, "hpc-users"), (PROVIDER_ID, "gpu")}


def test_it_sends_pkce_and_the_configured_scopes(client, idp):
    start = client.post(f"/accounts/oidc/{PROVIDER_ID}/login/")
    location = start["Location"]
    assert location.startswith(idp.issuer + "/auth?")
    assert "code_challenge_method=S256" in location
    assert "groups" in location  # the scope list; its order is not fixed


def test_b_a_later_login_drops_removed_groups_and_keeps_hand_made_ones(client, idp):
    sign_in(client, "alice", "alice-pw")
    alice = signed_in_user(client)
    lab = Group.objects.create(name="lab-admins")
    alice.groups.add(lab)
    idp.set_user("alice", groups=["hpc-users"])
    client.logout()

    result = sign_in(client, "alice", "alice-pw")

    assert result.console.status_code == 302
    assert signed_in_user(client) == alice
    assert group_names(alice) == {"hpc-users", "lab-admins"}
    assert Group.objects.filter(name="gpu", idp__provider=PROVIDER_ID).exists()  # kept for others
    event = AuditEvent.objects.filter(action="auth.login", actor=alice).first()
    assert event.details["removed"] == ["gpu"]


def test_it_does_not_hijack_a_hand_made_group_with_the_same_name(client, idp):
    hand_made = Group.objects.create(name="gpu")

    sign_in(client, "alice", "alice-pw")

    alice = signed_in_user(client)
    assert group_names(alice) == {"hpc-users", f"gpu ({PROVIDER_ID})"}
    assert not IdpGroup.objects.filter(group=hand_made).exists()


def test_c_a_wrong_password_is_refused_by_the_idp_and_no_session_is_made(client, idp):
    result = sign_in(client, "alice", "not-the-password")

    assert result.console is None
    assert result.idp_page.status_code == 401
    assert "Invalid credentials" in result.idp_page.text
    assert signed_in_user(client) is None
    assert not get_user_model().objects.filter(email="alice@example.org").exists()


def test_d_a_deactivated_person_is_refused_and_audited(client, idp):
    sign_in(client, "alice", "alice-pw")
    alice = signed_in_user(client)
    client.logout()
    alice.is_active = False
    alice.deactivated_reason = "left the company"
    alice.save()

    result = sign_in(client, "alice", "alice-pw")

    assert result.console.status_code == 403
    assert b"Your console account is deactivated" in result.console.content
    assert signed_in_user(client) is None
    event = AuditEvent.objects.get(action="auth.login", outcome="denied")
    assert event.actor == alice
    assert event.reason == "deactivated"
    assert event.details["provider"] == PROVIDER_ID
    assert event.details["subject"] == "alice"


def test_a_refusal_by_the_idp_shows_its_reason(client, idp):
    result = sign_in(client, "mallory", "mallory-pw")

    assert result.console.status_code == 403
    page = result.console.content.decode()
    assert "Test IdP did not let you in" in page
    assert "mallory is not assigned to Clusterra" in page
    assert signed_in_user(client) is None
    event = AuditEvent.objects.get(action="auth.login")
    assert (event.outcome, event.reason) == ("denied", "idp_refused")
    assert event.details["idp_error"] == "access_denied"


def test_each_login_is_audited_without_tokens(client, idp):
    sign_in(client, "bob", "bob-pw")

    event = AuditEvent.objects.get(action="auth.login")
    assert event.outcome == "allowed"
    assert event.actor.email == "bob@example.org"
    assert event.details["method"] == "idp"
    assert event.details["groups"] == ["hpc-users"]
    assert "eyJ" not in str(event.details)  # no JWT of any kind


def test_it_hands_the_claims_to_the_posix_hook(client, idp, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "accounts.adapter._posix_on_login", lambda: lambda user, claims: calls.append((user, claims))
    )

    sign_in(client, "bob", "bob-pw")

    [(user, claims)] = calls
    assert user == signed_in_user(client)
    assert claims["sub"] == "bob"
    assert claims["preferred_username"] == "bob"
    assert claims["groups"] == ["hpc-users"]


def test_an_address_of_another_account_is_not_linked(client, idp):
    get_user_model().objects.create_user("alice-local", "alice@example.org", "pw-123456-local")

    result = sign_in(client, "alice", "alice-pw")

    assert result.console.status_code == 403
    assert b"belongs to another console account" in result.console.content
    assert not SocialAccount.objects.exists()
    assert AuditEvent.objects.get(action="auth.login").reason == "email_in_use"


def test_a_missing_provider_is_not_found(client, idp):
    assert client.post("/accounts/oidc/nosuch/login/").status_code == 404
    assert client.get("/accounts/oidc/nosuch/login/callback/?code=x&state=y").status_code == 404


def test_an_entra_tenant_is_matched_by_oid_and_its_upn(client, idp, settings):
    settings.SOCIALACCOUNT_PROVIDERS = oidc.socialaccount_providers(
        idp.environ(PRESET="entra", SCOPES="openid profile email groups")
    )
    idp.set_user("bob", oid="0b6c2f4e-object-id", email=None, preferred_username="bob@contoso.example")

    result = sign_in(client, "bob", "bob-pw")

    assert result.console.status_code == 302
    bob = signed_in_user(client)
    assert bob.email == "bob@contoso.example"
    account = SocialAccount.objects.get(user=bob)
    assert account.uid == "0b6c2f4e-object-id"
    assert set(account.extra_data) == {"id_token"}  # Entra's userinfo is never asked
    assert group_names(bob) == {"hpc-users"}


def test_a_pinned_domain_refuses_accounts_from_elsewhere(client, idp, settings):
    settings.SOCIALACCOUNT_PROVIDERS = oidc.socialaccount_providers(idp.environ(HOSTED_DOMAIN="example.org"))

    result = sign_in(client, "alice", "alice-pw")

    assert result.console.status_code == 403
    assert b"not from your organisation" in result.console.content
    assert signed_in_user(client) is None
    assert AuditEvent.objects.get(action="auth.login").reason == "wrong_domain"
