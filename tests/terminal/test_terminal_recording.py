"""Recorded terminals: asciicast v2 on disk or in S3 (moto), replayed only for administrators."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from moto import mock_aws

from accounts.models import User
from audit.models import AuditEvent
from clusterra_site.asgi import application
from terminal.models import TerminalPolicy, TerminalSession
from terminal.recording import Recorder
from tests.support.terminal_support import (
    local_cluster,
    open_page,
    session_cookie,
)

BUCKET = "clusterra-recordings"


# `linux_person` and `real_person` (tests/terminal/conftest.py) take this cluster: it records.
@pytest.fixture
def cluster():
    cluster = local_cluster()
    TerminalPolicy.objects.create(cluster=cluster, record=True)
    return cluster


@pytest.fixture
def recordings(settings, tmp_path) -> Path:
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path / "recordings")
    settings.CLUSTERRA_RECORDINGS_S3 = ""
    return tmp_path / "recordings"


def parse_cast(text: str) -> tuple[dict, list[list]]:
    """The header and events of an asciicast v2 file, checked against the format as it goes."""
    lines = text.splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2
    assert isinstance(header["width"], int)
    assert isinstance(header["height"], int)
    assert isinstance(header["timestamp"], int)
    events = [json.loads(line) for line in lines[1:]]
    times = [event[0] for event in events]
    for time, kind, data in events:
        assert isinstance(time, float | int)
        assert time >= 0
        assert kind in ("o", "r")
        assert isinstance(data, str)
    assert times == sorted(times)
    return header, events


async def record_a_session(person: User, slug: str) -> TerminalSession:
    cookie = await session_cookie(person)
    async with open_page(application, slug, cookie=cookie, cols=90, rows=25) as (_, _, page):
        # The page's notice follows this: the person is told their terminal is recorded.
        assert (await page.connected())["recorded"] is True
        await page.run("echo recorded-$((6*7))", "recorded-42")
        await page.control({"type": "resize", "cols": 120, "rows": 40})
        await page.run("echo π-ünïcödé", "π-ünïcödé")
        await page.type(b"exit\r")
        await page.until_control("closed")
    return await sync_to_async(TerminalSession.objects.get)(person=person)


@pytest.mark.root
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_a_recorded_cluster_writes_asciicast_v2_as_the_session_goes(real_person, cluster, recordings):
    row = await record_a_session(real_person, cluster.slug)

    path = Path(row.recording)
    assert path.is_relative_to(recordings)
    assert path.suffix == ".cast"
    assert path.stat().st_mode & 0o777 == 0o600
    header, events = parse_cast(path.read_text(encoding="utf-8"))
    assert (header["width"], header["height"]) == (90, 25)
    assert header["title"] == f"{row.posix_user} on This host"
    output = "".join(data for _, kind, data in events if kind == "o")
    assert re.search("[\r\n]recorded-42\r\n", output)
    assert re.search("[\r\n]π-ünïcödé\r\n", output)
    assert ["r", "120x40"] in [event[1:] for event in events]
    # Output only: the recording has the shell's echo of a command, never a separate keystroke stream.
    assert {kind for _, kind, _ in events} == {"o", "r"}
    assert len(output.encode()) == row.bytes_out


@pytest.mark.root
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_recordings_go_to_s3_when_configured(real_person, cluster, recordings, settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    settings.CLUSTERRA_RECORDINGS_S3 = f"s3://{BUCKET}/terminals/"
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

        row = await record_a_session(real_person, cluster.slug)

        assert row.recording.startswith(f"s3://{BUCKET}/terminals/{cluster.slug}/")
        key = row.recording[len(f"s3://{BUCKET}/") :]
        stored = s3.get_object(Bucket=BUCKET, Key=key)
        assert stored["ContentType"] == "application/x-asciicast"
        _, events = parse_cast(stored["Body"].read().decode())
        assert "recorded-42" in "".join(data for _, kind, data in events if kind == "o")
    # The local copy was only a spool.
    assert list(recordings.rglob("*.cast")) == []


def test_a_failed_upload_keeps_the_recording_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():  # no bucket: the upload fails
        recorder = Recorder(
            "c/2026/01/1-alice.cast", cols=80, rows=24, title="t", directory=tmp_path, s3_url="s3://missing/p"
        )
        recorder.output("é".encode()[:1])  # half a character: held until the rest arrives
        recorder.output("é".encode()[1:] + b"\r\n")
        where = recorder.finish()
    assert where == str(tmp_path / "c/2026/01/1-alice.cast")
    _, events = parse_cast(Path(where).read_text())
    assert [event[2] for event in events] == ["é\r\n"]


# --- replay, for administrators only ---------------------------------------------------------------


@pytest.fixture
def recorded_row(db, settings, tmp_path) -> TerminalSession:
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path)
    recorder = Recorder("here/2026/01/7-alice.cast", cols=80, rows=24, title="alice on This host")
    recorder.output(b"$ echo hi\r\nhi\r\n")
    return TerminalSession.objects.create(
        person_name="alice@corp.example",
        cluster_slug="here",
        posix_user="alice",
        transport="local",
        recording=recorder.finish(),
    )


def test_an_administrator_replays_a_recording_and_it_is_audited(recorded_row, admin_client):
    page = admin_client.get(f"/terminal/sessions/{recorded_row.pk}/replay/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-src="/terminal/sessions/{recorded_row.pk}/recording.cast"' in html
    assert "asciinema-player/asciinema-player.min.js" in html
    assert "<script>" not in html  # no inline script: CSP-friendly

    cast = admin_client.get(f"/terminal/sessions/{recorded_row.pk}/recording.cast")
    assert cast.status_code == 200
    assert cast["Content-Type"] == "application/x-asciicast"
    _, events = parse_cast(b"".join(cast.streaming_content).decode())
    assert events[0][1:] == ["o", "$ echo hi\r\nhi\r\n"]
    event = AuditEvent.objects.get(action="terminal.replayed")
    assert (event.actor_name, event.target) == ("admin", "alice")


def test_nobody_else_may_replay(recorded_row):
    person = User.objects.create(username="bob", email="bob@corp.example")
    client = Client()
    client.force_login(person)
    assert client.get(f"/terminal/sessions/{recorded_row.pk}/replay/").status_code == 403
    assert client.get(f"/terminal/sessions/{recorded_row.pk}/recording.cast").status_code == 403
    anonymous = Client().get(f"/terminal/sessions/{recorded_row.pk}/recording.cast")
    assert anonymous.status_code == 302


def test_the_admin_lists_sessions_read_only_with_a_replay_link(recorded_row, admin_client):
    listing = admin_client.get("/admin/terminal/terminalsession/")
    assert listing.status_code == 200
    assert f"/terminal/sessions/{recorded_row.pk}/replay/" in listing.content.decode()
    assert admin_client.get(f"/admin/terminal/terminalsession/{recorded_row.pk}/change/").status_code == 200
    assert admin_client.get("/admin/terminal/terminalsession/add/").status_code == 403
