"""The environment → allauth settings mapping, and the Okta / Entra / Google presets (no network)."""

from __future__ import annotations

import pytest

from accounts import oidc
from accounts.oidc import ProviderConfigError


def apps(environ: dict[str, str]) -> list[dict]:
    providers = oidc.socialaccount_providers(environ)
    assert providers["openid_connect"]["OAUTH_PKCE_ENABLED"] is True
    return providers["openid_connect"]["APPS"]


def only_app(environ: dict[str, str]) -> dict:
    [app] = apps(environ)
    return app


OKTA = {
    "CLUSTERRA_OIDC_PROVIDERS": "okta",
    "CLUSTERRA_OIDC_OKTA_ISSUER": "https://example.okta.com/oauth2/default/",
    "CLUSTERRA_OIDC_OKTA_CLIENT_ID": "0oa1okta",
    "CLUSTERRA_OIDC_OKTA_CLIENT_SECRET": "okta-secret",
}
ENTRA = {
    "CLUSTERRA_OIDC_PROVIDERS": "entra",
    "CLUSTERRA_OIDC_ENTRA_TENANT": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "CLUSTERRA_OIDC_ENTRA_CLIENT_ID": "entra-app",
    "CLUSTERRA_OIDC_ENTRA_CLIENT_SECRET": "entra-secret",
}
GOOGLE = {
    "CLUSTERRA_OIDC_PROVIDERS": "google",
    "CLUSTERRA_OIDC_GOOGLE_CLIENT_ID": "1234.apps.googleusercontent.com",
    "CLUSTERRA_OIDC_GOOGLE_CLIENT_SECRET": "google-secret",
    "CLUSTERRA_OIDC_GOOGLE_HOSTED_DOMAIN": "Example.ORG",
}


def test_no_providers_means_no_apps():
    assert apps({}) == []


def test_okta_asks_for_groups_with_pkce():
    app = only_app(OKTA)
    assert app["provider_id"] == "okta"
    assert app["name"] == "Okta"
    assert (app["client_id"], app["secret"]) == ("0oa1okta", "okta-secret")
    settings = app["settings"]
    assert settings["server_url"] == "https://example.okta.com/oauth2/default"
    assert settings["scope"] == ["openid", "profile", "email", "groups"]
    assert settings["oauth_pkce_enabled"] is True
    assert settings["uid_field"] == "sub"
    assert settings["groups_claim"] == "groups"
    assert settings["fetch_userinfo"] is True


def test_entra_identifies_people_by_oid_and_reads_only_the_id_token():
    settings = only_app(ENTRA)["settings"]
    assert (
        settings["server_url"]
        == "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
    )
    assert settings["uid_field"] == "oid"
    assert settings["fetch_userinfo"] is False
    assert settings["groups_claim"] == "groups"
    assert settings["email_claims"] == ["email", "preferred_username", "upn"]
    assert settings["oauth_pkce_enabled"] is True
    assert only_app(ENTRA)["name"] == "Microsoft"


@pytest.mark.parametrize("tenant", ["common", "organizations", "Consumers"])
def test_entra_refuses_shared_tenants_whose_issuer_cannot_be_checked(tenant):
    with pytest.raises(ProviderConfigError, match="tenant id"):
        apps({**ENTRA, "CLUSTERRA_OIDC_ENTRA_TENANT": tenant})


def test_google_pins_the_workspace_domain_and_syncs_no_groups():
    settings = only_app(GOOGLE)["settings"]
    assert settings["server_url"] == "https://accounts.google.com"
    assert settings["hosted_domain"] == "example.org"
    assert settings["auth_params"] == {"hd": "example.org"}
    assert settings["groups_claim"] == ""
    assert settings["uid_field"] == "sub"


def test_google_needs_a_domain_or_an_explicit_star():
    environ = {k: v for k, v in GOOGLE.items() if not k.endswith("HOSTED_DOMAIN")}
    with pytest.raises(ProviderConfigError, match="HOSTED_DOMAIN is required"):
        apps(environ)
    settings = only_app({**environ, "CLUSTERRA_OIDC_GOOGLE_HOSTED_DOMAIN": "*"})["settings"]
    assert "auth_params" not in settings


def test_a_generic_provider_uses_the_preset_it_names():
    environ = {
        "CLUSTERRA_OIDC_PROVIDERS": "corp-sso",
        "CLUSTERRA_OIDC_CORP_SSO_PRESET": "entra",
        "CLUSTERRA_OIDC_CORP_SSO_ISSUER": "https://login.microsoftonline.com/tenant-id/v2.0",
        "CLUSTERRA_OIDC_CORP_SSO_CLIENT_ID": "app",
        "CLUSTERRA_OIDC_CORP_SSO_CLIENT_SECRET": "s",
        "CLUSTERRA_OIDC_CORP_SSO_NAME": "Contoso",
        "CLUSTERRA_OIDC_CORP_SSO_GROUPS_CLAIM": "roles",
    }
    app = only_app(environ)
    assert (app["provider_id"], app["name"]) == ("corp-sso", "Contoso")
    assert app["settings"]["uid_field"] == "oid"
    assert app["settings"]["groups_claim"] == "roles"


