"""One way to write a date, a duration, a figure and a state: the filters every page uses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.template import Context, Template

from ui.templatetags.ui import duration, figure, when


def test_a_date_is_minutes_and_a_named_zone(settings):
    at = datetime(2026, 12, 7, 14, 5, 59, tzinfo=UTC)
    assert when(at) == "2026-12-07 14:05 UTC"
    settings.TIME_ZONE = "Europe/Berlin"
    assert when(at) == "2026-12-07 15:05 CET"
    assert when(None) == "—"
    rendered = Template("{% load ui %}{% when at %}").render(Context({"at": at}))
    assert rendered == '<time datetime="2026-12-07T14:05:59+00:00">2026-12-07 15:05 CET</time>'


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (5, "0:00:05"),
        (3723, "1:02:03"),
        (2 * 86400 + 3 * 3600 + 4 * 60 + 5, "2 d 03:04:05"),
        (timedelta(minutes=90), "1:30:00"),
        (59.9, "0:00:59"),
        (None, "—"),
        (-1, "—"),
        ("5", "—"),
    ],
)
def test_a_duration_is_hours_minutes_seconds(value, said):
    assert duration(value) == said


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (0.0016666666666666668, "0.00167"),
        (12.345, "12.3"),
        (1.0, "1"),
        (0, "0"),
        (1234.6, "1,235"),
        (Decimal("0.10"), "0.1"),
        (99.96, "100"),
        (float("nan"), "—"),
        (None, "—"),
    ],
)
def test_a_figure_has_three_significant_digits(value, said):
    assert figure(value) == said


def test_every_state_gets_a_badge_of_its_own_class():
    page = Template("{% load ui %}{% state_badge s %}")
    assert page.render(Context({"s": "OUT_OF_MEMORY"})) == (
        '<span class="badge state-out_of_memory">OUT_OF_MEMORY</span>'
    )
    assert page.render(Context({"s": "<b>"})) == '<span class="badge state-b">&lt;B&gt;</span>'
    assert page.render(Context({"s": None})) == '<span class="badge state-unknown">UNKNOWN</span>'
