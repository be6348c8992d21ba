"""Terminal recordings in asciicast v2: written as output flows, kept in the data folder or sent to S3.

With CLUSTERRA_RECORDINGS_CLOUDWATCH set they are also streamed, line by line as the session goes, to
a CloudWatch Logs stream `<cluster>/<session id>` in that group: one log event per asciicast line (the
header first), so the stream alone rebuilds the recording. The local file stays what the replay page
reads; CloudWatch is where an AWS account's own retention, search and alarms apply.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-asciicast"
# Recordings hold whatever crossed the screen: readable by the console's own user only.
DIR_MODE = 0o700
FILE_MODE = 0o600

# PutLogEvents' limits (CloudWatch Logs quotas): a batch holds at most 10,000 events and 1,048,576
# bytes, counted as each event's UTF-8 message plus 26 bytes; one event is at most 256 KB, so counted.
CLOUDWATCH_BATCH_BYTES = 1_048_576
CLOUDWATCH_BATCH_EVENTS = 10_000
CLOUDWATCH_EVENT_OVERHEAD = 26
CLOUDWATCH_EVENT_BYTES = 256 * 1024 - CLOUDWATCH_EVENT_OVERHEAD
# A batch goes out once a second, or as soon as this much is waiting.
CLOUDWATCH_SEND_EVERY = 1.0
CLOUDWATCH_SEND_AT = 64 * 1024
# More than this waiting (CloudWatch unreachable or slow) and the stream is given up; the file has it all.
CLOUDWATCH_BACKLOG = 16 * 1024 * 1024
CLOUDWATCH_ATTEMPTS = 3


class RecordingUnavailable(Exception):
    """A recording cannot be read back; the message says why."""


def relative_path(cluster_slug: str, session_id: int, posix_user: str, started: float) -> str:
    month = time.strftime("%Y/%m", time.gmtime(started))
    return f"{cluster_slug}/{month}/{session_id}-{posix_user}.cast"


def parse_s3(url: str) -> tuple[str, str]:
    """(bucket, prefix) of s3://bucket/prefix; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"CLUSTERRA_RECORDINGS_S3={url!r} is not of the form s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


class Recorder:
    """One terminal's asciicast v2 file, one event line per output chunk or resize.

    Keystrokes are never recorded: a password typed at a prompt with echo off would land in the file.
    """

    def __init__(
        self,
        relative: str,
        *,
        cols: int,
        rows: int,
        title: str,
        directory: Path | None = None,
        s3_url: str = "",
        cloudwatch_group: str = "",
        cloudwatch_stream: str = "",
    ) -> None:
        self.relative = relative
        self.directory = directory or Path(settings.CLUSTERRA_RECORDINGS_DIR)
        self.path = self.directory / relative
        self.s3_url = s3_url
        self._started = time.monotonic()
        self._wall_started = time.time()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        # Line-buffered: every event reaches the file as it happens, so a crash loses nothing written.
        self._file = os.fdopen(fd, "w", encoding="utf-8", buffering=1)
        header = {
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": int(time.time()),
            "title": title,
            "env": {"TERM": "xterm-256color"},
        }
        self._file.write(json.dumps(header) + "\n")
        self.cloudwatch: CloudWatchStream | None = None
        if cloudwatch_group and cloudwatch_stream:
            try:
                self.cloudwatch = CloudWatchStream(cloudwatch_group, cloudwatch_stream)
            except Exception as exc:
                # The session is still recorded (the file); an unreachable CloudWatch must not refuse shells.
                log.warning(
                    "recording %s: not streamed to CloudWatch Logs %s: %s", relative, cloudwatch_group, exc
                )
            else:
                self.cloudwatch.put(self._cloudwatch_time(0.0), json.dumps(header))

    @property
    def location(self) -> str:
        """Where the recording will be once finished: an s3:// URL, or the local path."""
        if self.s3_url:
            bucket, prefix = parse_s3(self.s3_url)
            key = f"{prefix}/{self.relative}" if prefix else self.relative
            return f"s3://{bucket}/{key}"
        return str(self.path)

    def output(self, data: bytes) -> None:
        # A multi-byte character split across two chunks is decoded whole in the second event.
        text = self._decoder.decode(data)
        if text:
            self._event("o", text)

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def finish(self) -> str:
        """Close the file and, for S3, upload it; returns where the recording lives now (blocking: S3)."""
        if self._file.closed:
            return self.location
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._event("o", tail)
        self._file.close()
        if self.cloudwatch is not None:
            self.cloudwatch.close()
        if not self.s3_url:
            return str(self.path)
        bucket, _ = parse_s3(self.s3_url)
        key = self.location[len(f"s3://{bucket}/") :]
        try:
            _s3_client().upload_file(str(self.path), bucket, key, ExtraArgs={"ContentType": CONTENT_TYPE})
        except Exception:
            # The recording is not lost: it stays in the spool folder and the row points there.
            log.exception(
                "recording %s: upload to %s failed; kept at %s", self.relative, self.location, self.path
            )
            return str(self.path)
        self.path.unlink(missing_ok=True)
        return self.location

    def _event(self, kind: str, data: str) -> None:
        elapsed = round(time.monotonic() - self._started, 6)
        line = json.dumps([elapsed, kind, data], ensure_ascii=False)
        self._file.write(line + "\n")
        if self.cloudwatch is not None:
            when = self._cloudwatch_time(elapsed)
            for piece in cloudwatch_lines(line, elapsed, kind, data):
                self.cloudwatch.put(when, piece)

    def _cloudwatch_time(self, elapsed: float) -> int:
        # Wall clock at the start plus the monotonic offset: never goes backwards within a stream.
        return int((self._wall_started + elapsed) * 1000)


