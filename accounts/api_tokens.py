"""Personal API tokens for /v1 and the CLI: issued once, stored as a SHA-256 digest, expiring, revocable."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiToken, User
from audit.log import record
from prepared import Prepared, fields_of, instance

PREFIX = "ct_"
MAX_DAYS = 3650
# The visible part kept next to the digest, so a person can tell their tokens apart.
VISIBLE_CHARS = 12
# Writing last_used on every request would turn each API read into a database write and a commit.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


# Every /v1 request looks its token up, with its owner: the query is compiled once (prepared).
_TOKEN_FIELDS = fields_of(ApiToken)
_USER_FIELDS = fields_of(User)
_BY_DIGEST = Prepared(
    lambda digest: ApiToken.objects.filter(digest=digest).values(
        *_TOKEN_FIELDS, *(f"user__{name}" for name in _USER_FIELDS)
    ),
    str,
)


def _by_digest(token_digest: str) -> ApiToken | None:
    """The token with this digest (unique) and its owner, in one query."""
    rows = _BY_DIGEST.rows(token_digest)
    if not rows:
        return None
    row = rows[0]
    token = instance(ApiToken, {name: row[name] for name in _TOKEN_FIELDS})
    token.user = instance(User, {name: row[f"user__{name}"] for name in _USER_FIELDS})
    return token


def default_days() -> int:
    return settings.CLUSTERRA_API_TOKEN_DAYS


def issue(user: User, *, name: str = "", days: int | None = None, by: Any = None) -> tuple[ApiToken, str]:
    """A new token for `user`: the row, and the raw token, which is shown once and stored nowhere."""
    days = default_days() if days is None else days
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"A token lives between 1 and {MAX_DAYS} days, not {days}.")
    if not user.is_active:
        raise ValueError(f"{user.get_username()} is deactivated; no token is issued.")
    # 32 random bytes: guessing is hopeless, so a fast unsalted hash is the right digest.
    raw = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=(name or "API token")[:100],
        prefix=raw[:VISIBLE_CHARS],
        digest=digest(raw),
        expires=timezone.now() + timedelta(days=days),
    )
    record(
        "api_token.issued",
        actor=by if by is not None else user,
        target=user.get_username(),
        message=f"API token {token.prefix}… ({token.name}) issued, valid for {days} days.",
        details={"token_id": token.pk, "days": days},
    )
    return token, raw


def authenticate(raw: str | None, *, request: Any = None) -> User | None:
    """The active person a raw token belongs to, or None (unknown, revoked, expired or deactivated)."""
    if not raw or not raw.startswith(PREFIX) or len(raw) > 200:
        return None
    token = _by_digest(digest(raw))
    if token is None:
        # Not audited: anyone can send garbage, and the log would fill with it.
        return None
    now = timezone.now()
    refusal = ""
    if token.revoked is not None:
        refusal = "revoked"
    elif token.expires <= now:
        refusal = "expired"
    elif not token.user.is_active:
        refusal = "inactive"
    if refusal:
        # A real token that no longer works is worth knowing about (e.g. a departed person's script).
        record(
            "api_token.refused",
            actor=token.user,
            target=token.user.get_username(),
            outcome="denied",
            reason=refusal,
            message=f"API token {token.prefix}… was refused: {refusal}.",
            request=request,
            details={"token_id": token.pk},
        )
        return None
    if token.last_used is None or token.last_used < now - LAST_USED_RESOLUTION:
        # Only when it is due (at most once a minute per token), so most requests write nothing; the
        # filter keeps concurrent requests from writing it twice.
        ApiToken.objects.filter(pk=token.pk).filter(
            Q(last_used__isnull=True) | Q(last_used__lt=now - LAST_USED_RESOLUTION)
        ).update(last_used=now)
    return token.user


def revoke(token: ApiToken, *, by: Any = None, reason: str = "") -> bool:
    """Revoke one token; False if it already was."""
    changed = ApiToken.objects.filter(pk=token.pk, revoked__isnull=True).update(revoked=timezone.now())
    token.refresh_from_db(fields=["revoked"])
    if changed:
        record(
            "api_token.revoked",
            actor=by if by is not None else token.user,
            target=token.user.get_username(),
            reason=reason,
            message=f"API token {token.prefix}… ({token.name}) revoked.",
            details={"token_id": token.pk},
        )
    return bool(changed)


def revoke_all(user: User, *, by: Any = None, reason: str = "") -> int:
    """Revoke every live token of `user`; the number revoked."""
    return sum(revoke(t, by=by, reason=reason) for t in user.api_tokens.filter(revoked__isnull=True))
