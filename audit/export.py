"""The audit log as JSON lines, one event per line, for SIEMs, archives and S3 buckets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import IO, Any
from urllib.parse import urlsplit

from django.db.models import QuerySet
from django.utils import timezone

from audit.models import AuditEvent

RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """An aware datetime from '7d' / '12h' / '30m' / '2w' ago, an ISO date (its midnight) or an ISO datetime.

    Dates and datetimes without an offset are read in the console's time zone.
    """
    now = now or timezone.now()
    value = text.strip()
    match = RELATIVE.match(value.lower())
    if match:
        return now - timedelta(**{UNITS[match[2]]: int(match[1])})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration such as 7d, 12h or 30m nor an ISO date such as 2026-11-01"
        ) from None
    if len(value) == 10:  # a bare date: from its first moment
        moment = datetime.combine(date.fromisoformat(value), time())
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def events_between(since: datetime, until: datetime) -> QuerySet[AuditEvent]:
    """Events with since <= time < until, oldest first, so consecutive exports neither overlap nor miss."""
    return AuditEvent.objects.filter(time__gte=since, time__lt=until).order_by("time", "id")


def as_json(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.pk,
        "time": event.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "actor": event.actor_name,
        "actor_id": event.actor_id,
        "action": event.action,
        "cluster": event.cluster,
        "target": event.target,
        "outcome": event.outcome,
        "reason": event.reason,
        "message": event.message,
        "client_address": event.client_address,
        "request_id": event.request_id,
        "details": event.details,
    }


def write_lines(events: Iterable[AuditEvent], out: IO[str]) -> int:
    """Write one JSON object per line; return how many."""
    count = 0
    for event in events:
        out.write(json.dumps(as_json(event), ensure_ascii=False, sort_keys=True, default=str))
        out.write("\n")
        count += 1
    return count


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, prefix) from s3://bucket/prefix; the prefix may be empty."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{url!r} is not an S3 location such as s3://my-bucket/clusterra/audit")
    return parts.netloc, parts.path.strip("/")


def object_key(prefix: str, since: datetime, until: datetime) -> str:
    """One object per export, named by its interval in UTC, so exports sort and never overwrite each other."""

    def stamp(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    name = f"audit-{stamp(since)}-{stamp(until)}.jsonl"
    return f"{prefix}/{name}" if prefix else name