def cloudwatch_lines(line: str, elapsed: float, kind: str, data: str) -> list[str]:
    """`line` as asciicast lines that each fit in one CloudWatch event (a big output is cut in pieces)."""
    if len(line.encode()) <= CLOUDWATCH_EVENT_BYTES:
        return [line]
    # A character takes at most 6 bytes in this JSON (a control character as \u001b), so pieces of
    # this many characters always fit, whatever they hold.
    step = (CLOUDWATCH_EVENT_BYTES - 64) // 6
    return [
        json.dumps([elapsed, kind, data[i : i + step]], ensure_ascii=False) for i in range(0, len(data), step)
    ]


class CloudWatchStream:
    """One log stream fed as a recording grows: batches sent in order from a thread of its own.

    `put` only queues (it runs on the event loop, between a shell's output and the page); the thread
    sends a batch every CLOUDWATCH_SEND_EVERY seconds, or sooner once CLOUDWATCH_SEND_AT bytes wait.
    """

    def __init__(self, group: str, stream: str, client: Any = None) -> None:
        self.group = group
        self.stream = stream
        self.sent_events = 0
        self.sent_batches = 0
        self.failed = ""
        self._client = client or _logs_client()
        self._pending: list[tuple[int, str, int]] = []
        self._pending_bytes = 0
        self._closed = False
        self._wake = threading.Condition()
        # Already there: a row id reused after a database restore, say; its events simply follow.
        with contextlib.suppress(self._client.exceptions.ResourceAlreadyExistsException):
            self._client.create_log_stream(logGroupName=group, logStreamName=stream)
        self._thread = threading.Thread(target=self._run, name=f"cloudwatch {stream}", daemon=True)
        self._thread.start()

    def put(self, timestamp: int, message: str) -> None:
        size = len(message.encode()) + CLOUDWATCH_EVENT_OVERHEAD
        with self._wake:
            if self._closed or self.failed:
                return
            if self._pending_bytes + size > CLOUDWATCH_BACKLOG:
                self._give_up(f"more than {CLOUDWATCH_BACKLOG} bytes were waiting to be sent")
                return
            self._pending.append((timestamp, message, size))
            self._pending_bytes += size
            if self._pending_bytes >= CLOUDWATCH_SEND_AT:
                self._wake.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Send what is left, then stop (blocking)."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._wake:
                if not self._closed and self._pending_bytes < CLOUDWATCH_SEND_AT:
                    self._wake.wait(CLOUDWATCH_SEND_EVERY)
                batch = self._take()
                over = self._closed and not self._pending
            if batch:
                self._send(batch)
            if over:
                return

    def _take(self) -> list[tuple[int, str, int]]:
        taken, size = 0, 0
        for _, _, event_size in self._pending:
            if taken == CLOUDWATCH_BATCH_EVENTS or size + event_size > CLOUDWATCH_BATCH_BYTES:
                break
            taken += 1
            size += event_size
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        self._pending_bytes -= size
        return batch

    def _send(self, batch: list[tuple[int, str, int]]) -> None:
        events = [{"timestamp": timestamp, "message": message} for timestamp, message, _ in batch]
        for attempt in range(1, CLOUDWATCH_ATTEMPTS + 1):
            if self.failed:
                return
            try:
                answer = self._client.put_log_events(
                    logGroupName=self.group, logStreamName=self.stream, logEvents=events
                )
            except Exception as exc:
                if attempt == CLOUDWATCH_ATTEMPTS:
                    with self._wake:
                        self._give_up(f"PutLogEvents failed {attempt} times, last: {exc}")
                    return
                time.sleep(attempt)
                continue
            rejected = answer.get("rejectedLogEventsInfo")
            if rejected:
                log.warning("recording stream %s: CloudWatch rejected some events: %s", self.stream, rejected)
            self.sent_events += len(events)
            self.sent_batches += 1
            return

    def _give_up(self, why: str) -> None:
        # Called with the lock held. Later events would leave a hole in the stream; the file keeps them all.
        self.failed = why
        self._pending, self._pending_bytes = [], 0
        log.warning("recording stream %s: no longer sent to CloudWatch Logs (%s)", self.stream, why)


def open_chunks(location: str) -> Iterator[bytes]:
    """The bytes of a finished (or still growing) recording, chunk by chunk."""
    if location.startswith("s3://"):
        bucket, key = parse_s3(location)
        try:
            body = _s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:
            raise RecordingUnavailable(f"The recording could not be fetched from {location}: {exc}") from exc
        return body.iter_chunks()
    path = Path(location).resolve()
    root = Path(settings.CLUSTERRA_RECORDINGS_DIR).resolve()
    if not path.is_relative_to(root):
        raise RecordingUnavailable(f"{location} is not in the recordings folder {root}.")
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise RecordingUnavailable(f"The recording {location} cannot be read ({exc.strerror}).") from exc
    return _file_chunks(handle)


def _file_chunks(handle) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(64 * 1024):
            yield chunk


def _logs_client() -> Any:
    import boto3

    # One per stream: boto3's default session is not thread-safe; the region is the environment's.
    return boto3.session.Session().client("logs")


def _s3_client():
    import boto3

    # A fresh session per call: boto3's default session is not thread-safe, and these calls are rare.
    return boto3.session.Session().client("s3")
