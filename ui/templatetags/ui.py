"""`{% load ui %}`: one way to write a date, a duration, a figure and a job state, on every page.

The browser draws live values with ui/static/ui/format.js, which writes exactly the same strings.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from decimal import Decimal

from django import template
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

# What a reader sees for "no value".
EMPTY = "—"


@register.filter
def when(value: datetime | None) -> str:
    """`2026-12-07 14:05 UTC`: minutes are enough for a person, and the zone is always named."""
    if not isinstance(value, datetime):
        return EMPTY
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return f"{local:%Y-%m-%d %H:%M} {local.tzname() or timezone.get_current_timezone_name()}"


@register.simple_tag(name="when")
def when_tag(value: datetime | None) -> str:
    """The same words in a `<time>` element, so the browser (and a screen reader) has the exact instant."""
    if not isinstance(value, datetime):
        return EMPTY
    return format_html('<time datetime="{}">{}</time>', value.isoformat(), when(value))


@register.filter
def duration(value: float | int | timedelta | None) -> str:
    """`0:00:05`, `1:02:03`, `2 d 03:04:05`: hours always, days only when there are some."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return EMPTY
    total = int(value)
    if total < 0:
        return EMPTY
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days} d {hours:02d}:{minutes:02d}:{seconds:02d}" if days else clock


@register.filter
def figure(value: float | int | Decimal | None) -> str:
    """A number as a person reads it: three significant digits below 100, whole and grouped above."""
    if value is None or isinstance(value, bool):
        return EMPTY
    try:
        number = float(value)
    except (TypeError, ValueError):
        return EMPTY
    if not math.isfinite(number):
        return EMPTY
    if number == 0:
        return "0"
    if abs(number) >= 100:
        return f"{round(number):,}"
    digits = 3 - math.floor(math.log10(abs(number))) - 1
    text = f"{round(number, digits):.{max(digits, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


_STATE_CLASS = re.compile(r"[^a-z0-9_]")


@register.simple_tag
def state_badge(state: str | None) -> str:
    """A Slurm state as a coloured badge; the class is the state itself (`state-out_of_memory`)."""
    shown = (state or "UNKNOWN").upper()
    css = _STATE_CLASS.sub("", shown.lower()) or "unknown"
    return format_html('<span class="badge state-{}">{}</span>', css, shown)
