"""Reading configuration from the environment, with the embedded defaults a newcomer gets."""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import stat
from pathlib import Path
from typing import Any
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


def integer(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
    return value


def words(name: str, default: str = "") -> list[str]:
    """A comma- or space-separated list."""
    raw = os.environ.get(name, default)
    return [w for w in raw.replace(",", " ").split() if w]


# PostgreSQL connections each process may hold at once (CLUSTERRA_DB_POOL_SIZE; 0 turns the pool off).
# A request keeps its connection until it ends, slurmrestd and head-node calls included, so this is how
# many requests of one worker can be under way at once; the rest wait for a connection. N workers (and
# the sync process) may open N times this many: keep the sum under PostgreSQL's max_connections (100 by
# default), and raise it for workers that serve many slow submits (SSM head nodes).
DEFAULT_POOL_SIZE = 10
# Opened when the pool starts and kept warm, so the first requests after a quiet spell pay no connect.
POOL_MIN_SIZE = 2
# Seconds a request waits for a connection before it fails (a 500; /healthz answers 503). A pool cannot
# tell "all lent" from "PostgreSQL is down", and keeps retrying the latter until this runs out:
# psycopg_pool's 30 s would hold every request (and a load balancer's health check) that long.
POOL_TIMEOUT = 10


def reset_pooled_connection(conn: Any) -> None:
    """Called by the pool on every connection given back: drop the session's advisory locks, if it took one.

    A closed connection used to end its PostgreSQL session, and with it every session-level lock;
    a pooled one lives on. The sync loop's single-instance lock (jobs/sync_lock.py) is such a lock: without
    this, a thread that ended while holding it handed it on to whichever request borrowed that
    connection next, and no sync loop could take it again.
    """
    # Here, not at the top: settings import this module before the apps are loaded.
    from jobs.sync_lock import took_session_lock

    if not took_session_lock(conn):
        return  # the other requests' connections come back as they were lent: no round trip
    conn.execute("SELECT pg_advisory_unlock_all()")
    if not conn.autocommit:
        conn.rollback()  # the pool wants the connection back idle, not inside the SELECT's transaction


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
            # Tests get a file too, not Django's shared-cache memory database: that one locks whole tables
            # at once ("database table is locked", no waiting), which the console's own file never does,
            # and a forked test server could not open it at all.
            "TEST": {"NAME": data_dir / "test-clusterra.sqlite3"},
        }
    parts = urlsplit(url)
    if parts.scheme in {"postgres", "postgresql", "pgsql"}:
        options: dict = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        pool_size = integer("CLUSTERRA_DB_POOL_SIZE", DEFAULT_POOL_SIZE)
        if pool_size < 0:
            raise ConfigError(f"CLUSTERRA_DB_POOL_SIZE={pool_size} must be 0 (no pool) or more")
        if pool_size:
            # Under an ASGI server each request's sync code runs in a thread of its own, Django's connections
            # are per thread, so a kept connection (CONN_MAX_AGE) was never used again: each request paid
            # for a new PostgreSQL session (~15 ms). The pool lends one per request and takes it back when
            # the request ends; Django requires CONN_MAX_AGE 0 with it (the pool keeps them instead).
            options["pool"] = {
                "min_size": min(POOL_MIN_SIZE, pool_size),
                "max_size": pool_size,
                "timeout": POOL_TIMEOUT,
                "reset": reset_pooled_connection,
            }
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")) or "clusterra",
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            # Without a pool (PgBouncer pools already), a connection is kept a minute by the thread that
            # opened it: the sync process and management commands reuse theirs.
            "CONN_MAX_AGE": 0 if pool_size else 60,
            # With the pool: a lent connection is checked first, so one PostgreSQL dropped (a restart,
            # a failover) is replaced instead of failing a request.
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


# Seconds: a read of the channel layer (three times channels-redis's 5 s blocking pop), and a connect.
LAYER_READ_TIMEOUT = 15
LAYER_CONNECT_TIMEOUT = 3


def channel_layer(redis_url: str | None) -> dict:
    if not redis_url:
        # One process only: fine for a laptop or the demo; live terminals across workers need Redis.
        return {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    # channels-redis waits on Redis with a blocking pop of up to 5 s, and redis-py 8 defaults to a 5 s read
    # timeout, so an idle consumer (a terminal nobody is typing in) died with "Timeout reading from" after
    # 5 s. The read timeout must outlast the pop by a margin; it must not be None either, or a Redis that
    # silently drops packets would hang a receive for good instead of letting terminal.notices notice.
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": redis_url,
                    "socket_timeout": LAYER_READ_TIMEOUT,
                    "socket_connect_timeout": LAYER_CONNECT_TIMEOUT,
                }
            ]
        },
    }


# Seconds a cache call may wait on Redis. Every cache call is answered at once (nothing blocks, unlike the
# channel layer's pops), so a short bound is right; it is set here and not left to redis-py, whose default
# was "wait forever" before 8 and 5 s since, so that a hung Redis costs a sign-in seconds, not a worker.
CACHE_REDIS_TIMEOUT = 2


def cache(redis_url: str | None) -> dict:
    """Django's default cache, which holds the sign-in throttle's counters (allauth's `login_failed`).

    The counters must be shared by every web worker, or N workers allow N times the attempts.
    """
    if not redis_url:
        # One process, as the embedded set-up runs (SQLite and one web server): its memory is shared by all
        # it serves. More web workers need REDIS_URL anyway (live terminals), and then the branch below.
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "clusterra"}
    return {
        "BACKEND": "clusterra_site.cache.DegradingRedisCache",
        "LOCATION": redis_url,
        # The channel layer uses the same database; the prefix keeps the two apart to the eye and to SCAN.
        "KEY_PREFIX": "clusterra",
        "OPTIONS": {
            "socket_connect_timeout": CACHE_REDIS_TIMEOUT,
            "socket_timeout": CACHE_REDIS_TIMEOUT,
        },
    }


def private_folder(path: Path) -> None:
    """Make the data folder 0700 if it is missing; refuse it if other users may read, write or enter it.

    It holds the SQLite database, the secret key and terminal recordings: readable, it hands any local
    user (a person's shell on the head node) an administrator's session. An open folder is refused, not
    quietly closed: what was in it may have been read already (the secret key, sessions), which its
    operator has to know, and a folder named by CLUSTERRA_DATA_DIR may be shared on purpose.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"The data folder {path} is open to other users (mode {mode:o}) and holds the console's secret "
            f"key and data; make it private: chmod 700 {shlex.quote(str(path))}"
        )


def private_sqlite_file(path: Path | str) -> None:
    """Create the SQLite database 0600 before SQLite does: it would make it 0644, as the umask allows.

    Its journal and WAL files take the database file's mode, so they are 0600 too.
    """
    if str(path) == ":memory:":
        return
    # Already there, or a folder that does not exist yet: SQLite says so when it opens the file.
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


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
