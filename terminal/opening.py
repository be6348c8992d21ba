"""Opening a terminal: the session row, the transport, the recording and the audit, then a LiveTerminal.

The consumer (terminal.consumer) decides whether the person may open one; what happens once the
shell runs is terminal.live. A shell that cannot start leaves its row ended as failed, with the
sentence the person sees, and a `terminal.failed` audit event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from audit.log import record
from clusters.models import Cluster
from terminal import transports
from terminal.live import LiveTerminal
from terminal.models import TerminalPolicy, TerminalSession
from terminal.recording import Recorder, relative_path
from terminal.transports.base import Transport, TransportError

log = logging.getLogger(__name__)
Ended = TerminalSession.Ended


async def open_terminal(
    *,
    person: Any,
    cluster: Cluster,
    posix_user: str,
    cwd: str,
    cols: int,
    rows: int,
    scope: dict[str, Any] | None,
) -> LiveTerminal:
    """Start a shell for `person` as `posix_user`: the row, the transport, the recording, the audit.

    Raises TransportError with a sentence for the person when the shell cannot be started;
    the row then says so too.
    """
    policy = await database_sync_to_async(TerminalPolicy.for_cluster)(cluster)
    # Made in a task of its own: a cancel that lands while the row is being written still finds the row,
    # and ends it, instead of leaving it open for good (the shell keeper's openings are cancelled so).
    creating = asyncio.ensure_future(
        database_sync_to_async(TerminalSession.objects.create)(
            person=person,
            person_name=person.get_username(),
            cluster=cluster,
            cluster_slug=cluster.slug,
            posix_user=posix_user,
            transport=cluster.transport,
            cwd=cwd,
            client_address=_client_address(scope),
        )
    )
    try:
        row = await asyncio.shield(creating)
    except asyncio.CancelledError as exc:
        row = await creating
        message = str(exc) or "The terminal was not opened after all."
        await database_sync_to_async(_write_failed)(row, message, scope)
        raise
    transport: Transport | None = None
    try:
        transport = await asyncio.to_thread(
            transports.for_cluster,
            cluster,
            posix_user=posix_user,
            cwd=cwd,
            reason=f"Clusterra terminal of {person.get_username()} as {posix_user}",
            person=person,
        )
        await transport.start(cols, rows)
    except BaseException as exc:
        if isinstance(exc, TransportError | ValueError):
            message = str(exc)
        elif isinstance(exc, asyncio.CancelledError):
            message = str(exc) or "The terminal was not opened after all."
        else:
            log.exception("terminal %s: the transport could not start", row.pk)
            message = "The terminal could not be started because of an internal error; try again."
        if transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(transport.close(message))
        await asyncio.shield(database_sync_to_async(_write_failed)(row, message, scope))
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise TransportError(message) from exc

    recorder = None
    if policy.record:
        try:
            recorder = await asyncio.to_thread(_start_recording, row, cluster, cols, rows)
        except (OSError, ValueError) as exc:
            # A cluster that records must not open unrecorded shells silently: refuse instead.
            message = f"This cluster records terminals, and the recording could not be started ({exc})."
            await transport.close(message)
            await database_sync_to_async(_write_failed)(row, message, scope)
            raise TransportError(message) from exc
    await database_sync_to_async(_write_opened)(row, transport, recorder, scope)
    live = LiveTerminal(
        transport=transport,
        row=row,
        cluster=cluster,
        posix_user=posix_user,
        # Session Manager's own idle timeout may be shorter; the console then warns before it cuts.
        idle_minutes=await asyncio.to_thread(transports.idle_minutes, cluster),
        max_minutes=policy.max_minutes,
        recorder=recorder,
        scope=scope,
        resume_minutes=policy.resume_minutes,
    )
    live.begin()
    return live


def _start_recording(row: TerminalSession, cluster: Cluster, cols: int, rows: int) -> Recorder:
    relative = relative_path(cluster.slug, row.pk, row.posix_user, row.started.timestamp())
    return Recorder(
        relative,
        cols=cols,
        rows=rows,
        title=f"{row.posix_user} on {cluster.name}",
        s3_url=settings.CLUSTERRA_RECORDINGS_S3,
        cloudwatch_group=settings.CLUSTERRA_RECORDINGS_CLOUDWATCH,
        cloudwatch_stream=f"{cluster.slug}/{row.pk}",
    )


def _write_opened(
    row: TerminalSession, transport: Transport, recorder: Recorder | None, scope: dict[str, Any] | None
) -> None:
    row.transport_session_id = transport.session_id[:128]
    row.recording = recorder.location if recorder is not None else ""
    row.save(update_fields=["transport_session_id", "recording"])
    record(
        "terminal.opened",
        actor=row.person,
        cluster=row.cluster_slug,
        target=row.posix_user,
        message=f"Terminal opened as {row.posix_user} through {row.transport}.",
        request=scope,
        details={
            "session": row.pk,
            "transport": row.transport,
            "transport_session_id": row.transport_session_id,
            "cwd": row.cwd,
            "recorded": recorder is not None,
        },
    )


def _write_failed(row: TerminalSession, message: str, scope: dict[str, Any] | None) -> None:
    row.ended = timezone.now()
    row.end_reason = Ended.FAILED
    row.end_message = message
    row.save(update_fields=["ended", "end_reason", "end_message"])
    record(
        "terminal.failed",
        actor=row.person,
        cluster=row.cluster_slug,
        target=row.posix_user,
        outcome="error",
        reason="transport",
        message=message,
        request=scope,
        details={"session": row.pk, "transport": row.transport},
    )


def _client_address(scope: dict[str, Any] | None) -> str | None:
    client = (scope or {}).get("client")
    return client[0] if client else None


def off_loop(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Run a slow, blocking call (provisioning: seconds of head-node commands) in a thread of its own.

    database_sync_to_async would queue it on the one thread all ORM calls share, stalling every
    other terminal of this worker for as long as it takes.
    """
    return sync_to_async(_with_fresh_connections(func), thread_sensitive=False)


def _with_fresh_connections(func: Callable[..., Any]) -> Callable[..., Any]:
    from django.db import close_old_connections, connections

    def call(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return func(*args, **kwargs)
        finally:
            # A pool thread may not run Django code again for a long time; it keeps no connection open.
            connections.close_all()

    return call
