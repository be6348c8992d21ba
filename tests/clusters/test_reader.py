"""clusters.reader: the console's long-lived reader, reading as a person with the kernel's own checks.

jobs/test_jobs_scripts.py checks every sentence of a script read through it; these check the reader
itself: it is one process for many reads, it never reads as root, a dead one is replaced, and a
person's shell cannot reach it.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from clusters import reader
from tests.conftest import require

NOBODY = 65534


@pytest.fixture(autouse=True)
def _fresh_readers():
    require(reader.available(), "needs root on x86_64 or aarch64")
    reader.stop_all()
    yield
    reader.stop_all()


def _pids() -> set[int]:
    return {r.process.pid for r in reader._idle}


def test_many_reads_use_one_process_and_the_persons_permissions():
    for _ in range(20):
        code, out, _ = reader.read(NOBODY, NOBODY, [NOBODY], "/etc/hostname", 100, timeout=5)
        assert code == 0
        assert out.startswith(b"/etc/hostname\x00")
    assert len(_pids()) == 1
    # Root's overrides are gone while it reads as someone else: /etc/shadow is 0640 root:shadow.
    assert reader.read(NOBODY, NOBODY, [NOBODY], "/etc/shadow", 100, timeout=5)[0] == 5
    # ... and back for nothing else: the same reader still answers the next person correctly.
    assert reader.read(NOBODY, NOBODY, [NOBODY], "/etc/hostname", 100, timeout=5)[0] == 0
    assert reader.enter(NOBODY, NOBODY, [NOBODY], "/root", timeout=5) == 5


def test_it_never_reads_as_root():
    with pytest.raises(reader.ReaderUnavailable, match="never reads as root"):
        reader.read(0, 0, [], "/etc/shadow", 100, timeout=5)
    with pytest.raises(reader.ReaderUnavailable, match="never reads as root"):
        reader.read(NOBODY, 0, [], "/etc/shadow", 100, timeout=5)


def test_a_dead_reader_is_replaced_and_the_read_still_answers():
    reader.read(NOBODY, NOBODY, [NOBODY], "/etc/hostname", 100, timeout=5)
    (first,) = reader._idle
    first.process.kill()
    first.process.wait()
    assert reader.read(NOBODY, NOBODY, [NOBODY], "/etc/hostname", 100, timeout=5)[0] == 0
    assert first.process.pid not in _pids()


def test_a_reader_that_cannot_start_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(reader.sys, "executable", "/nonexistent/python")
    with pytest.raises(reader.ReaderUnavailable, match="could not start"):
        reader.read(NOBODY, NOBODY, [NOBODY], "/etc/hostname", 100, timeout=5)
    assert reader._started == 0


def test_a_persons_shell_cannot_reach_it():
    reader.read(NOBODY, NOBODY, [NOBODY], "/etc/hostname", 100, timeout=5)
    (pid,) = _pids()
    # Beyond stdin, stdout (/dev/null) and stderr (the console's log), its only way in is an unnamed
    # socket: no path a shell could connect to ...
    links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd") if int(fd) > 2]
    assert links
    assert all(link.startswith("socket:") for link in links), links
    # ... which someone else cannot open through /proc either (where /proc hides others' processes,
    # they do not even see it).
    done = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "ls", f"/proc/{pid}/fd"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "Permission denied" in done.stderr or "No such file or directory" in done.stderr, done.stderr
