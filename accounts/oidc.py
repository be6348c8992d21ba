"""Sign-in providers: presets for the usual IdPs, read from the environment into allauth's settings."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Every IdP goes through allauth's generic OpenID Connect provider; each one is an "app" of it.
PROVIDER = "openid_connect"

# The id appears in URLs (/accounts/oidc/<id>/login/) and in environment variable names.
PROVIDER_ID = re.compile(r"^[a-z][a-z0-9-]{0,39}$")

# Entra's multi-tenant endpoints publish an issuer template, so the `iss` check of every login would fail.
ENTRA_SHARED_TENANTS = {"common", "organizations", "consumers"}

# Keys of an app's settings that allauth ignores and accounts.adapter reads.
PRESET_KEY = "preset"
GROUPS_CLAIM_KEY = "groups_claim"
EMAIL_CLAIMS_KEY = "email_claims"
HOSTED_DOMAIN_KEY = "hosted_domain"
# Minutes between two asks of the IdP whether it still accepts a person (accounts.idp_check); 0: never.
CHECK_MINUTES_KEY = "check_minutes"
DEFAULT_CHECK_MINUTES = 15
ANY_DOMAIN = "*"


class ProviderConfigError(ValueError):
    """A CLUSTERRA_OIDC_* variable cannot be understood; the message names it (manage.py prints it)."""


@dataclass(frozen=True)
class Preset:
    """What differs between IdPs once the organisation's issuer and client are known."""

    label: str
    issuer: str = ""
    scope: tuple[str, ...] = ("openid", "profile", "email")
    subject_claim: str = "sub"
    email_claims: tuple[str, ...] = ("email",)
    groups_claim: str = "groups"
    fetch_userinfo: bool = True
    needs_hosted_domain: bool = False


PRESETS: dict[str, Preset] = {
    # Okta releases the groups claim for the `groups` scope (configured on custom authorization servers).
    "okta": Preset(label="Okta", scope=("openid", "profile", "email", "groups")),
    # Entra's `sub` differs per application; `oid` is the person. Its userinfo has neither `oid` nor
    # groups, so everything is read from the ID token. `email` is optional there: fall back to the UPN.
    "entra": Preset(
        label="Microsoft",
        subject_claim="oid",
        email_claims=("email", "preferred_username", "upn"),
        fetch_userinfo=False,
    ),
    # Google has no groups claim, and any Google account can sign in unless the domain is pinned.
    "google": Preset(
        label="Google",
        issuer="https://accounts.google.com",
        groups_claim="",
        needs_hosted_domain=True,
    ),
    "generic": Preset(label="Single sign-on"),
}


def env_prefix(provider_id: str) -> str:
    return "CLUSTERRA_OIDC_" + provider_id.upper().replace("-", "_") + "_"


def provider_ids(environ: Mapping[str, str]) -> list[str]:
    """The ids listed in CLUSTERRA_OIDC_PROVIDERS, in order, checked."""
    raw = environ.get("CLUSTERRA_OIDC_PROVIDERS", "")
    ids = [word for word in raw.replace(",", " ").split() if word]
    for provider_id in ids:
        if not PROVIDER_ID.match(provider_id):
            raise ProviderConfigError(
                f"CLUSTERRA_OIDC_PROVIDERS: {provider_id!r} is not a valid provider id "
                "(lower-case letters, digits and '-', starting with a letter)"
            )
    duplicates = sorted({p for p in ids if ids.count(p) > 1})
    if duplicates:
        raise ProviderConfigError(f"CLUSTERRA_OIDC_PROVIDERS names {', '.join(duplicates)} more than once")
    return ids


def complete_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """An app's settings with its preset's defaults filled in; what is already set wins.

    The same function serves apps from the environment and SocialApp rows made in the
    admin, so an admin-made Entra app only needs {"preset": "entra", "server_url": ...}.
    """
    done = dict(settings)
    preset_name = done.setdefault(PRESET_KEY, "generic")
    preset = PRESETS.get(preset_name, PRESETS["generic"])
    if preset.issuer:
        done.setdefault("server_url", preset.issuer)
    done.setdefault("scope", list(preset.scope))
    done.setdefault("uid_field", preset.subject_claim)
    done.setdefault("fetch_userinfo", preset.fetch_userinfo)
    done.setdefault("oauth_pkce_enabled", True)
    done.setdefault(GROUPS_CLAIM_KEY, preset.groups_claim)
    done.setdefault(EMAIL_CLAIMS_KEY, list(preset.email_claims))
    done.setdefault(CHECK_MINUTES_KEY, DEFAULT_CHECK_MINUTES)
    domain = done.get(HOSTED_DOMAIN_KEY)
    if domain and domain != ANY_DOMAIN:
        # Google's account chooser then offers only accounts of that domain; the adapter still
        # checks the `hd` claim, since a parameter in the browser's URL can be edited.
        done["auth_params"] = {"hd": domain, **done.get("auth_params", {})}
    return done


