"""Where the CLI keeps the console's address, the API token and the default cluster: a 0600 JSON file."""

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
    cluster: str = ""  # the default cluster's id (`clusterra config set cluster`), or ""


class OtherConsole(Exception):
    """The file holds a token for another console: a setting for this one would throw it away."""


def _stored() -> dict:
    try:
        stored = json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def load(url_flag: str | None = None) -> Settings:
    """The URL (flag, then CLUSTERRA_URL, then the file, then the default) and token (env, then file)."""
    stored = _stored()
    url = url_flag or os.environ.get("CLUSTERRA_URL") or stored.get("url") or DEFAULT_URL
    token = os.environ.get("CLUSTERRA_TOKEN", "")
    source = "CLUSTERRA_TOKEN" if token else ""
    same = _same(stored.get("url", ""), url)
    # A stored token belongs to the console it was made on; never send it to another one.
    if not token and stored.get("token") and same:
        token, source = stored["token"], str(config_path())
    # A cluster id means something on one console only, like the token.
    cluster = stored.get("cluster") if same and isinstance(stored.get("cluster"), str) else ""
    return Settings(url.rstrip("/"), token, source, cluster)


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _write(stored: dict) -> Path:
    """Write the file readable by its owner only (the directory too), replacing what was there."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    temporary = path.with_suffix(".tmp")
    # Created 0600 from the first byte: the token is never readable by others, even briefly.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(stored, f, indent=1)
        f.write("\n")
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def save(url: str, token: str) -> Path:
    """Keep the console's URL and token; the default cluster stays if it is for the same console."""
    stored = _stored()
    new = {"url": url.rstrip("/"), "token": token}
    if _same(stored.get("url", ""), url) and stored.get("cluster"):
        new["cluster"] = stored["cluster"]
    return _write(new)


def set_cluster(url: str, cluster: str | None) -> Path:
    """Make `cluster` the default on the console at `url` (None forgets it)."""
    stored = _stored()
    if not _same(stored.get("url", "") or url, url):
        if stored.get("token"):
            raise OtherConsole(
                f"{config_path()} holds the sign-in for {stored['url']}, not {url.rstrip('/')}: "
                f"run `clusterra login --url {url.rstrip('/')}` first."
            )
        stored = {}
    stored["url"] = url.rstrip("/")
    if cluster:
        stored["cluster"] = cluster
    else:
        stored.pop("cluster", None)
    return _write(stored)


def forget() -> bool:
    """Forget the token (whether there was one); the file goes too unless it holds a default cluster."""
    stored = _stored()
    had_token = bool(stored.pop("token", None))
    if stored.get("cluster"):
        _write(stored)
        return had_token
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return had_token
