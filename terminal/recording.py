"""Terminal recordings in asciicast v2: written as output flows, kept in the data folder or sent to S3."""

from __future__ import annotations

import codecs
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-asciicast"
# Recordings hold whatever crossed the screen: readable by the console's own user only.
DIR_MODE = 0o700
FILE_MODE = 0o600


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
    ) -> None:
        self.relative = relative
        self.directory = directory or Path(settings.CLUSTERRA_RECORDINGS_DIR)
        self.path = self.directory / relative
        self.s3_url = s3_url
        self._started = time.monotonic()
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
        self._file.write(json.dumps([elapsed, kind, data], ensure_ascii=False) + "\n")


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


def _s3_client():
    import boto3

    # A fresh session per call: boto3's default session is not thread-safe, and these calls are rare.
    return boto3.session.Session().client("s3")
