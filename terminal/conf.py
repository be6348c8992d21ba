"""The terminal's settings: Django settings when the site names them, else the environment, else a default."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

# Long enough for a working day at the terminal, short enough that a forgotten tab does not live for weeks.
DEFAULT_MAX_SESSION_MINUTES = 12 * 60
# How long a shell waits for its browser to come back after the connection dropped (laptop lid, Wi-Fi).
DEFAULT_RESUME_SECONDS = 120


def _value(name: str, default: str) -> str:
    # settings.py may name these later; until then (and for tests) the environment decides.
    found = getattr(settings, name, None)
    if found is not None:
        return str(found)
    return os.environ.get(name, default)


def _positive_int(name: str, default: int) -> int:
    raw = _value(name, str(default)).strip()
    try:
        number = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if number < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return number


def max_session_minutes() -> int:
    """CLUSTERRA_TERMINAL_MAX_MINUTES: the longest a terminal may stay open, keystrokes or not."""
    return _positive_int("CLUSTERRA_TERMINAL_MAX_MINUTES", DEFAULT_MAX_SESSION_MINUTES)


def resume_seconds() -> int:
    """CLUSTERRA_TERMINAL_RESUME_SECONDS: how long a shell survives without a browser attached."""
    return _positive_int("CLUSTERRA_TERMINAL_RESUME_SECONDS", DEFAULT_RESUME_SECONDS)


def recordings_dir() -> Path:
    """CLUSTERRA_RECORDINGS_DIR: where recordings are written (and spooled before an S3 upload)."""
    raw = _value("CLUSTERRA_RECORDINGS_DIR", "")
    return Path(raw) if raw else Path(settings.DATA_DIR) / "recordings"


def recordings_s3() -> str:
    """CLUSTERRA_RECORDINGS_S3: s3://bucket/prefix to keep recordings in S3 instead of the data folder."""
    return _value("CLUSTERRA_RECORDINGS_S3", "").strip()
