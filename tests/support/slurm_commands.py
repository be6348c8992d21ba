"""The Slurm release the running test talks to, for helpers that call its commands as root.

A test that runs on every release (tests/conftest.py, `every_release`) talks to a chroot's cluster as
well as the host's: squeue, sacct, scancel… of the host would answer for the wrong cluster. The autouse
fixture `_slurm_commands_of_the_release` (tests/support/jobs_fixtures.py) makes the release of each test
that uses `slurm_env` the current one (a `Release` of tests/support/slurm_shell.py); any other test gets
the host's, `Release()`.
Imports nothing of Django (nor does slurm_shell): the root conftest loads the fixture module even with
`-p no:django`.
"""

from __future__ import annotations

import re
import subprocess

from tests.support.slurm_shell import Release

_current = Release()


def use(release: Release) -> None:
    """Call the commands of `release` from now on (`Release()` for the host's)."""
    global _current
    _current = release


def command(name: str) -> str:
    """How to call the Slurm command `name` (squeue, sacctmgr, …) of the release under test."""
    return _current.command(name)


def every_release() -> list[Release]:
    """The host's Slurm and each chroot release running beside it."""
    from tests.conftest import RELEASES, read_slurm_env, slurm_env_file

    found = [Release()]
    for name in RELEASES[1:]:
        env = read_slurm_env(slurm_env_file(name))
        if env is not None:
            found.append(Release.of(env))
    return found


def on_every_release(name: str, *args: str) -> None:
    """Run the Slurm command `name` with `args` on each release that is up, as root, whatever it answers."""
    for release in every_release():
        try:
            subprocess.run([release.command(name), *args], capture_output=True, check=False, timeout=30)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue  # no Slurm on this host (a laptop), or one not answering: the others still are


_USER = re.compile(r"^UserName=\S+?\((\d+)\)", re.M)


def uids_slurm_holds() -> set[int]:
    """The UIDs each release's Slurm has a user for, Linux user or not.

    Slurm 24.11 and 26.05 keep the UID a user had when it was added, after its Linux user is gone, and
    refuse a user of another name with the same UID ("Nothing added. Make sure the accounts requested here
    have been added…"; 22.05 allows it). A test's person must not get a UID a user left behind holds.
    """
    held: set[int] = set()
    for release in every_release():
        try:
            shown = subprocess.run(
                [release.command("scontrol"), "show", "assoc_mgr", "flags=users"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        held |= {int(uid) for uid in _USER.findall(shown.stdout)}
    return held
