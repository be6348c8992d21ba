"""Where the consumer gets a shell: this process (CLUSTERRA_SHELL_KEEPER empty) or the shell keeper.

Either way the consumer holds a `Shell` and uses it the same way; which one it is never changes what the
page sees. In this process a shell is a terminal.live.LiveTerminal, opened by terminal.opening; in the
keeper it is a terminal.keeper_link.KeptShell, its LiveTerminal living there (terminal.keeper).
"""

from __future__ import annotations

from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from audit.log import record
from clusters.models import Cluster
from terminal import keeper_link
from terminal import live as live_terminals
from terminal.live import Viewer
from terminal.opening import open_terminal


class Shell(Protocol):
    """A running shell as the consumer uses it, wherever it lives."""

    token: str
    posix_user: str
    idle_minutes: int

    @property
    def session_id(self) -> int: ...

    @property
    def recorded(self) -> bool: ...

    def attach(self, viewer: Viewer) -> list[bytes]: ...

    def detach(self, viewer: Viewer) -> None: ...

    async def keystrokes(self, data: bytes) -> None: ...

    async def resize(self, cols: int, rows: int) -> None: ...

    async def end(self, reason: str, message: str) -> None: ...


async def open(
    *,
    person: Any,
    cluster: Cluster,
    posix_user: str,
    cwd: str,
    cols: int,
    rows: int,
    scope: dict[str, Any] | None,
) -> Shell:
    """Start a shell for `person` as `posix_user`; TransportError with the person's sentence if it cannot."""
    path = settings.CLUSTERRA_SHELL_KEEPER
    if not path:
        return await open_terminal(
            person=person, cluster=cluster, posix_user=posix_user, cwd=cwd, cols=cols, rows=rows, scope=scope
        )
    try:
        return await keeper_link.open_shell(
            path,
            person_id=person.pk,
            cluster_slug=cluster.slug,
            posix_user=posix_user,
            cwd=cwd,
            cols=cols,
            rows=rows,
            client=(scope or {}).get("client"),
        )
    except keeper_link.KeeperUnreachable as exc:
        await database_sync_to_async(_unreachable)(person, cluster, posix_user, str(exc), scope)
        raise


async def resume(token: str, *, person: Any, cluster: Cluster, scope: dict[str, Any] | None) -> Shell | None:
    """The person's shell on `cluster` that `token` names, if it still runs (to attach to a page)."""
    path = settings.CLUSTERRA_SHELL_KEEPER
    if not path:
        return live_terminals.find(token, person.pk, cluster.slug)
    try:
        return await keeper_link.resume_shell(
            path, token=token, person_id=person.pk, cluster_slug=cluster.slug
        )
    except keeper_link.KeeperUnreachable as exc:
        await database_sync_to_async(_unreachable)(person, cluster, "", str(exc), scope)
        raise


def _unreachable(person: Any, cluster: Cluster, posix_user: str, message: str, scope: dict[str, Any] | None):
    # No session row: the keeper writes those, and it never heard of this terminal. The audit still tells.
    record(
        "terminal.failed",
        actor=person,
        cluster=cluster,
        target=posix_user,
        outcome="error",
        reason="keeper",
        message=message,
        request=scope,
        details={"transport": cluster.transport},
    )
