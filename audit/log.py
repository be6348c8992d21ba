"""The one way every app writes to the audit log."""

from __future__ import annotations

import logging
from typing import Any

from audit.models import AuditEvent

logger = logging.getLogger("clusterra.audit")

# Keys whose values must never be stored or logged, wherever they appear in details.
SECRET_KEYS = {"token", "password", "secret", "key", "authorization", "jwt"}


def record(
    action: str,
    *,
    actor: Any = None,
    cluster: Any = None,
    target: str = "",
    outcome: str = AuditEvent.Outcome.ALLOWED,
    reason: str = "",
    message: str = "",
    request: Any = None,
    details: dict | None = None,
) -> AuditEvent:
    """Write one event. `cluster` may be a Cluster or a slug; `request` gives address and request id."""
    actor_obj = actor if getattr(actor, "pk", None) is not None else None
    actor_name = actor.get_username() if actor_obj is not None else (actor or "")
    event = AuditEvent(
        actor=actor_obj,
        actor_name=str(actor_name)[:150],
        action=action,
        cluster=getattr(cluster, "slug", cluster or ""),
        target=str(target)[:255],
        outcome=outcome,
        reason=reason,
        message=message,
        client_address=_client_address(request),
        request_id=_request_id(request),
        details=_scrub(details or {}),
    )
    event.save()
    logger.info(
        "%s %s %s %s %s", event.actor_name or "-", action, event.cluster or "-", outcome, reason or ""
    )
    return event


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("[redacted]" if k.lower() in SECRET_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _client_address(request: Any) -> str | None:
    if request is None:
        return None
    meta = getattr(request, "META", None)
    if meta is not None:
        return meta.get("REMOTE_ADDR") or None
    scope = getattr(request, "scope", request if isinstance(request, dict) else {})
    client = scope.get("client") if isinstance(scope, dict) else None
    return client[0] if client else None


def _request_id(request: Any) -> str:
    meta = getattr(request, "META", None) or {}
    return str(meta.get("HTTP_X_REQUEST_ID", ""))[:64]
