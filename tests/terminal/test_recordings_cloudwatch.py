"""Recordings streamed to CloudWatch Logs (moto) as the session goes, alongside the local asciicast file.

A real shell behind the Session Manager agent emulator types the output; the log stream read back
with GetLogEvents must rebuild the same recording as the local file the replay page reads. moto does
not enforce PutLogEvents' size limits, so every batch the console sends is checked against them here.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from moto import mock_aws

from accounts import posix
from accounts.models import User
from clusterra_site.asgi import application
from clusters import headnode
from clusters.models import Cluster
from terminal import recording, transports
from terminal.models import TerminalPolicy, TerminalSession
from terminal.recording import Recorder
from terminal.transports.ssm import SessionManager, login_command
from tests.support.fake_headnode import FakeHeadNode
from tests.support.ssm_agent import REGION, TARGET, TEST_CREDENTIALS, StubbedSsm
from tests.support.terminal_support import (
    end_all_terminals,
    grant_terminal,
    open_page,
    session_cookie,
    ssm_cluster,
)

GROUP = "/clusterra/recordings"
BIG = 300_000


@pytest.fixture
def aws_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        logs = boto3.client("logs", region_name=REGION)
        logs.create_log_group(logGroupName=GROUP)
        yield logs


@pytest.fixture
def batches(monkeypatch) -> list[list[dict[str, Any]]]:
    """Every PutLogEvents batch as sent (moto still answers it)."""
    sent: list[list[dict[str, Any]]] = []
    real = recording._logs_client

    def spied() -> Any:
        client = real()
        client.meta.events.register(
            "provide-client-params.logs.PutLogEvents",
            lambda params, **_: sent.append(list(params["logEvents"])),
        )
        return client

    monkeypatch.setattr(recording, "_logs_client", spied)
    return sent


def within_limits(sent: list[list[dict[str, Any]]]) -> None:
    """Each batch as CloudWatch Logs accepts it: sizes, counts, and time order across the whole stream."""
    times = [event["timestamp"] for batch in sent for event in batch]
    assert times == sorted(times)
    for batch in sent:
        assert 0 < len(batch) <= 10_000
        assert sum(len(event["message"].encode()) + 26 for event in batch) <= 1_048_576
        assert max(len(event["message"].encode()) + 26 for event in batch) <= 256 * 1024


def stream_messages(logs: Any, stream: str) -> list[str]:
    messages, token = [], None
    while True:
        extra = {"nextToken": token} if token else {}
        page = logs.get_log_events(logGroupName=GROUP, logStreamName=stream, startFromHead=True, **extra)
        messages += [event["message"] for event in page["events"]]
        if page["nextForwardToken"] == token or not page["events"]:
            return messages
        token = page["nextForwardToken"]


def cast_of(lines: list[str]) -> tuple[dict[str, Any], str, list[str]]:
    """(header, all output joined, resizes) of asciicast v2 lines."""
    header = json.loads(lines[0])
    assert header["version"] == 2
    events = [json.loads(line) for line in lines[1:]]
    output = "".join(data for _, kind, data in events if kind == "o")
    return header, output, [data for _, kind, data in events if kind == "r"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("_no_connection_left_open")
@pytest.mark.asyncio
async def test_a_terminal_streams_its_recording_to_cloudwatch_as_it_goes(
    agent, settings, tmp_path, monkeypatch, aws_env, batches
):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60300, 60399
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path / "recordings")
    settings.CLUSTERRA_RECORDINGS_S3 = ""
    settings.CLUSTERRA_RECORDINGS_CLOUDWATCH = GROUP
    monkeypatch.setattr(headnode, "run", FakeHeadNode())
    cluster, person, name = await sync_to_async(_recorded_cluster_and_person)()
    session = agent.new_session()
    stub = StubbedSsm(
        agent, session, command=login_command(name), reason=f"Clusterra terminal of alice as {name}"
    )
    monkeypatch.setattr(
        transports, "ssm_manager", lambda _: SessionManager(stub.client, credentials=TEST_CREDENTIALS)
    )
    logs = aws_env
    cookie = await session_cookie(person)
    try:
        async with open_page(application, cluster.slug, cookie=cookie, cols=90, rows=25) as (_, _, page):
            assert (await page.connected())["recorded"] is True
            row = await sync_to_async(TerminalSession.objects.get)(person=person)
            stream = f"{cluster.slug}/{row.pk}"
            await page.run("echo streamed-$((6*7))", "streamed-42")
            # Streamed while the shell is still open: the line is in CloudWatch within a few seconds.
            typed = time.monotonic()
            while not any("streamed-42" in m for m in await asyncio.to_thread(stream_messages, logs, stream)):
                assert time.monotonic() - typed < 5, "the output did not reach CloudWatch while the shell ran"
                await asyncio.sleep(0.1)
            seen_after = time.monotonic() - typed
            await page.control({"type": "resize", "cols": 120, "rows": 40})
            await page.run("echo π-ünïcödé", "π-ünïcödé")
            await page.run(
                f"head -c {BIG} /dev/zero | tr '\\0' x; echo; echo big-done", "big-done", timeout=20
            )
            await page.type(b"exit\r")
            await page.until_control("closed")
    finally:
        await end_all_terminals()

    row = await sync_to_async(TerminalSession.objects.get)(person=person)
    local = Path(row.recording).read_text(encoding="utf-8").splitlines()
    remote = await asyncio.to_thread(stream_messages, logs, stream)
    local_header, local_output, local_resizes = cast_of(local)
    header, output, resizes = cast_of(remote)
    assert header == local_header
    assert (header["width"], header["height"]) == (90, 25)
    assert output == local_output
    assert resizes == local_resizes == ["120x40"]
    assert "\r\nstreamed-42\r\n" in output
    assert "\r\nπ-ünïcödé\r\n" in output
    assert "x" * BIG in output
    assert len(output.encode()) == row.bytes_out
    within_limits(batches)
    assert sum(len(batch) for batch in batches) == len(remote)
    # The replay page still reads the local file.
    admin = await sync_to_async(User.objects.create_superuser)("root-admin", "root@corp.example", "pw")
    client = Client()
    await sync_to_async(client.force_login)(admin)
    answer = await sync_to_async(client.get)(f"/terminal/sessions/{row.pk}/recording.cast")
    assert answer.status_code == 200
    body = b"".join(answer.streaming_content) if answer.streaming else answer.content
    assert body.decode().splitlines() == local
    print(
        f"recordings to CloudWatch: stream {stream} rebuilt the recording exactly ({len(remote)} events, "
        f"{len(output.encode())} bytes of output, {len(batches)} PutLogEvents batches within limits); "
        f"output seen in CloudWatch {seen_after:.1f} s after it was typed"
    )


def _recorded_cluster_and_person() -> tuple[Cluster, User, str]:
    cluster = ssm_cluster(instance_id=TARGET, region=REGION)
    TerminalPolicy.objects.create(cluster=cluster, record=True)
    person = User.objects.create(username="alice", email="alice@corp.example")
    grant_terminal(person, cluster)
    return cluster, person, posix.ensure_account(person).username


def test_output_beyond_the_limits_is_split_and_batched_in_order(settings, tmp_path, aws_env, batches):
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path)
    logs = aws_env
    recorder = Recorder(
        "c/1.cast", cols=80, rows=24, title="t", cloudwatch_group=GROUP, cloudwatch_stream="c/1"
    )
    # One chunk of 700,000 characters, control characters among them (6 bytes each in JSON), then
    # 12,000 small ones: over one event's size, over one batch's bytes and over one batch's count.
    huge = ("\x1b[1mé€𝄞\r\n" * 100_000)[:700_000]
    recorder.output(huge.encode())
    small = [f"line {n}\r\n" for n in range(12_000)]
    for text in small:
        recorder.output(text.encode())
    location = recorder.finish()

    remote = stream_messages(logs, "c/1")
    _, output, _ = cast_of(remote)
    _, local_output, _ = cast_of(Path(location).read_text(encoding="utf-8").splitlines())
    assert output == local_output == huge + "".join(small)
    within_limits(batches)
    assert len(batches) >= 3
    assert recorder.cloudwatch is not None
    assert recorder.cloudwatch.failed == ""
    assert recorder.cloudwatch.sent_events == len(remote)
    # The header, the small lines, and `huge` (1.5 MB as JSON) cut into pieces that each fit.
    assert len(remote) - 1 - len(small) >= 6


def test_an_unreachable_cloudwatch_still_records_the_file(settings, tmp_path, monkeypatch, caplog):
    settings.CLUSTERRA_RECORDINGS_DIR = str(tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():  # no log group: CreateLogStream is refused
        recorder = Recorder(
            "c/2.cast", cols=80, rows=24, title="t", cloudwatch_group="/missing", cloudwatch_stream="c/2"
        )
        recorder.output(b"still recorded\r\n")
        location = recorder.finish()
    assert recorder.cloudwatch is None
    assert "not streamed to CloudWatch Logs /missing" in caplog.text
    assert cast_of(Path(location).read_text().splitlines())[1] == "still recorded\r\n"
