"""Reading configuration from the environment, with the embedded defaults a newcomer gets."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting in the environment cannot be understood; the message names it."""


def flag(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value (use 1 or 0)")


def integer(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None


def words(name: str, default: str = "") -> list[str]:
    """A comma- or space-separated list."""
    raw = os.environ.get(name, default)
    return [w for w in raw.replace(",", " ").split() if w]


def database(url: str | None, data_dir: Path) -> dict:
    """Django's DATABASES['default'] from a DATABASE_URL, or the embedded SQLite file.

    Only the two engines the console is tested on are accepted, so a typo fails
    at start-up rather than on the first query.
    """
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": data_dir / "clusterra.sqlite3",
            # SQLite serialises writers; waiting beats "database is locked" under the sync loop.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "clusterra",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": options,
        }
    if parts.scheme == "sqlite":
        # sqlite:///relative/or/absolute — three slashes then the path, as most tools write it.
        path = unquote(url[len("sqlite://") :]).lstrip("/") if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(
                "DATABASE_URL=sqlite:/// needs a file path, e.g. sqlite:////var/lib/clusterra/db"
            )
        name = Path("/" + path) if url.startswith("sqlite:////") else Path(path)
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "OPTIONS": {"timeout": 20}}
    raise ConfigError(
        f"DATABASE_URL scheme {parts.scheme!r} is not supported (use postgres:// or sqlite:///)"
    )


def channel_layer(redis_url: str | None) -> dict:
    if not redis_url:
        # One process only: fine for a laptop or the demo; live terminals across workers need Redis.
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    # No socket timeout: channels-redis waits on Redis with a blocking pop of up to 5 s, and redis-py 8
    # defaults to a 5 s read timeout, so an idle consumer (a terminal nobody is typing in) would die with
    # "Timeout reading from" after 5 s. A dead Redis still shows up as a refused or reset connection.
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": redis_url, "socket_timeout": None}]},
    }


def secret_key(data_dir: Path) -> str:
    """DJANGO_SECRET_KEY, or one generated once and kept in the data folder.

    A key in the repository would be a shared secret; a fresh one per start
    would sign everyone out on every restart.
    """
    from_env = os.environ.get("DJANGO_SECRET_KEY")
    if from_env:
        return from_env
    path = data_dir / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (the sync loop) won the race
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(key)
    return key
