"""A console person's own shell on the real local Slurm: what they type, as they would type it.

`runuser -l` gives the same login shell the browser terminal starts for them on a local head
node; nothing here goes through the console.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

POLICY_FILE = Path("/etc/slurm/clusterra/policy.lua")


@dataclass(frozen=True)
class Typed:
    code: int
    out: str
    err: str

    @property
    def job_id(self) -> int | None:
        words = self.out.split()
        return int(words[-1]) if self.code == 0 and words and words[-1].isdigit() else None


def shell(user: str, command: str, *, timeout: float = 60) -> Typed:
    """`command` in `user`'s login shell, in their home directory."""
    done = subprocess.run(
        ["runuser", "-l", user, "-c", command], capture_output=True, text=True, timeout=timeout, check=False
    )
    return Typed(done.returncode, done.stdout, done.stderr)


def queue(user: str) -> list[tuple[int, str, str]]:
    """(job id, partition, state) of every job queued or running for `user`, as root sees them."""
    out = subprocess.run(
        ["squeue", "-h", "-u", user, "-o", "%i|%P|%T"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        job, partition, state = line.split("|")
        rows.append((int(job.split("_")[0]), partition, state))
    return rows


def wait_for_state(job_id: int, want: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    state = ""
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if state == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {state or 'gone'}, not {want}, after {seconds} s")


def save_policy() -> bytes | None:
    """The machine's policy snapshot (a running demo's, say) before a test or the bench publishes its own."""
    try:
        return POLICY_FILE.read_bytes()
    except FileNotFoundError:
        return None


def restore_policy(before: bytes | None) -> None:
    """Put back what save_policy() found (renamed over the newer one, whole), or remove the newer one."""
    if before is None:
        POLICY_FILE.unlink(missing_ok=True)
        return
    partial = POLICY_FILE.with_name(POLICY_FILE.name + ".restore")
    partial.write_bytes(before)
    partial.chmod(0o640)
    os.chown(partial, 0, POLICY_FILE.parent.stat().st_gid)
    partial.replace(POLICY_FILE)


def cancel_all(user: str) -> None:
    subprocess.run(["scancel", "-u", user], capture_output=True, check=False)


PLUGIN_FILE = Path("/etc/slurm/job_submit.lua")
PASS_THROUGH = """-- A stand-in that lets every job through: what Slurm does with the plugin gone.
function slurm_job_submit(job_desc, part_list, submit_uid) return slurm.SUCCESS end
function slurm_job_modify(job_desc, job_rec, part_list, modify_uid) return slurm.SUCCESS end
return slurm.SUCCESS
"""


@contextlib.contextmanager
def plugin_removed() -> Iterator[None]:
    """The job_submit plugin replaced by a pass-through for the block, then put back as it was.

    slurmctld loads a copy whose mtime is newer than the one it has, in whole seconds; each swap is
    dated the next whole second after the file it replaces, never ahead of the clock (a file dated
    in the future would hide every later copy until the clock caught up).
    """
    original = PLUGIN_FILE.read_bytes()
    stat = PLUGIN_FILE.stat()
    swapped = _install(PASS_THROUGH.encode(), stat.st_gid, after=stat.st_mtime)
    try:
        yield
    finally:
        _install(original, stat.st_gid, after=swapped)


def _install(content: bytes, gid: int, *, after: float) -> float:
    when = max(math.floor(after) + 1, math.floor(time.time()))
    time.sleep(max(0.0, when - time.time()))
    partial = PLUGIN_FILE.with_name(PLUGIN_FILE.name + ".swap")
    partial.write_bytes(content)
    partial.chmod(0o640)
    os.chown(partial, 0, gid)
    os.utime(partial, (when, when))
    partial.replace(PLUGIN_FILE)
    return when
