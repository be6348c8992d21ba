"""Only one sync loop at a time: a database lock that a standby loop waits for.

`pg_try_advisory_lock` on PostgreSQL (held for the life of the loop's connection), a lock
row with an expiry elsewhere (SQLite). A second loop waits as a standby; web workers never
take the lock. On PostgreSQL the loop's connection names its process (`application_name`,
APPLICATION_NAME), so `pg_locks` joined with `pg_stat_activity` tells an operator which
process on which host is the active loop.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from jobs.models import SyncLock

LOCK_NAME = "jobs.sync"
# An arbitrary constant that names this lock among the database's advisory locks.
ADVISORY_KEY = 0x636C7573_6A6F6273 & 0x7FFFFFFFFFFFFFFF
LOCK_ROW_SECONDS = 60
# The pid comes before the host name: PostgreSQL keeps only the first 63 bytes of the name.
APPLICATION_NAME = "clusterra sync_jobs pid {pid} on {host}"


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class SyncLockHeld(Exception):
    """Another sync loop is active."""


@contextmanager
def single_instance(holder: str | None = None) -> Iterator[SingleInstance]:
    """Hold the sync lock for the block; SyncLockHeld if another loop has it."""
    lock = SingleInstance(holder or holder_name())
    if not lock.acquire():
        raise SyncLockHeld("another sync_jobs loop holds the lock")
    try:
        yield lock
    finally:
        lock.release()


class SingleInstance:
    """The database lock: advisory on PostgreSQL, a row with an expiry elsewhere."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        self.held = False

    @property
    def advisory(self) -> bool:
        return connection.vendor == "postgresql"

    def acquire(self) -> bool:
        if self.advisory:
            with connection.cursor() as cursor:
                if self.held and self._still_held(cursor):
                    return True
                name = APPLICATION_NAME.format(pid=os.getpid(), host=socket.gethostname())
                cursor.execute(
                    "SELECT set_config('application_name', %s, false), pg_try_advisory_lock(%s)",
                    [name, ADVISORY_KEY],
                )
                self.held = bool(cursor.fetchone()[1])
                if self.held:
                    # Given back to the pool, this connection must let the lock go (reset_pooled_connection).
                    with _takers_lock:
                        _takers.add(connection.connection)
            return self.held
        self.held = self._take_row()
        return self.held

    def refresh(self) -> bool:
        """Still ours? (A dropped connection loses an advisory lock; a row lock must be renewed.)"""
        return self.acquire()

    def release(self) -> None:
        if not self.held:
            return
        if self.advisory:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_KEY])
        else:
            SyncLock.objects.filter(name=LOCK_NAME, holder=self.holder).update(holder="", expires=None)
        self.held = False

    @staticmethod
    def _still_held(cursor) -> bool:
        cursor.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
            "AND granted AND ((classid::bigint << 32) | objid::bigint) = %s",
            [ADVISORY_KEY],
        )
        return cursor.fetchone() is not None

    def _take_row(self) -> bool:
        now = timezone.now()
        expires = now + timedelta(seconds=LOCK_ROW_SECONDS)
        try:
            with transaction.atomic():
                SyncLock.objects.get_or_create(name=LOCK_NAME)
        except IntegrityError:
            pass
        taken = (
            SyncLock.objects.filter(name=LOCK_NAME)
            .filter(_free_or_mine(self.holder, now))
            .update(holder=self.holder, expires=expires)
        )
        return bool(taken)


def _free_or_mine(holder: str, now: datetime) -> Q:
    return Q(holder="") | Q(holder=holder) | Q(expires__isnull=True) | Q(expires__lt=now)


# The database connections (psycopg's) that took the advisory lock, until the pool has them back.
_takers: weakref.WeakSet = weakref.WeakSet()
_takers_lock = threading.Lock()


def took_session_lock(conn: Any) -> bool:
    """Whether `conn` took the advisory lock since it was last asked (the pool's reset asks, and unlocks).

    Only this module takes a session-level lock, so every other connection given back to the pool, one
    per request, needs no round trip to unlock what it never locked.
    """
    with _takers_lock:
        if conn not in _takers:
            return False
        _takers.discard(conn)
        return True
