"""Row 3, terminal echo: one keystroke's round trip through the console (local PTY and SSM) against a raw PTY.

Five shells are open at once and typed into in turn, key by key, so whatever else the machine
does during the run falls on all of them alike:

- raw: the bench user's login shell on a PTY this process reads directly (the floor);
- local: WebSocket → daphne → consumer → LiveTerminal → local transport → the same login shell;
- ssm: WebSocket → daphne → consumer → SSM transport → data channel (SigV4 WebSocket) → the agent
  emulator in its own process → its shell (bash --norc on a PTY). The agent's hop stands for the
  network to a real head node, so its cost is part of what this line shows;
- local transport and SSM transport alone: the console's transports driven directly from this
  process, no WebSocket, daphne or consumer; they split the added time into the transport's
  share and the share of the socket and consumer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.stats import Measurement, Row, Series, Target
from bench.terminal_client import ConsoleTerminal, PtyShell, Shell, TransportShell

TARGET = Target("added_ms", 1.0)


async def _transport(cluster: Any, user: str) -> TransportShell:
    from terminal import transports

    made = await asyncio.to_thread(
        transports.for_cluster, cluster, posix_user=user, cwd="", reason="Clusterra benchmark"
    )
    return TransportShell(made)


async def _run(
    base_url: str, cookie: str, user: str, home: str, clusters: tuple[Any, Any], keys: int, warmup: int
) -> Row:
    local_cluster, ssm_cluster = clusters
    shells: dict[str, Shell] = {
        "raw": PtyShell(user, home),
        "local": ConsoleTerminal(base_url, "demo", cookie),
        "ssm": ConsoleTerminal(base_url, "aws", cookie),
        "local_alone": await _transport(local_cluster, user),
        "ssm_alone": await _transport(ssm_cluster, user),
    }
    series = {name: Series(name) for name in shells}
    try:
        for shell in shells.values():
            await shell.open()
        for index in range(warmup + keys):
            for name, shell in shells.items():
                took = await shell.echo()
                if index >= warmup:
                    series[name].samples.append(took)
    finally:
        for shell in shells.values():
            await shell.close()
    floor = Series("raw PTY echo", series["raw"].samples)
    row = Row(3, "terminal echo")
    row.measurements = [
        Measurement("3a", "echo via WebSocket + local PTY", series["local"], floor, TARGET),
        Measurement(
            "3b",
            "echo via WebSocket + SSM data channel + agent",
            series["ssm"],
            floor,
            TARGET,
            notes=["includes the agent emulator's own WebSocket and PTY hop (on AWS: the network and agent)"],
        ),
        Measurement("3c", "  of which: local transport alone", series["local_alone"], floor),
        Measurement("3d", "  of which: SSM transport + agent alone", series["ssm_alone"], floor),
    ]
    row.info = {"keys_per_shell": keys, "warmup_keys": warmup, "order": ", ".join(shells) + ", key by key"}
    return row


def run(
    base_url: str, cookie: str, user: str, home: str, clusters: tuple[Any, Any], *, keys: int, warmup: int
) -> Row:
    return asyncio.run(_run(base_url, cookie, user, home, clusters, keys, warmup))
