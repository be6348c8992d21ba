"""Row 4, fan-out: N terminals in one daphne process, all typing; echo p50/p99 and memory per session.

Each session is the real local path: the console starts the bench user's login shell with
runuser on a PTY of its own, as it would for a person on a head node that hosts the console.
500 login shells (and their runuser parents) fit this machine; the shells only echo, so the
load they add is small and the same on both sides.

The floor is the same number of the same login shells on PTYs that this process types into
directly, at the same pace, measured first. Every shell (both sides) types one key, waits for
its echo, pauses `interval` x U(0.5, 1.5) and types again, starting at a random moment, so the
keys arrive spread out as from people typing, not in lockstep.

Memory per session is the growth of the daphne process (resident, and private/unshared) from
one open terminal (which loads every module the path needs) to N, divided by N - 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bench.console import Daphne, major_faults, process_cpu_seconds, process_memory
from bench.stats import Measurement, Row, Series, Target
from bench.terminal_client import ConsoleTerminal, PtyShell, Shell

TARGET = Target("p99_ms", 50.0)
# Terminals opened at a time: a crowd arriving, not all in the same millisecond.
OPEN_AT_ONCE = 10
SLOWEST = 25
# The local cluster of bench/console.py: its head node is this machine.
CLUSTER = "demo"


async def _open_all(make: Callable[[], Shell], count: int, opened: list[Shell]) -> Series:
    timings = Series("open")
    semaphore = asyncio.Semaphore(OPEN_AT_ONCE)

    async def one() -> None:
        shell = make()
        async with semaphore:
            begun = time.perf_counter()
            await shell.open()
            timings.samples.append(time.perf_counter() - begun)
        opened.append(shell)

    await asyncio.gather(*(one() for _ in range(count)))
    return timings


async def _type(
    shells: Sequence[Shell], seconds: float, interval: float, seed: int
) -> tuple[Series, int, list[tuple[float, float]]]:
    series = Series("echo")
    # (seconds into the typing, milliseconds) of the slowest echoes: when they happen says why.
    slow: list[tuple[float, float]] = []
    failures = 0
    begun = time.monotonic()
    stop_at = begun + seconds
    rng = random.Random(seed)

    async def typist(shell: Shell, offset: float, pauses: list[float]) -> None:
        nonlocal failures
        await asyncio.sleep(offset)
        turn = 0
        while time.monotonic() < stop_at:
            at = time.monotonic() - begun
            try:
                took = await shell.echo(timeout=10)
            except (TimeoutError, RuntimeError, OSError):
                failures += 1
                return
            series.samples.append(took)
            slow.append((round(at, 3), round(took * 1000, 2)))
            await asyncio.sleep(pauses[turn % len(pauses)])
            turn += 1

    plans = [
        (rng.uniform(0, interval), [interval * rng.uniform(0.5, 1.5) for _ in range(64)]) for _ in shells
    ]
    await asyncio.gather(
        *(typist(shell, offset, pauses) for shell, (offset, pauses) in zip(shells, plans, strict=True))
    )
    slow.sort(key=lambda sample: -sample[1])
    return series, failures, sorted(slow[:SLOWEST])


class _Worker:
    """The console's own processes: the server and any worker under it, but not the shells it started.

    Every local terminal's runuser and login shell are children of the worker; counted in, they made
    a terminal look like 7.6 MB of the worker's memory (bash and runuser's own) instead of what the
    worker holds for it. They start sessions of their own (setsid), which is how they are told apart.
    """

    def __init__(self, server: Daphne) -> None:
        self.server = server
        self.session = os.getsid(server.pid)

    def pids(self) -> list[int]:
        tree = getattr(self.server, "pids", None)
        pids = tree() if tree is not None else [self.server.pid]
        mine = []
        for pid in pids:
            with contextlib.suppress(OSError):
                if os.getsid(pid) == self.session:
                    mine.append(pid)
        return mine

    def memory(self) -> dict[str, int]:
        total = {"rss": 0, "pss": 0, "private": 0}
        for pid in self.pids():
            for name, value in process_memory(pid).items():
                total[name] = total.get(name, 0) + value
        return total

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def major_faults(self) -> int:
        return sum(major_faults(pid) for pid in self.pids())


class PauseLog:
    """The typing process's own garbage-collection pauses: a stall of the client is not daphne's."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._began = 0.0

    def _note(self, phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._began)

    def __enter__(self) -> PauseLog:
        # Everything made so far (Django, the sockets) is old: freezing it keeps full collections short.
        gc.collect()
        gc.freeze()
        gc.callbacks.append(self._note)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self._note)
        gc.unfreeze()

    def summary(self) -> dict[str, float]:
        return {"collections": len(self.pauses), "longest_ms": round(1000 * max(self.pauses, default=0.0), 2)}


async def _close_all(shells: Sequence[Shell]) -> None:
    semaphore = asyncio.Semaphore(50)

    async def one(shell: Shell) -> None:
        async with semaphore:
            await shell.close()

    await asyncio.gather(*(one(s) for s in shells), return_exceptions=True)


