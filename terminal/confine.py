"""A person's local shells run in a cgroup of their own, capped in processes, memory and CPU.

A local shell runs on the host that serves the console. Without a cap, a fork bomb or a memory hog
typed into one terminal takes the web worker, the sync loop and (on the demo) slurmctld with it. Each person
gets one cgroup, shared by all their terminals, with the cluster's caps; each terminal gets a child
cgroup of that, so closing it ends everything it started, `setsid` and `nohup` included.

Three ways, picked by what the host offers:
- cgroup v2 (a Debian 12/13 server under systemd): one unified tree, `pids.max`, `memory.max`,
  `memory.swap.max`, `cpu.max`, `cpu.weight`;
- cgroup v1 (a container or a host without systemd, as on CI here): the pids, memory and cpu
  hierarchies, each with its own copy of the same tree;
- neither writable: rlimits on the shell (processes of the user, address space per process), which
  is weaker (no CPU cap, memory per process) but still stops a fork bomb.

The shell joins its cgroups before anything runs as the person: a small root shell writes its own
PID into each `cgroup.procs` and then execs the rest, so there is no moment in which a child could
be forked outside.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The console's subtree in each hierarchy. People's cgroups are its children; the console itself
# stays outside, so it keeps its CPU share whatever the shells do.
TREE = "clusterra-shells"
# All shells together weigh a quarter of a default cgroup when the CPU is contended (v1 shares are
# 1024 by default, v2 weights 100), so the console's own processes win while people's shells queue.
SHELLS_CPU_WEIGHT = 25
V1_CONTROLLERS = ("pids", "memory", "cpu")
# Joins the cgroup.procs files given before "--", then becomes the command after it. It runs as root,
# before the switch to the person; an unwritable file stops the shell from starting at all.
_JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
# A cgroup that holds a fork bomb empties within a few kill rounds (forks fail at pids.max).
_KILL_ROUNDS = 200


@dataclass(frozen=True)
class Limits:
    """What one person's shells may use together on a local head node."""

    processes: int
    memory_mb: int
    cpus: float

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


