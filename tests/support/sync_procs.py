"""Real `manage.py sync_jobs` processes for tests: started, found by the lock they hold, killed by their pid.

A loop started here runs exactly as the sync unit runs it (its own interpreter, its own database
connections) against the database the test uses: with PostgreSQL, the test database, which a
transactional test (`django_db(transaction=True)`) has committed to. Which of several loops is the
active one is read where an operator would read it: the advisory lock in `pg_locks`, and the
`application_name` its connection carries (jobs.sync_lock.APPLICATION_NAME names the pid).

Only processes started here are ever signalled, each by its own pid.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import psycopg

REPO = Path(__file__).resolve().parents[2]
# Seconds a loop gets to exit after SIGTERM before it is killed.
STOP_SECONDS = 10


def database_url() -> str:
    """A DATABASE_URL for the database this test process uses now (the test database, under pytest).

    PostgreSQL's with its parts quoted, or SQLite's file: other processes (a sync loop, the shell keeper,
    a web worker) then see what the test committed.
    """
    from django.db import connection

    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = quote(s["USER"] or "", safe="")
    if s["PASSWORD"]:
        auth += ":" + quote(s["PASSWORD"], safe="")
    host = s["HOST"] or "127.0.0.1"
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{quote(s['NAME'], safe='')}"


def sync_env(url: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment with DATABASE_URL pointing at `url` (the test database by default)."""
    env = dict(os.environ)
    env["DATABASE_URL"] = url or database_url()
    env["PYTHONUNBUFFERED"] = "1"  # its lines reach the log as they are written, even if it is killed
    env.update(extra)
    return env


def start_sync(env: dict[str, str], *, interval: float = 1.0, log: Path | None = None) -> subprocess.Popen:
    """`manage.py sync_jobs --interval N` in a session of its own; its stdout and stderr go to `log`."""
    argv = [sys.executable, str(REPO / "manage.py"), "sync_jobs", "--interval", f"{interval:g}"]
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log is not None:
            out.close()


def active_sync_pid(url: str) -> int | None:
    """The pid of the process whose connection holds the sync lock now, or None if no loop holds it."""
    from jobs.sync_lock import ADVISORY_KEY

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND ((l.classid::bigint << 32) | l.objid::bigint) = %s",
            [ADVISORY_KEY],
        ).fetchone()
    if row is None:
        return None
    found = re.search(r"\bpid (\d+)\b", row[0] or "")
    if found is None:
        raise AssertionError(f"the sync lock is held by a connection that does not name its pid: {row[0]!r}")
    return int(found.group(1))


def wait_for_holder(
    url: str, *, among: set[int] | None = None, other_than: int | None = None, timeout: float = 30.0
) -> tuple[int, float]:
    """Wait until a process (of `among`, not `other_than`) holds the sync lock: its pid, seconds waited."""
    started = time.monotonic()
    while True:
        pid = active_sync_pid(url)
        if pid is not None and pid != other_than and (among is None or pid in among):
            return pid, time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"no sync loop {'of ' + str(sorted(among)) + ' ' if among else ''}took the lock within "
                f"{timeout:g} s (holder now: {pid})"
            )
        time.sleep(0.05)


def wait_for_line(
    log: Path, text: str, *, timeout: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    """Wait until `text` appears in a loop's log (a standby says it waits), or fail with the log."""
    deadline = time.monotonic() + timeout
    while text not in (log.read_text(errors="replace") if log.exists() else ""):
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"sync loop {process.pid} exited with {process.returncode}:\n{log.read_text()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {log} after {timeout:g} s:\n{log.read_text()}")
        time.sleep(0.05)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Send `sig` to this loop (by its pid) and reap it; killed if it outlives STOP_SECONDS."""
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_SECONDS)