def app_from_environment(provider_id: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """One entry of SOCIALACCOUNT_PROVIDERS["openid_connect"]["APPS"], from CLUSTERRA_OIDC_<ID>_*."""
    prefix = env_prefix(provider_id)

    def get(name: str) -> str | None:
        value = environ.get(prefix + name)
        return value.strip() if value is not None else None

    preset_name = get("PRESET") or (provider_id if provider_id in PRESETS else "generic")
    if preset_name not in PRESETS:
        raise ProviderConfigError(
            f"{prefix}PRESET={preset_name!r} is not one of {', '.join(sorted(PRESETS))}"
        )
    preset = PRESETS[preset_name]

    issuer = get("ISSUER") or ""
    tenant = get("TENANT") or ""
    if tenant and preset_name != "entra":
        raise ProviderConfigError(f"{prefix}TENANT only applies to the entra preset")
    if tenant and not issuer:
        if tenant.lower() in ENTRA_SHARED_TENANTS:
            raise ProviderConfigError(
                f"{prefix}TENANT={tenant!r} cannot be checked: use your organisation's tenant id"
            )
        issuer = f"https://login.microsoftonline.com/{tenant}/v2.0"
    issuer = (issuer or preset.issuer).rstrip("/")
    if not issuer:
        what = f"{prefix}ISSUER" + (f" or {prefix}TENANT" if preset_name == "entra" else "")
        raise ProviderConfigError(f"{what} is required for provider {provider_id!r}")
    _check_issuer(prefix + "ISSUER", issuer)

    client_id = get("CLIENT_ID")
    if not client_id:
        raise ProviderConfigError(f"{prefix}CLIENT_ID is required for provider {provider_id!r}")
    secret = _secret(prefix, get("CLIENT_SECRET"), get("CLIENT_SECRET_FILE"), provider_id)

    settings: dict[str, Any] = {PRESET_KEY: preset_name, "server_url": issuer}
    scopes = get("SCOPES")
    if scopes:
        settings["scope"] = scopes.replace(",", " ").split()
        if "openid" not in settings["scope"]:
            raise ProviderConfigError(f"{prefix}SCOPES must include openid")
    groups_claim = get("GROUPS_CLAIM")
    if groups_claim is not None:
        settings[GROUPS_CLAIM_KEY] = groups_claim
    minutes = get("CHECK_MINUTES")
    if minutes is not None:
        if not minutes.isdigit():
            raise ProviderConfigError(
                f"{prefix}CHECK_MINUTES must be a whole number of minutes (0: never), not {minutes!r}"
            )
        settings[CHECK_MINUTES_KEY] = int(minutes)
    domain = (get("HOSTED_DOMAIN") or "").lower()
    if domain:
        settings[HOSTED_DOMAIN_KEY] = domain
    elif preset.needs_hosted_domain:
        raise ProviderConfigError(
            f"{prefix}HOSTED_DOMAIN is required for provider {provider_id!r}: your Google Workspace "
            f"domain, or {ANY_DOMAIN} to let any Google account sign in"
        )

    return {
        "provider_id": provider_id,
        "name": get("NAME") or preset.label,
        "client_id": client_id,
        "secret": secret,
        "settings": complete_settings(settings),
    }


def socialaccount_providers(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """SOCIALACCOUNT_PROVIDERS for settings.py: PKCE for every OIDC app, env-defined apps listed."""
    environ = os.environ if environ is None else environ
    apps = [app_from_environment(p, environ) for p in provider_ids(environ)]
    # OAUTH_PKCE_ENABLED also covers apps added in the admin that do not say otherwise.
    return {PROVIDER: {"OAUTH_PKCE_ENABLED": True, "APPS": apps}}


def claims_of(extra_data: Mapping[str, Any]) -> dict[str, Any]:
    """The claims allauth stored for an account: userinfo, overlaid by the ID token.

    The ID token wins because its signature was checked, and Entra sends groups only there.
    Accounts stored by allauth before 65.11 hold one flat dict of claims.
    """
    if "id_token" not in extra_data and "userinfo" not in extra_data:
        return dict(extra_data)
    merged: dict[str, Any] = {}
    for part in ("userinfo", "id_token"):
        value = extra_data.get(part)
        if isinstance(value, Mapping):
            merged.update(value)
    return merged


def email_from_claims(claims: Mapping[str, Any], names: list[str] | tuple[str, ...]) -> str:
    """The first claim in `names` that looks like an address ("" when none does)."""
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and "@" in value.strip():
            return value.strip()
    return ""


def _check_issuer(variable: str, issuer: str) -> None:
    parts = urlsplit(issuer)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return  # a test IdP on this machine
    raise ProviderConfigError(f"{variable}={issuer!r} must be an https:// URL")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret(prefix: str, value: str | None, file: str | None, provider_id: str) -> str:
    if value and file:
        raise ProviderConfigError(f"set {prefix}CLIENT_SECRET or {prefix}CLIENT_SECRET_FILE, not both")
    if file:
        try:
            value = Path(file).read_text().strip()
        except OSError as e:
            raise ProviderConfigError(
                f"{prefix}CLIENT_SECRET_FILE={file!r} cannot be read: {e.strerror}"
            ) from None
    if not value:
        raise ProviderConfigError(
            f"{prefix}CLIENT_SECRET (or _FILE) is required for provider {provider_id!r}"
        )
    return value