@dataclass
class Placement:
    """Where one terminal runs: the cgroup.procs files its shell joins, or the rlimits it starts under."""

    kind: str  # "v2", "v1", "rlimit", or "none" (a console not running as root: nobody else's shell)
    terminal_dirs: list[Path] = field(default_factory=list)
    rlimit_argv: list[str] = field(default_factory=list)

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` (which starts as root and switches to the person) run inside this placement."""
        if not self.terminal_dirs:
            return argv
        procs = [str(d / "cgroup.procs") for d in self.terminal_dirs]
        return ["/bin/sh", "-c", _JOIN_SCRIPT, "clusterra-confine", *procs, "--", *argv]

    def release(self) -> None:
        """Kill whatever the terminal left running and remove its cgroups (blocking; call off the loop)."""
        if not self.terminal_dirs:
            return
        procs = self.terminal_dirs[0] / "cgroup.procs"
        for _ in range(_KILL_ROUNDS):
            pids = _read_pids(procs)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        for d in self.terminal_dirs:
            _removed(d)
            # The person's own cgroup goes with their last terminal (people come and go; cgroups would
            # pile up). A terminal opening at this moment finds it gone and makes it again (place()).
            with contextlib.suppress(OSError):
                d.parent.rmdir()


def place(user: str, limits: Limits, *, root: Path = CGROUP_ROOT) -> Placement:
    """A new terminal's place under `user`'s cgroup, made (and its limits written) now."""
    if not _NAME.fullmatch(user):
        raise ValueError(f"not a POSIX user name: {user!r}")
    kind = host_kind(root)
    terminal = "t-" + secrets.token_hex(6)
    for attempt in range(3):
        try:
            if kind == "v2":
                return Placement("v2", [_made(_v2_person(root, user, limits) / terminal)])
            if kind == "v1":
                dirs = [_made(_v1_person(root / c, c, user, limits) / terminal) for c in V1_CONTROLLERS]
                return Placement("v1", dirs)
        except FileNotFoundError:
            if attempt < 2:
                continue  # the person's cgroup was removed by their last terminal closing just now
            log.warning("the cgroup of %s kept vanishing; the shell runs under rlimits only", user)
        except OSError as exc:
            # A cgroup tree that exists but refuses writes (a read-only mount in a container): the rlimits
            # still stop a fork bomb, and the log says why the shell is less confined than configured.
            log.warning("cgroups refused the shell of %s (%s); it runs under rlimits only", user, exc)
        break
    return Placement("rlimit", rlimit_argv=rlimit_argv(limits))


def rlimit_argv(limits: Limits) -> list[str]:
    """prlimit's words for a host without writable cgroups: they go after the switch to the person."""
    return [
        "prlimit",
        f"--nproc={limits.processes}:{limits.processes}",
        f"--as={limits.memory_bytes}:{limits.memory_bytes}",
        "--",
    ]


def host_kind(root: Path = CGROUP_ROOT) -> str:
    """ "v2", "v1" or "rlimit": the strongest confinement this host lets the console write."""
    if os.geteuid() != 0:
        return "rlimit"  # only root can move a process into a cgroup it did not start in
    controllers = root / "cgroup.controllers"
    if controllers.exists():
        offered = set(controllers.read_text().split())
        return "v2" if set(V1_CONTROLLERS) <= offered and os.access(root, os.W_OK) else "rlimit"
    if all(os.access(root / c / "cgroup.procs", os.W_OK) for c in V1_CONTROLLERS):
        return "v1"
    return "rlimit"


def person_dirs(user: str, *, root: Path = CGROUP_ROOT) -> list[Path]:
    """The person's cgroups (tests and the admin read what they use from here)."""
    kind = host_kind(root)
    if kind == "v2":
        return [root / TREE / user]
    if kind == "v1":
        return [root / c / TREE / user for c in V1_CONTROLLERS]
    return []


# ---- cgroup v2 --------------------------------------------------------------------------------


def _v2_person(root: Path, user: str, limits: Limits) -> Path:
    tree = root / TREE
    if not tree.exists():
        _made(tree)
        _write(root / "cgroup.subtree_control", "+pids +memory +cpu")
        _write(tree / "cpu.weight", str(SHELLS_CPU_WEIGHT))
        _write(tree / "cgroup.subtree_control", "+pids +memory +cpu")
    person = tree / user
    if not person.exists():
        _made(person)
        # Processes live only in the terminals' leaf cgroups (v2 forbids them beside children).
        _write(person / "cgroup.subtree_control", "+pids +memory +cpu")
    _write(person / "pids.max", str(limits.processes))
    _write(person / "memory.max", str(limits.memory_bytes))
    with contextlib.suppress(FileNotFoundError):  # no swap accounting: nothing to cap
        _write(person / "memory.swap.max", "0")
    period = 100_000
    _write(person / "cpu.max", f"{max(1000, int(limits.cpus * period))} {period}")
    return person


# ---- cgroup v1 --------------------------------------------------------------------------------


def _v1_person(hierarchy: Path, controller: str, user: str, limits: Limits) -> Path:
    tree = hierarchy / TREE
    if not tree.exists():
        _made(tree)
        if controller == "cpu":
            _write(tree / "cpu.shares", str(SHELLS_CPU_WEIGHT * 1024 // 100))
    person = _made(tree / user)
    if controller == "pids":
        _write(person / "pids.max", str(limits.processes))
    elif controller == "memory":
        _v1_memory(person, limits.memory_bytes)
    elif controller == "cpu":
        period = 100_000
        _write(person / "cpu.cfs_period_us", str(period))
        _write(person / "cpu.cfs_quota_us", str(max(1000, int(limits.cpus * period))))
    return person


def _v1_memory(person: Path, limit: int) -> None:
    # With swap accounting, memory+swap is capped too (else a hog swaps instead of being stopped).
    # memsw may never be below the memory limit, so a raise writes memsw first and a cut memory first.
    memory = person / "memory.limit_in_bytes"
    memsw = person / "memory.memsw.limit_in_bytes"
    raising = limit > int(memory.read_text())
    for path in [memsw, memory] if raising else [memory, memsw]:
        if path.exists():
            _write(path, str(limit))


# ---- files --------------------------------------------------------------------------------------


def _removed(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY while the last processes are reaped
            time.sleep(0.02)
    log.warning("terminal cgroup %s could not be removed", path)


def _made(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _write(path: Path, value: str) -> None:
    # cgroup files take one write each; open without truncation or creation, as the kernel expects.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_pids(procs: Path) -> list[int]:
    try:
        return [int(line) for line in procs.read_text().split()]
    except FileNotFoundError:
        return []
