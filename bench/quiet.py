"""Whether anyone else is using the CPU: on a shared machine other work shows up in tail latencies.

Every process is put in one of three heaps, by its ancestry and name: the benchmark's own (this
process and everything it started: daphne, the shells, the SSM stand-in), the services it uses
and shares (PostgreSQL, Redis, Slurm), and everything else, the foreign load. The foreign load
is recorded beside each row, and a full run waits for a quiet spell before each row.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SERVICES = frozenset(
    {
        "postgres",
        "redis-server",
        "slurmctld",
        "slurmscriptd",
        "slurmd",
        "slurmrestd",
        "slurmdbd",
        "mariadbd",
        "munged",
    }
)
TICK = os.sysconf("SC_CLK_TCK")
# Below this share of one core the others' work is noise (daemons' housekeeping).
QUIET_SHARE = 0.15


def _processes() -> dict[int, tuple[int, str, float, int]]:
    """pid -> (parent pid, command name, CPU seconds used so far, start time in ticks)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            name = stat[stat.find("(") + 1 : stat.rfind(")")]
            fields = stat[stat.rfind(")") + 2 :].split()
            used = (int(fields[11]) + int(fields[12])) / TICK
            found[int(entry.name)] = (int(fields[1]), name, used, int(fields[19]))
    return found


def _heap(pid: int, table: dict[int, tuple[int, str, float, int]], own: int) -> str:
    if table[pid][1] in SERVICES:
        return "services"
    seen = 0
    while pid > 1 and seen < 64:
        if pid == own:
            return "own"
        pid = table.get(pid, (1, "", 0.0, 0))[0]
        seen += 1
    return "foreign"


class Load:
    """CPU seconds per heap between two samples, and which foreign programs used them."""

    def __init__(self, own: int | None = None) -> None:
        self.own = own or os.getpid()
        self.seconds: Counter[str] = Counter()
        self.foreign: Counter[str] = Counter()
        self._last = _processes()
        self._began = self._at = time.monotonic()

    def sample(self) -> float:
        """Account for the time since the last sample; returns the foreign share of one core in it."""
        table = _processes()
        now = time.monotonic()
        foreign = 0.0
        for pid, (_, name, used, start) in table.items():
            before = self._last.get(pid)
            # A process born since the last sample (or a reused pid) spent all its time in this window;
            # the start time tells a reused pid apart (a kernel worker's name changes with its work).
            delta = used - before[2] if before is not None and before[3] == start else used
            if delta <= 0:
                continue
            heap = _heap(pid, table, self.own)
            self.seconds[heap] += delta
            if heap == "foreign":
                foreign += delta
                self.foreign[name] += delta
        elapsed = max(1e-3, now - self._at)
        self._at = now
        self._last = table
        return foreign / elapsed

    def summary(self) -> dict[str, Any]:
        elapsed = max(1e-3, time.monotonic() - self._began)
        return {
            "seconds": round(elapsed, 1),
            "cpu_share": {heap: round(used / elapsed, 3) for heap, used in sorted(self.seconds.items())},
            "foreign_top": {name: round(used, 2) for name, used in self.foreign.most_common(5)},
        }


class Watch:
    """Samples the load once a second in a thread for the length of a `with` block."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.load = Load()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load-watch", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.load.sample()

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.load.sample()


def wait_for_quiet(spell: float, limit: float) -> dict[str, Any]:
    """Wait until the foreign load stayed under QUIET_SHARE for `spell` seconds, or `limit` passed."""
    load = Load()
    began = time.monotonic()
    quiet_since = began
    while True:
        time.sleep(1.0)
        now = time.monotonic()
        if load.sample() > QUIET_SHARE:
            quiet_since = now
        if now - quiet_since >= spell:
            return {"waited_s": round(now - began, 1), "quiet": True}
        if now - began >= limit:
            return {
                "waited_s": round(now - began, 1),
                "quiet": False,
                "busy": {name: round(used, 1) for name, used in load.foreign.most_common(3)},
            }
