"""The sign-in page: IdP buttons, local passwords only where enabled, no local signup, one source per IdP."""

from __future__ import annotations

import pytest
from allauth.socialaccount.models import SocialApp
from django.contrib.auth import get_user_model
from django.test import RequestFactory

from accounts import oidc
from accounts.adapter import AccountAdapter, SocialAccountAdapter
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db

ENVIRONMENT = {
    "CLUSTERRA_OIDC_PROVIDERS": "okta entra",
    "CLUSTERRA_OIDC_OKTA_ISSUER": "https://example.okta.com",
    "CLUSTERRA_OIDC_OKTA_CLIENT_ID": "okta-client",
    "CLUSTERRA_OIDC_OKTA_CLIENT_SECRET": "okta-secret",
    "CLUSTERRA_OIDC_ENTRA_TENANT": "contoso.onmicrosoft.com",
    "CLUSTERRA_OIDC_ENTRA_CLIENT_ID": "entra-client",
    "CLUSTERRA_OIDC_ENTRA_CLIENT_SECRET": "entra-secret",
}


@pytest.fixture
def two_idps(settings):
    settings.SOCIALACCOUNT_PROVIDERS = oidc.socialaccount_providers(ENVIRONMENT)


@pytest.fixture
def staff(db):
    return get_user_model().objects.create_user("root", "root@example.org", "pw-root-123456", is_staff=True)


def test_it_lists_each_configured_idp_as_a_button(client, two_idps):
    page = client.get("/accounts/login/?next=/clusters/").content.decode()

    assert "Sign in with Okta" in page
    assert "Sign in with Microsoft" in page
    assert 'method="post" action="/accounts/oidc/okta/login/?next=%2Fclusters%2F"' in page


def test_it_has_no_password_form_by_default(client, two_idps, staff, settings):
    settings.SOCIALACCOUNT_ONLY = True

    page = client.get("/accounts/login/").content.decode()
    posted = client.post("/accounts/login/", {"login": "root", "password": "pw-root-123456"})

    assert 'type="password"' not in page
    assert 'href="/admin/login/"' in page
    assert posted.status_code == 403
    assert "_auth_user_id" not in client.session


def test_it_says_when_no_sign_in_method_is_set_up(client, settings):
    settings.SOCIALACCOUNT_PROVIDERS = oidc.socialaccount_providers({})
    settings.SOCIALACCOUNT_ONLY = True

    assert b"No sign-in method is set up yet" in client.get("/accounts/login/").content


def test_staff_can_always_use_the_admin_login(client, staff, settings):
    settings.SOCIALACCOUNT_ONLY = True

    response = client.post(
        "/admin/login/", {"username": "root", "password": "pw-root-123456", "next": "/admin/"}
    )

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)
    assert AuditEvent.objects.get(action="auth.login").details == {"method": "admin"}


def test_local_passwords_work_where_enabled_and_are_audited(client, two_idps, staff, settings):
    settings.SOCIALACCOUNT_ONLY = False

    page = client.get("/accounts/login/").content.decode()
    wrong = client.post("/accounts/login/", {"login": "root", "password": "nope"})
    right = client.post("/accounts/login/", {"login": "root", "password": "pw-root-123456"})

    assert 'type="password"' in page
    assert "Sign in with Okta" in page
    assert wrong.status_code == 200
    assert right.status_code == 302
    assert client.session["_auth_user_id"] == str(staff.pk)
    denied, allowed = AuditEvent.objects.filter(action="auth.login").order_by("id")
    assert (denied.outcome, denied.reason, denied.actor_name) == ("denied", "bad_credentials", "root")
    assert (allowed.outcome, allowed.actor, allowed.details) == ("allowed", staff, {"method": "password"})


def test_a_deactivated_person_cannot_use_a_local_password(client, staff, settings):
    settings.SOCIALACCOUNT_ONLY = False
    staff.is_active = False
    staff.save()

    response = client.post("/accounts/login/", {"login": "root", "password": "pw-root-123456"})

    assert response.status_code == 403
    assert b"Your console account is deactivated" in response.content
    assert "_auth_user_id" not in client.session
    [event] = AuditEvent.objects.filter(action="auth.login")
    assert (event.outcome, event.reason, event.actor) == ("denied", "deactivated", staff)


def test_local_signup_is_always_closed(client):
    request = RequestFactory().get("/")

    assert AccountAdapter().is_open_for_signup(request) is False
    response = client.post(
        "/accounts/signup/", {"username": "eve", "password1": "pw-eve-123456", "password2": "pw-eve-123456"}
    )
    assert response.status_code in {200, 404}  # the closed page, or no route when only IdPs sign in
    assert not get_user_model().objects.filter(username="eve").exists()


def test_an_idp_from_the_environment_hides_an_admin_row_with_the_same_id(client, two_idps):
    SocialApp.objects.create(
        provider="openid_connect", provider_id="okta", name="Okta (admin)", client_id="x"
    )
    SocialApp.objects.create(
        provider="openid_connect",
        provider_id="lab",
        name="Lab IdP",
        client_id="lab",
        secret="s",
        settings={"server_url": "https://lab.example.org", "preset": "entra"},
    )
    request = RequestFactory().get("/")
    adapter = SocialAccountAdapter()

    okta = adapter.get_app(request, "okta")
    lab = adapter.get_app(request, "lab")

    assert (okta.pk, okta.name) == (None, "Okta")
    assert lab.settings["oauth_pkce_enabled"] is True
    assert lab.settings["uid_field"] == "oid"
    page = client.get("/accounts/login/").content.decode()
    assert "Okta (admin)" not in page
    assert "Sign in with Lab IdP" in page
