"""Where the CLI keeps the console's address and the API token: a 0600 JSON file, or the environment."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


def config_path() -> Path:
    """`$XDG_CONFIG_HOME/clusterra/config.json`, else `~/.config/clusterra/config.json`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "clusterra" / "config.json"


@dataclass(frozen=True)
class Settings:
    url: str
    token: str
    source: str  # where the token came from, for messages: "CLUSTERRA_TOKEN", the file, or ""


def load(url_flag: str | None = None) -> Settings:
    """The URL (flag, then CLUSTERRA_URL, then the file, then the default) and token (env, then file)."""
    stored: dict = {}
    path = config_path()
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict):
            stored = {}
    except (OSError, ValueError):
        stored = {}
    url = url_flag or os.environ.get("CLUSTERRA_URL") or stored.get("url") or DEFAULT_URL
    token = os.environ.get("CLUSTERRA_TOKEN", "")
    source = "CLUSTERRA_TOKEN" if token else ""
    # A stored token belongs to the console it was made on; never send it to another one.
    if not token and stored.get("token") and _same(stored.get("url", ""), url):
        token, source = stored["token"], str(path)
    return Settings(url.rstrip("/"), token, source)


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def save(url: str, token: str) -> Path:
    """Write the file readable by its owner only (the directory too), replacing what was there."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    temporary = path.with_suffix(".tmp")
    # Created 0600 from the first byte: the token is never readable by others, even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url.rstrip("/"), "token": token}, f, indent=1)
        f.write("\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def forget() -> bool:
    path = config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
