"""A console person's own shell on a real local Slurm: what they type, as they would type it.

`runuser -l` gives the same login shell the browser terminal starts for them on a local head
node; nothing here goes through the console. The module's functions act on the host's Slurm
(22.05); `Release.of(slurm_env)` gives the same for one release of tests/conftest.py's `slurm_env`
(a chroot's commands first on the person's PATH, its plugin and policy files under its root).
Which release the running test talks to is tests/support/slurm_commands.py's. Imports nothing of Django.
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLICY_FILE = Path("/etc/slurm/clusterra/policy.lua")
PLUGIN_FILE = Path("/etc/slurm/job_submit.lua")
HOST_BIN = "/usr/bin"
PASS_THROUGH = """-- A stand-in that lets every job through: what Slurm does with the plugin gone.
function slurm_job_submit(job_desc, part_list, submit_uid) return slurm.SUCCESS end
function slurm_job_modify(job_desc, job_rec, part_list, modify_uid) return slurm.SUCCESS end
return slurm.SUCCESS
"""


@dataclass(frozen=True)
class Typed:
    code: int
    out: str
    err: str

    @property
    def job_id(self) -> int | None:
        words = self.out.split()
        return int(words[-1]) if self.code == 0 and words and words[-1].isdigit() else None


@dataclass(frozen=True)
class Release:
    """One Slurm release on this machine: where its commands are, and its plugin and policy files."""

    bin: str = HOST_BIN
    root: str = "/"
    policy_file: Path = POLICY_FILE

    @classmethod
    def of(cls, slurm_env: Any) -> Release:
        return cls(slurm_env.bin.rstrip("/"), slurm_env.root, Path(slurm_env.policy_file))

    @property
    def plugin_file(self) -> Path:
        # slurmctld reads job_submit.lua beside its slurm.conf, which is /etc/slurm inside the release's root.
        return Path(self.root) / PLUGIN_FILE.relative_to("/")

    def command(self, name: str) -> str:
        """How root calls one of this release's Slurm commands: a chroot's by its wrapper's path.

        The host's go by name, found on the PATH, as the demo cluster's empty `slurm_bin` has the console
        call them and as a person's login shell finds them.
        """
        return name if self.bin == HOST_BIN else f"{self.bin}/{name}"

    def shell(self, user: str, command: str, *, timeout: float = 60) -> Typed:
        """`command` in `user`'s login shell, in their home directory, with this release's commands first."""
        if self.bin != HOST_BIN:
            # The login shell sets its own PATH from the profile; the release's folder goes in front of it.
            command = f"export PATH={shlex.quote(self.bin)}:$PATH\n{command}"
        done = subprocess.run(
            ["runuser", "-l", user, "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Typed(done.returncode, done.stdout, done.stderr)

    def queue(self, user: str) -> list[tuple[int, str, str]]:
        """(job id, partition, state) of every job queued or running for `user`, as root sees them."""
        out = subprocess.run(
            [self.command("squeue"), "-h", "-u", user, "-o", "%i|%P|%T"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = []
        for line in out.splitlines():
            job, partition, state = line.split("|")
            rows.append((int(job.split("_")[0]), partition, state))
        return rows

    def wait_for_state(self, job_id: int, want: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        state = ""
        while time.monotonic() < deadline:
            state = subprocess.run(
                [self.command("squeue"), "-h", "-j", str(job_id), "-o", "%T"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if state == want:
                return
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} is {state or 'gone'}, not {want}, after {seconds} s")

    def cancel_all(self, user: str) -> None:
        subprocess.run([self.command("scancel"), "-u", user], capture_output=True, check=False)

    def save_policy(self) -> bytes | None:
        """The policy snapshot (a running demo's, say) before a test or the bench publishes its own."""
        try:
            return self.policy_file.read_bytes()
        except FileNotFoundError:
            return None

    def restore_policy(self, before: bytes | None) -> None:
        """Put back what save_policy() found (renamed over the newer one, whole), or remove the newer one."""
        if before is None:
            self.policy_file.unlink(missing_ok=True)
            return
        partial = self.policy_file.with_name(self.policy_file.name + ".restore")
        partial.write_bytes(before)
        partial.chmod(0o640)
        os.chown(partial, 0, self.policy_file.parent.stat().st_gid)
        partial.replace(self.policy_file)

    @contextlib.contextmanager
    def plugin_removed(self) -> Iterator[None]:
        """The job_submit plugin replaced by a pass-through for the block, then put back as it was.

        slurmctld loads a copy whose mtime is newer than the one it has, in whole seconds; each swap is
        dated the next whole second after the file it replaces, never ahead of the clock (a file dated
        in the future would hide every later copy until the clock caught up).
        """
        original = self.plugin_file.read_bytes()
        stat = self.plugin_file.stat()
        swapped = self._install(PASS_THROUGH.encode(), stat.st_gid, after=stat.st_mtime)
        try:
            yield
        finally:
            self._install(original, stat.st_gid, after=swapped)

    def _install(self, content: bytes, gid: int, *, after: float) -> float:
        when = max(math.floor(after) + 1, math.floor(time.time()))
        time.sleep(max(0.0, when - time.time()))
        partial = self.plugin_file.with_name(self.plugin_file.name + ".swap")
        partial.write_bytes(content)
        partial.chmod(0o640)
        os.chown(partial, 0, gid)
        os.utime(partial, (when, when))
        partial.replace(self.plugin_file)
        return when


# The host's Slurm, for the tests and the bench that use only it.
HOST = Release()
shell = HOST.shell
queue = HOST.queue
wait_for_state = HOST.wait_for_state
cancel_all = HOST.cancel_all
save_policy = HOST.save_policy
restore_policy = HOST.restore_policy
plugin_removed = HOST.plugin_removed
