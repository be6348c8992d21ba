"""ui/static/ui/format.js writes what the server's `when` and `duration` filters write, run in node."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.utils import timezone

from tests.conftest import REPO, require
from ui.templatetags.ui import duration, when

FORMAT_JS = REPO / "ui" / "static" / "ui" / "format.js"

# The script asks node for each case and prints the answers, one JSON list.
RUN = """
require(process.argv[1]);
const cases = JSON.parse(process.argv[2]);
const f = globalThis.clusterraFormat;
const said = cases.map(([kind, value, zone]) => (kind === "when" ? f.when(value, zone) : f.duration(value)));
console.log(JSON.stringify(said));
"""

DURATIONS = [5, 3723, 2 * 86400 + 3 * 3600 + 4 * 60 + 5, 5400, 59.9, 0, 86400, None, -1, "5", True]
INSTANTS = [
    datetime(2026, 12, 7, 14, 5, 59, tzinfo=UTC),
    datetime(2026, 7, 1, 23, 59, 0, tzinfo=UTC),  # summer time where there is one; a new day further east
    datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
]
ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "America/Sao_Paulo",  # a zone tzdata names by its offset: -03
    "Asia/Kathmandu",  # and one whose offset has minutes: +0545
]


def in_node(cases: list[tuple]) -> list[str]:
    node = shutil.which("node")
    require(node is not None, "node is missing (apt-get install nodejs)")
    done = subprocess.run(
        [node, "-e", RUN, str(FORMAT_JS), json.dumps(cases)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_duration_reads_the_same_in_the_browser():
    said = in_node([("duration", value, None) for value in DURATIONS])

    assert said == [duration(value) for value in DURATIONS]
    assert said[:3] == ["0:00:05", "1:02:03", "2 d 03:04:05"]  # the filter's own cases, as written there


def test_a_date_reads_the_same_in_the_browser_in_every_zone():
    cases = [("when", at.isoformat(), zone) for zone in ZONES for at in INSTANTS]
    said = in_node(cases)

    expected = []
    for zone in ZONES:
        with timezone.override(zone):
            expected.extend(when(at) for at in INSTANTS)
    assert said == expected
    assert said[0] == "2026-12-07 14:05 UTC"
    assert said[len(INSTANTS)] == "2026-12-07 15:05 CET"
    assert said[len(INSTANTS) + 1] == "2026-07-02 01:59 CEST"


def test_a_date_from_another_offset_is_shown_in_the_page_zone():
    # The JSON feeds may carry times with Slurm's offset; the page shows them in its own zone.
    at = datetime(2026, 12, 7, 16, 5, tzinfo=dt_timezone(timedelta(hours=2)))
    [said] = in_node([("when", at.isoformat(), "UTC")])
    assert said == when(at) == "2026-12-07 14:05 UTC"


@pytest.mark.parametrize("value", ["", "not a date", None, 12])
def test_no_date_is_a_dash(value):
    assert in_node([("when", value, "UTC")]) == ["—"]
