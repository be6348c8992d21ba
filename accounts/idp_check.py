"""For IdPs that push nothing: ask them now and then whether they still accept a person.

At each sign-in the IdP's refresh token is kept, encrypted (IdpRefresh). Every `check_minutes`
(per IdP, 15 by default, 0 = never) the sync loop spends it at the IdP's token endpoint:

- the IdP answers with new tokens: the person's groups are read again (userinfo, with the new
  access token) and synced, as at a sign-in; a rotated refresh token replaces the old one;
- it answers `invalid_grant`: it no longer accepts them (disabled, deleted, access revoked), and
  they are offboarded at once (accounts.offboarding), as the IdP would have said over SCIM;
- it cannot be reached, or answers anything else: nothing is decided; the next round asks again.

A refresh token that simply expired also gives `invalid_grant`; IdPs keep them for weeks or months
while they are used, and this check uses them every few minutes, so expiry means a person who has
not signed in for that long, whom offboarding suits too.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import requests
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import MultipleObjectsReturned
from django.test import RequestFactory
from django.utils import timezone

from accounts import groups, offboarding, oidc
from accounts.models import IdpRefresh, User
from audit.log import record

log = logging.getLogger("clusterra.accounts.idp_check")

TIMEOUT = 10


@dataclass
class CheckReport:
    checked: int = 0
    offboarded: int = 0
    unanswered: int = 0


def _cipher() -> Fernet:
    key = hashlib.sha256(f"clusterra idp refresh\n{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def remember(user: User, provider_id: str, refresh_token: str) -> None:
    """Keep the refresh token of this sign-in (encrypted), checked from now on."""
    sealed = _cipher().encrypt(refresh_token.encode()).decode()
    IdpRefresh.objects.update_or_create(
        user=user, provider_id=provider_id, defaults={"sealed": sealed, "checked": timezone.now()}
    )


def check_due(*, force: bool = False) -> CheckReport:
    """Ask the IdPs about everyone whose check is due (every kept token with `force`)."""
    report = CheckReport()
    now = timezone.now()
    rows = IdpRefresh.objects.filter(user__is_active=True).select_related("user")
    for row in rows:
        minutes = _settings(row.provider_id).get(oidc.CHECK_MINUTES_KEY, oidc.DEFAULT_CHECK_MINUTES)
        if not minutes and not force:
            continue
        if not force and now - row.checked < timedelta(minutes=int(minutes)):
            continue
        report.checked += 1
        verdict = _ask(row)
        if verdict == "refused":
            report.offboarded += 1
        elif verdict == "unanswered":
            report.unanswered += 1
    return report


def _settings(provider_id: str) -> dict[str, Any]:
    for app in settings.SOCIALACCOUNT_PROVIDERS.get("openid_connect", {}).get("APPS", []):
        if app.get("provider_id") == provider_id:
            return app.get("settings", {})
    found = SocialApp.objects.filter(provider_id=provider_id).first()
    return oidc.complete_settings(found.settings or {}) if found else {}


def _ask(row: IdpRefresh) -> str:
    person = row.user
    try:
        refresh = _cipher().decrypt(row.sealed.encode()).decode()
    except InvalidToken:
        # The secret key changed: the token cannot be read or spent; the next sign-in brings a new one.
        row.delete()
        return "unanswered"
    try:
        adapter = OpenIDConnectOAuth2Adapter(RequestFactory().get("/"), row.provider_id)
        config = adapter.openid_config
        app = adapter.get_provider().app
        answer = requests.post(
            config["token_endpoint"],
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": app.client_id,
                "client_secret": app.secret,
            },
            timeout=TIMEOUT,
        )
    except (
        SocialApp.DoesNotExist,
        MultipleObjectsReturned,
        requests.RequestException,
        KeyError,
        ValueError,
    ) as e:
        log.warning("cannot ask %s about %s: %s", row.provider_id, person.pk, e)
        return "unanswered"
    error = _error_of(answer)
    if answer.status_code == 400 and error == "invalid_grant":
        row.delete()
        offboarding.on_idp_refusal(person, "it no longer accepts this person (the periodic check)")
        return "refused"
    if answer.status_code != 200:
        log.warning(
            "%s answered the check of %s with %s %s", row.provider_id, person.pk, answer.status_code, error
        )
        return "unanswered"
    tokens = answer.json()
    if tokens.get("refresh_token"):
        row.sealed = _cipher().encrypt(tokens["refresh_token"].encode()).decode()
    row.checked = timezone.now()
    row.save(update_fields=["sealed", "checked"])
    _resync_groups(person, row.provider_id, config, tokens.get("access_token", ""))
    record(
        "auth.idp_check",
        actor=person,
        target=person.get_username(),
        message=f"{row.provider_id} still accepts them.",
    )
    return "accepted"


def _error_of(answer: requests.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return ""
    return str(body.get("error", "")) if isinstance(body, dict) else ""


def _resync_groups(person: User, provider_id: str, config: dict[str, Any], access_token: str) -> None:
    claim = _settings(provider_id).get(oidc.GROUPS_CLAIM_KEY, "groups")
    endpoint = config.get("userinfo_endpoint")
    if not (claim and endpoint and access_token):
        return
    try:
        answer = requests.get(endpoint, headers={"Authorization": f"Bearer {access_token}"}, timeout=TIMEOUT)
        claims = answer.json() if answer.status_code == 200 else None
    except (requests.RequestException, ValueError):
        claims = None
    if isinstance(claims, dict):
        groups.sync(person, provider_id, groups.claim_values(claims, claim))
