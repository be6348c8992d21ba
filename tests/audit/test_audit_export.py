"""`manage.py export_audit`: JSON lines for an interval, to a file, standard output or S3 (moto)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO

import boto3
import pytest
from django.core.management import CommandError, call_command
from moto import mock_aws

from audit import export
from audit.log import record
from audit.models import AuditEvent

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def events(db, monkeypatch):
    """Three events: ten days ago, two days ago and an hour ago; the clock then stays at NOW."""
    clock = {"now": NOW}
    monkeypatch.setattr("django.utils.timezone.now", lambda: clock["now"])
    written = []
    for age, action in [
        (timedelta(days=10), "old.one"),
        (timedelta(days=2), "mid.one"),
        (timedelta(hours=1), "new.one"),
    ]:
        clock["now"] = NOW - age
        written.append(
            record(action, actor="jane", cluster="c1", outcome="denied", reason="no_grant", details={"a": 1})
        )
    clock["now"] = NOW
    return written


def read_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_it_writes_the_last_week_to_a_file_as_json_lines(events, tmp_path):
    out = tmp_path / "audit.jsonl"
    stdout = StringIO()
    call_command("export_audit", "--since", "7d", "--output", str(out), stdout=stdout)
    lines = read_lines(out.read_text())
    assert [e["action"] for e in lines] == ["mid.one", "new.one"]
    assert lines[0] == {
        "id": events[1].pk,
        "time": "2026-11-18T12:00:00Z",
        "actor": "jane",
        "actor_id": None,
        "action": "mid.one",
        "cluster": "c1",
        "target": "",
        "outcome": "denied",
        "reason": "no_grant",
        "message": "",
        "client_address": None,
        "request_id": "",
        "details": {"a": 1},
    }
    assert "Exported 2 audit events" in stdout.getvalue()
    exported = AuditEvent.objects.get(action="audit.exported")
    assert exported.details == {
        "count": 2,
        "since": "2026-11-13T12:00:00+00:00",
        "until": "2026-11-20T12:00:00+00:00",
    }


def test_since_and_until_take_iso_dates_and_the_interval_is_half_open(events, tmp_path):
    out = tmp_path / "audit.jsonl"
    call_command(
        "export_audit", "--since", "2026-11-10", "--until", "2026-11-18T12:00:00+00:00", "--output", str(out)
    )
    assert [e["action"] for e in read_lines(out.read_text())] == ["old.one"]


def test_it_writes_to_standard_output(events, capsys):
    call_command("export_audit", "--since", "3h", "--output", "-")
    assert [e["action"] for e in read_lines(capsys.readouterr().out)] == ["new.one"]


@pytest.fixture
def aws(monkeypatch):
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="corp-audit")
        yield s3


def test_it_uploads_one_object_per_export_to_s3(events, aws):
    stdout = StringIO()
    call_command("export_audit", "--since", "30d", "--s3", "s3://corp-audit/clusterra/audit/", stdout=stdout)
    [obj] = aws.list_objects_v2(Bucket="corp-audit")["Contents"]
    assert obj["Key"] == "clusterra/audit/audit-20261021T120000Z-20261120T120000Z.jsonl"
    body = aws.get_object(Bucket="corp-audit", Key=obj["Key"])
    assert body["ContentType"] == "application/x-ndjson"
    lines = read_lines(body["Body"].read().decode())
    assert [e["action"] for e in lines] == ["old.one", "mid.one", "new.one"]
    assert f"to s3://corp-audit/{obj['Key']}" in stdout.getvalue()


def test_a_missing_bucket_is_a_clear_error(events, aws):
    with pytest.raises(CommandError, match="Cannot upload to s3://nope/audit-"):
        call_command("export_audit", "--since", "1d", "--s3", "s3://nope")
    assert not AuditEvent.objects.filter(action="audit.exported").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday", "--output", "-"], "neither a duration"),
        (["--since", "1d", "--until", "2d", "--output", "-"], "must be before --until"),
        (["--since", "1d", "--s3", "https://bucket/x"], "is not an S3 location"),
    ],
)
def test_it_explains_bad_arguments(events, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("export_audit", *args)


def test_it_needs_a_destination(db):
    with pytest.raises(CommandError, match="one of the arguments --output --s3 is required"):
        call_command("export_audit", "--since", "1d")


def test_parse_moment_reads_durations_dates_and_datetimes():
    assert export.parse_moment("90m", NOW) == NOW - timedelta(minutes=90)
    assert export.parse_moment("2w", NOW) == NOW - timedelta(weeks=2)
    assert export.parse_moment("2026-11-01", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert export.parse_moment("2026-11-01T08:30:00+02:00", NOW) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