def test_any_issuer_works_with_the_generic_preset(tmp_path):
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    environ = {
        "CLUSTERRA_OIDC_PROVIDERS": "keycloak, okta",
        "CLUSTERRA_OIDC_KEYCLOAK_ISSUER": "https://sso.example.org/realms/hpc",
        "CLUSTERRA_OIDC_KEYCLOAK_CLIENT_ID": "clusterra",
        "CLUSTERRA_OIDC_KEYCLOAK_CLIENT_SECRET_FILE": str(secret_file),
        "CLUSTERRA_OIDC_KEYCLOAK_SCOPES": "openid,email,profile,groups",
        "CLUSTERRA_OIDC_KEYCLOAK_GROUPS_CLAIM": "",
        **{k: v for k, v in OKTA.items() if k != "CLUSTERRA_OIDC_PROVIDERS"},
    }
    keycloak, okta = apps(environ)
    assert okta["provider_id"] == "okta"
    assert keycloak["name"] == "Single sign-on"
    assert keycloak["secret"] == "from-a-file"
    assert keycloak["settings"]["preset"] == "generic"
    assert keycloak["settings"]["scope"] == ["openid", "email", "profile", "groups"]
    assert keycloak["settings"]["groups_claim"] == ""  # set but empty: group sync off


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"CLUSTERRA_OIDC_PROVIDERS": "Okta"}, "not a valid provider id"),
        ({"CLUSTERRA_OIDC_PROVIDERS": "okta okta"}, "more than once"),
        ({"CLUSTERRA_OIDC_OKTA_ISSUER": ""}, "CLUSTERRA_OIDC_OKTA_ISSUER is required"),
        ({"CLUSTERRA_OIDC_OKTA_ISSUER": "http://example.okta.com"}, "must be an https:// URL"),
        ({"CLUSTERRA_OIDC_OKTA_CLIENT_ID": ""}, "CLIENT_ID is required"),
        ({"CLUSTERRA_OIDC_OKTA_CLIENT_SECRET": ""}, "CLIENT_SECRET"),
        ({"CLUSTERRA_OIDC_OKTA_CLIENT_SECRET_FILE": "/nonexistent"}, "not both"),
        ({"CLUSTERRA_OIDC_OKTA_PRESET": "auth0"}, "is not one of"),
        ({"CLUSTERRA_OIDC_OKTA_TENANT": "x"}, "only applies to the entra preset"),
        ({"CLUSTERRA_OIDC_OKTA_SCOPES": "profile email"}, "must include openid"),
    ],
)
def test_it_names_the_variable_that_is_wrong(change, message):
    with pytest.raises(ProviderConfigError, match=message):
        apps({**OKTA, **change})


def test_a_loopback_issuer_may_use_plain_http():
    app = only_app({**OKTA, "CLUSTERRA_OIDC_OKTA_ISSUER": "http://127.0.0.1:9000"})
    assert app["settings"]["server_url"] == "http://127.0.0.1:9000"


def test_an_admin_made_app_gets_its_preset_defaults_without_losing_its_own():
    settings = oidc.complete_settings(
        {"preset": "entra", "server_url": "https://x/v2.0", "fetch_userinfo": True}
    )
    assert settings["uid_field"] == "oid"
    assert settings["fetch_userinfo"] is True
    assert settings["oauth_pkce_enabled"] is True
    assert oidc.complete_settings({})["preset"] == "generic"


def test_claims_prefer_the_signed_id_token():
    extra_data = {
        "userinfo": {"sub": "a", "email": "a@example.org", "groups": ["stale"]},
        "id_token": {"sub": "a", "groups": ["fresh"]},
    }
    assert oidc.claims_of(extra_data) == {"sub": "a", "email": "a@example.org", "groups": ["fresh"]}
    assert oidc.claims_of({"sub": "flat"}) == {"sub": "flat"}


def test_entra_email_falls_back_to_the_user_principal_name():
    names = oidc.PRESETS["entra"].email_claims
    assert oidc.email_from_claims({"preferred_username": "Ada@Contoso.com "}, names) == "Ada@Contoso.com"
    assert oidc.email_from_claims({"email": "ada@contoso.com", "upn": "x@y"}, names) == "ada@contoso.com"
    assert oidc.email_from_claims({"preferred_username": "ada"}, names) == ""