async def _run(
    base_url: str,
    cookie: str,
    user: str,
    home: str,
    server: Daphne,
    *,
    sessions: int,
    seconds: float,
    interval: float,
) -> Row:
    info: dict[str, Any] = {"sessions": sessions, "typing_seconds": seconds, "key_interval_s": interval}

    raw: list[Shell] = []
    try:
        await _open_all(lambda: PtyShell(user, home), sessions, raw)
        raw_client_cpu = time.process_time()
        with PauseLog() as raw_pauses:
            floor, raw_failures, raw_slowest = await _type(raw, seconds, interval, seed=4)
        raw_client_cpu = time.process_time() - raw_client_cpu
    finally:
        await _close_all(raw)
    floor.label = f"{sessions} raw PTYs"

    console: list[Shell] = []
    try:
        first = ConsoleTerminal(base_url, CLUSTER, cookie)
        await first.open()
        console.append(first)
        worker = _Worker(server)
        before = worker.memory()
        opening = await _open_all(lambda: ConsoleTerminal(base_url, CLUSTER, cookie), sessions - 1, console)
        after_open = worker.memory()
        server_cpu, client_cpu = worker.cpu_seconds(), time.process_time()
        server_faults, client_faults = worker.major_faults(), major_faults(os.getpid())
        window = time.time()
        with PauseLog() as pauses:
            echoes, failures, slowest = await _type(console, seconds, interval, seed=4)
        server_gc = server.gc_pauses(window, time.time())
        server_cpu, client_cpu = worker.cpu_seconds() - server_cpu, time.process_time() - client_cpu
        server_faults = worker.major_faults() - server_faults
        client_faults = major_faults(os.getpid()) - client_faults
        after_typing = worker.memory()
    finally:
        await _close_all(console)
    echoes.label = f"{sessions} terminals"
    grown = max(1, sessions - 1)
    info.update(
        {
            "open_terminal_ms": {k: v for k, v in opening.summary().items() if k.endswith("_ms") or k == "n"},
            "daphne_rss_bytes": {
                "one_session": before["rss"],
                "all_open": after_open["rss"],
                "after_typing": after_typing["rss"],
            },
            "memory_per_session_bytes": {
                "rss": (after_open["rss"] - before["rss"]) // grown,
                "private": (after_open["private"] - before["private"]) // grown,
            },
            "keystrokes_per_second": round(len(echoes.samples) / seconds, 1),
            # Busy share of one core while typing: daphne, and this process typing into it (the "browsers").
            "daphne_cpu_share": round(server_cpu / seconds, 3),
            "daphne_cpu_ms_per_keystroke": round(1000 * server_cpu / max(1, len(echoes.samples)), 3),
            "client_cpu_share": round(client_cpu / seconds, 3),
            "raw_client_cpu_share": round(raw_client_cpu / seconds, 3),
            "client_gc": pauses.summary(),
            "daphne_major_faults_while_typing": server_faults,
            # Daphne's collections of 5 ms or more while typing: (seconds into the typing, ms, generation).
            "daphne_gc_pauses": [
                (round(at - window, 3), round(took * 1000, 1), generation)
                for at, took, generation in server_gc
            ],
            "client_major_faults_while_typing": client_faults,
            "raw_client_gc": raw_pauses.summary(),
            "failed_sessions": failures,
            "failed_raw_shells": raw_failures,
            "slowest_echoes_s_ms": slowest,
            "slowest_raw_echoes_s_ms": raw_slowest,
        }
    )
    per_session = info["memory_per_session_bytes"]["rss"] / 1024
    row = Row(4, "terminal fan-out")
    row.measurements = [
        Measurement(
            "4",
            f"echo with {sessions} terminals in one {server.kind} ({per_session:.0f} KiB RSS/session)",
            echoes,
            floor,
            TARGET,
        )
    ]
    row.info = info
    return row


@contextlib.contextmanager
def _limits_for(slug: str, sessions: int) -> Iterator[dict[str, Any]]:
    """The cluster's caps on one person's shells, raised for the row to what `sessions` shells need.

    The defaults (512 processes, 4 GiB, one CPU for all of a person's shells) are for people; every
    terminal here is a runuser plus a login shell, so 2,000 of them would be refused at the 257th
    (the shell exits with status 1 when it cannot fork) and the rest share one CPU, which the raw
    PTYs of the floor are not held to. An administrator would raise them so for such a person;
    the cluster's own values come back afterwards.
    """
    from clusters.models import Cluster

    cluster = Cluster.objects.get(slug=slug)
    kept = (cluster.shell_max_processes, cluster.shell_max_memory_mb, cluster.shell_max_cpus)
    cluster.shell_max_processes = max(kept[0], 4 * sessions + 64)
    cluster.shell_max_memory_mb = max(kept[1], 8 * sessions + 1024)
    cluster.shell_max_cpus = max(kept[2], float(os.cpu_count() or 1))
    cluster.save(update_fields=["shell_max_processes", "shell_max_memory_mb", "shell_max_cpus"])
    try:
        yield {
            "processes": cluster.shell_max_processes,
            "memory_mb": cluster.shell_max_memory_mb,
            "cpus": cluster.shell_max_cpus,
        }
    finally:
        cluster.shell_max_processes, cluster.shell_max_memory_mb, cluster.shell_max_cpus = kept
        cluster.save(update_fields=["shell_max_processes", "shell_max_memory_mb", "shell_max_cpus"])


def run(
    base_url: str,
    cookie: str,
    user: str,
    home: str,
    server: Daphne,
    *,
    sessions: int,
    seconds: float,
    interval: float,
) -> Row:
    with _limits_for(CLUSTER, sessions) as limits:
        row = asyncio.run(
            _run(base_url, cookie, user, home, server, sessions=sessions, seconds=seconds, interval=interval)
        )
    row.info["person_shell_limits"] = limits
    return row
