"""OpenID Connect Back-Channel Logout 1.0: the IdP tells the console a person's session there ended.

The IdP POSTs a signed `logout_token` (a JWT) with no cookie; the console finds the sessions it
opened through that IdP session (`OidcSession`, written at sign-in) and ends them, and the
person's live terminals with them. A logout is not an offboarding: API tokens and the Linux
account stay; a person signed out at the IdP signs in again and goes on.

Validation follows the specification's order: the signature against the IdP's published keys
(RS/ES/PS algorithms only, never `none` or HMAC), `iss`, `aud` (our client id), `iat`, `exp`
(bounded by `iat` for IdPs that predate it), `jti` once only, the back-channel event, `sub`
or `sid`, and no `nonce`. Anything off is a 400 and ends nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from importlib import import_module
from typing import Any

import jwt
import requests
from allauth.socialaccount.models import SocialApp
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import MultipleObjectsReturned
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from accounts.models import OidcSession
from accounts.offboarding import NOTICE_TIMEOUT, WITHDRAWN_MESSAGE_TYPE, person_group
from audit.log import record

log = logging.getLogger("clusterra.accounts.backchannel")

EVENT = "http://schemas.openid.net/event/backchannel-logout"
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"]
LEEWAY = 30
# How old a token without `exp` may be (an IdP before the 2023 errata).
MAX_AGE = 300
# The IdP's keys, one client per JWKS address: PyJWT caches the set and refetches on an unknown kid.
_keys: dict[str, jwt.PyJWKClient] = {}


class InvalidLogoutToken(Exception):
    """The logout token cannot be trusted; the message says why (never the token)."""


@csrf_exempt
@require_POST
def logout(request: HttpRequest, provider_id: str) -> JsonResponse:
    token = request.POST.get("logout_token", "")
    try:
        claims = validate(request, provider_id, token)
    except InvalidLogoutToken as e:
        record(
            "auth.backchannel_logout",
            target=provider_id,
            outcome="denied",
            reason="invalid_token",
            message=f"A back-channel logout from {provider_id} was refused: {e}.",
            request=request,
        )
        return _answer(400, {"error": "invalid_request", "error_description": str(e)})
    ended = end_sessions(provider_id, claims)
    sid = claims.get("sid")
    record(
        "auth.backchannel_logout",
        target=provider_id,
        message=f"{provider_id} ended a session at the IdP: {ended} console session(s) ended.",
        request=request,
        details={
            "issuer": claims["iss"],
            "sid_hash": hashlib.sha256(sid.encode()).hexdigest()[:16] if sid else None,
            "sessions_ended": ended,
        },
    )
    return _answer(200, {})


def validate(request: HttpRequest, provider_id: str, token: str) -> dict[str, Any]:
    if not token:
        raise InvalidLogoutToken("no logout_token")
    try:
        adapter = OpenIDConnectOAuth2Adapter(request, provider_id)
        config = adapter.openid_config
        client_id = adapter.get_provider().app.client_id
    except (
        SocialApp.DoesNotExist,
        MultipleObjectsReturned,
        requests.RequestException,
        ValueError,
        KeyError,
    ) as e:
        raise InvalidLogoutToken(
            f"the identity provider {provider_id} is not known or not reachable ({e})"
        ) from None
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise InvalidLogoutToken("not a JWT") from None
    if header.get("typ") not in (None, "logout+jwt", "JWT"):
        raise InvalidLogoutToken(f"a {header.get('typ')} is not a logout token")
    try:
        key = _key_client(config["jwks_uri"]).get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=ALGORITHMS,
            audience=client_id,
            issuer=config["issuer"],
            leeway=LEEWAY,
            options={"require": ["iss", "aud", "iat", "jti"]},
        )
    except (jwt.PyJWTError, KeyError) as e:
        raise InvalidLogoutToken(f"its signature or claims do not hold ({e})") from None
    if "exp" not in claims and claims["iat"] < time.time() - MAX_AGE:
        raise InvalidLogoutToken("it has no exp and was issued too long ago")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(EVENT), dict):
        raise InvalidLogoutToken("it carries no back-channel logout event")
    if "nonce" in claims:
        raise InvalidLogoutToken("it carries a nonce, which a logout token never does")
    if not claims.get("sub") and not claims.get("sid"):
        raise InvalidLogoutToken("it names neither a session (sid) nor a person (sub)")
    remaining = int(claims.get("exp", claims["iat"] + MAX_AGE) - time.time()) + LEEWAY
    seen = hashlib.sha256(f"{claims['iss']}\n{claims['jti']}".encode()).hexdigest()
    if not cache.add(f"bcl:{seen}", 1, timeout=max(remaining, 60)):
        raise InvalidLogoutToken("this token was used already")
    return claims


def end_sessions(provider_id: str, claims: dict[str, Any]) -> int:
    """End the console sessions the token names (its sid, else every one of its sub); how many."""
    rows = OidcSession.objects.filter(provider_id=provider_id, issuer=claims["iss"])
    rows = rows.filter(sid=claims["sid"]) if claims.get("sid") else rows.filter(sub=claims["sub"])
    store = import_module(settings.SESSION_ENGINE).SessionStore
    people = set()
    count = 0
    for row in rows:
        store(session_key=row.session_key).delete()
        people.add(row.user_id)
        count += 1
    rows.delete()
    for person in people:
        _close_terminals(person)
    return count


def _close_terminals(person_id: int) -> None:
    # Opened with the session that just ended: they end with it, on every cluster.
    layer = get_channel_layer()
    if layer is None:
        return
    message = {
        "type": WITHDRAWN_MESSAGE_TYPE,
        "cluster": None,
        "reason": "You signed out at your identity provider.",
    }
    try:
        async_to_sync(_send)(layer, person_group(person_id), message)
    except Exception:  # the session is ended either way; a terminal open elsewhere ends at its next check
        log.exception("live terminals of %s not told of the logout", person_id)


async def _send(layer: Any, group: str, message: dict[str, Any]) -> None:
    async with asyncio.timeout(NOTICE_TIMEOUT):
        await layer.group_send(group, message)


def _key_client(jwks_uri: str) -> jwt.PyJWKClient:
    client = _keys.get(jwks_uri)
    if client is None:
        client = _keys[jwks_uri] = jwt.PyJWKClient(jwks_uri, lifespan=300, timeout=10)
    return client


def _answer(status: int, body: dict[str, Any]) -> JsonResponse:
    answer = JsonResponse(body, status=status)
    answer["Cache-Control"] = "no-store"
    return answer
