"""`{% load ui %}`: one way to write a date, a duration, a figure and a job state, on every page.

The browser draws live values with ui/static/ui/format.js, which writes exactly the same strings.
"""

from __future__ import annotations

import functools
import math
import re
from datetime import datetime, timedelta
from decimal import Decimal

from django import template
from django.forms import BaseForm, BoundField
from django.utils import timezone
from django.utils.html import conditional_escape, format_html, format_html_join

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
@functools.lru_cache(maxsize=256)
def state_badge(state: str | None) -> str:
    """A Slurm state as a coloured badge; the class is the state itself (`state-out_of_memory`).

    Remembered per state (Slurm has a few dozen, and a SafeString is immutable): a job list draws one a row.
    """
    shown = (state or "UNKNOWN").upper()
    css = _STATE_CLASS.sub("", shown.lower()) or "unknown"
    return format_html('<span class="badge state-{}">{}</span>', css, shown)


_BACKTICKED = re.compile(r"`([^`\n]+)`")


@register.filter
def inline_code(text: str | None) -> str:
    """Markdown's `code` spans in a text written for the API document, drawn as <code>; the rest escaped."""
    if not text:
        return ""
    # split() with one group alternates: plain text, code, plain text, ...
    pieces = _BACKTICKED.split(str(text))
    drawn = (
        format_html("<code>{}</code>", p) if i % 2 else conditional_escape(p) for i, p in enumerate(pieces)
    )
    return format_html_join("", "{}", ((piece,) for piece in drawn))


@register.simple_tag
def described_by(field: BoundField, hide_help: bool = False) -> str:
    """The ids that describe an input: its help (when shown) and its error, as ui/field.html names them."""
    ids = [field.field.widget.attrs.get("aria-describedby", "")]
    if field.auto_id and field.help_text and not hide_help:
        ids.append(f"{field.auto_id}-help")
    if field.auto_id and field.errors:
        ids.append(f"{field.auto_id}-error")
    return " ".join(filter(None, ids))


@register.simple_tag
def field_widget(field: BoundField, hide_help: bool = False) -> str:
    """A field's input, described by its help and its error.

    Django adds aria-invalid="true" itself when the field has errors, and an aria-describedby of its own
    (with ids of its own templates) only when none is given: ours is always given when there is one.
    """
    ids = described_by(field, hide_help)
    return field.as_widget(attrs={"aria-describedby": ids} if ids else None)


@register.filter
def top_errors(form: BaseForm) -> list[str]:
    """A form's own errors, and its hidden fields' (a hidden field has nowhere else to show one)."""
    said = list(form.non_field_errors())
    for field in form.hidden_fields():
        said.extend(f"{field.label}: {error}" for error in field.errors)
    return said
