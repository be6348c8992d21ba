"""Row 6, job_submit plugin: a raw POST job/submit with the console's job_submit.lua, against a pass-through.

Slurm runs access/slurm/job_submit.lua for every job, whoever submits it and however, so what it
costs is paid by every raw submit; DESIGN.md's goal is at most 1 ms. Both sides are row 1's raw call
(the bench person, the parking partition, a token minted once); only the script slurmctld runs
differs. The pass-through still goes through slurmctld's Lua plumbing (the plugin's lock, the job
descriptor), so the difference is what the console's script itself does: re-read the snapshot's first
line, find the person, price the job, count their live jobs in `slurm.jobs` (every job slurmctld
holds: the cost grows with the whole queue, by ~2 ms per 1,000 jobs as measured) and stamp it.

slurmctld builds a fresh Lua state by itself when the file's mtime, in whole seconds, is newer than
that of the copy it loaded. So the row renames one script or the other over /etc/slurm/job_submit.lua
with an mtime a second past the previous copy's, and times them in blocks, ABBA (console, pass-through,
pass-through, console, ...), so drift hits both alike. A probe job before each block shows which script
slurmctld runs (the console's stamps each job it accepts, `AdminComment=clusterra:v1 ...`; the
pass-through stamps none) and absorbs the reload; the block's last job is checked the same way. The
console's plugin goes back in a `finally`, byte for byte from access/slurm/job_submit.lua, and is
checked again; a run killed in the middle leaves the pass-through, which the next run puts right
first (`restore_if_left`).
"""

from __future__ import annotations

import contextlib
import grp
import math
import os
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bench.raw_slurm import PARKING, RawSlurm, cancel, job_body
from bench.stats import Measurement, Row, Series, Target, percentile

SOURCE = Path(__file__).resolve().parent.parent / "access" / "slurm" / "job_submit.lua"
INSTALLED = Path("/etc/slurm/job_submit.lua")
TARGET = Target("added_ms", 1.0)
# In the pass-through's first line, so a later run knows one that a killed run left behind.
MARK = "clusterra bench pass-through"
PASS_THROUGH = f"""-- {MARK}: bench/job_submit.py's stand-in for row 6.
-- The console's plugin replaces it when the row ends. Every job passes unchanged, as with no policy
-- at all: only slurmctld's own Lua plumbing runs.

function slurm_job_submit(job_desc, part_list, submit_uid)
    return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
    return slurm.SUCCESS
end

return slurm.SUCCESS
""".encode()
# Probes before a block gives up; each one after the first dates the file a second later again.
RELOAD_TRIES = 4


def run(
    raw: RawSlurm,
    script_text: str,
    workdir: str,
    *,
    blocks: int,
    per_block: int,
    warmup: int,
    submitted: list[int],
) -> Row:
    if blocks < 2 or blocks % 2:
        raise ValueError(f"plugin_blocks must be even and at least 2, got {blocks}: each script gets half")
    # Read once: the bytes timed are the bytes put back, whatever happens to the source meanwhile.
    real = SOURCE.read_bytes()
    stamp = _stamp_of(real)
    body = job_body(script_text, name="bench-plugin", workdir=workdir, time_limit=5)
    ours: list[int] = []

    def submit() -> int:
        job_id = raw.submit(body)
        ours.append(job_id)
        submitted.append(job_id)
        return job_id

    console = Series("raw POST job/submit, console's job_submit.lua")
    floor = Series("pass-through job_submit.lua")
    info: dict[str, Any] = {
        "blocks": blocks,
        "jobs_per_block": per_block,
        "warmup_per_block": warmup,
        "partition": PARKING,
        "installed_was_the_source": _installed() == real,
        "jobs_in_slurmctld_before": _jobs_in_slurmctld(),
    }
    per_block_log: list[dict[str, Any]] = []
    info["blocks_log"] = per_block_log
    completed = False
    with _sigterm_unwinds():
        try:
            for index in range(blocks):
                with_console = index % 4 in (0, 3)
                content = real if with_console else PASS_THROUGH
                # The console's script reads every job slurmctld holds, so its cost moves with this count.
                held = _jobs_in_slurmctld()
                install(content)
                probes = _until_running(content, with_console, submit, stamp)
                for _ in range(warmup):
                    submit()
                took = []
                for _ in range(per_block):
                    started = time.perf_counter()
                    job_id = raw.submit(body)
                    took.append(time.perf_counter() - started)
                    ours.append(job_id)
                    submitted.append(job_id)
                if _stamped(ours[-1], stamp) != with_console:
                    raise RuntimeError(
                        f"{INSTALLED} changed under block {index + 1} (another copy installed meanwhile?)"
                    )
                (console if with_console else floor).samples.extend(took)
                per_block_log.append(
                    {
                        "script": "console" if with_console else "pass-through",
                        "median_ms": round(Series("", took).median * 1000, 4),
                        "jobs_in_slurmctld": held,
                        "probes": probes,
                    }
                )
            completed = True
        finally:
            info["restored_mtime"] = put_back(real)
            if completed:
                info["probes_after_restore"] = _until_running(real, True, submit, stamp)
            info["jobs_in_slurmctld_after"] = _jobs_in_slurmctld()
            # At once, as row 2 does: the rows after this one find none of its jobs pending (the
            # cancelled ones stay in slurm.jobs for MinJobAge, 60 s here).
            cancel(ours)
    measurement = Measurement("6", "job_submit.lua on a raw submit", console, floor, TARGET)
    added_p90 = (percentile(console.samples, 90) - percentile(floor.samples, 90)) * 1000
    info["added_p90_ms"] = round(added_p90, 4)
    slopes = {script: _ms_per_1000_jobs(per_block_log, script) for script in ("console", "pass-through")}
    info["block_median_ms_per_1000_jobs"] = slopes
    held = [block["jobs_in_slurmctld"] for block in per_block_log]
    row = Row(6, "job_submit plugin")
    row.measurements = [measurement]
    row.info = info
    met = {True: "met", False: "missed", None: "-"}[measurement.met]
    row.remarks = [
        f"row 6, job_submit.lua on a raw submit: console's {_ms(console.median)} median, "
        f"{_ms(percentile(console.samples, 90))} p90; pass-through {_ms(floor.median)} median, "
        f"{_ms(percentile(floor.samples, 90))} p90; the plugin adds {measurement.added_ms:+.2f} ms at the "
        f"median, {added_p90:+.2f} ms at p90 (goal <= +1 ms: {met}), with {min(held)}-{max(held)} jobs in "
        f"slurmctld"
    ]
    if slopes["console"] is not None and slopes["pass-through"] is not None:
        row.remarks.append(
            f"row 6, block medians per 1,000 jobs slurmctld holds: console's {slopes['console']:+.2f} ms, "
            f"pass-through {slopes['pass-through']:+.2f} ms"
        )
    return row


def install(content: bytes) -> int:
    """Rename `content` over slurmctld's job_submit.lua, dated a whole second past the copy it replaces.

    Returns that mtime. It is never in the future: a file dated ahead would hide the next real change
    (scripts/slurm-up.sh's, say) from slurmctld until the clock caught up, so this waits out the rest
    of the second instead.
    """
    try:
        previous = math.floor(INSTALLED.stat().st_mtime)
    except FileNotFoundError:
        previous = 0
    mtime = max(previous + 1, math.floor(time.time()))
    early = mtime - time.time()
    if early > 0:
        time.sleep(early)
    partial = INSTALLED.with_name(f".{INSTALLED.name}.bench-{os.getpid()}")
    try:
        # Mode and owner before the content: slurmctld (group slurm) never sees a file it may not read.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            os.fchown(fd, 0, grp.getgrnam("slurm").gr_gid)
            os.fchmod(fd, 0o640)
            handle.write(content)
            handle.flush()
            os.fsync(fd)
        # Dated before the rename, so no submit in between can load it under another mtime.
        os.utime(partial, (mtime, mtime))
        os.replace(partial, INSTALLED)
    finally:
        partial.unlink(missing_ok=True)
    return mtime


def put_back(real: bytes) -> int:
    """The console's plugin in place again, byte for byte and dated past what it replaces; raises if not."""
    # A signal in the middle must not leave the pass-through: it waits until the rename is done.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        replaced = INSTALLED.stat().st_mtime if INSTALLED.exists() else 0.0
        mtime = install(real)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    now = INSTALLED.stat()
    if (
        INSTALLED.read_bytes() != real
        or now.st_mtime <= replaced
        or (now.st_mode & 0o777, now.st_uid, now.st_gid) != (0o640, 0, grp.getgrnam("slurm").gr_gid)
    ):
        raise RuntimeError(f"{INSTALLED} is not the console's plugin again; copy {SOURCE} over it")
    return mtime


def restore_if_left() -> bool:
    """Put the console's plugin back if a killed run left the pass-through in its place; True if it did."""
    if MARK.encode() not in (_installed() or b""):
        return False
    put_back(SOURCE.read_bytes())
    return True


def _until_running(content: bytes, with_console: bool, probe: Callable[[], int], stamp: str) -> int:
    """Probe jobs until slurmctld runs `content`; how many it took (the first also pays for the reload)."""
    for attempt in range(1, RELOAD_TRIES + 1):
        if _stamped(probe(), stamp) == with_console:
            return attempt
        # slurmctld kept its previous script (it knew this mtime, or could not load the copy): newer again.
        install(content)
    which = "the console's" if with_console else "the pass-through"
    raise RuntimeError(
        f"slurmctld did not load {which} job_submit.lua after {RELOAD_TRIES} probes; "
        "see /var/log/slurm/slurmctld.log"
    )


def _ms_per_1000_jobs(log: list[dict[str, Any]], script: str) -> float | None:
    """How a script's block medians move with the jobs slurmctld holds (least squares); None if unknowable."""
    points = [(block["jobs_in_slurmctld"], block["median_ms"]) for block in log if block["script"] == script]
    try:
        fit = statistics.linear_regression([p[0] for p in points], [p[1] for p in points])
    except statistics.StatisticsError:
        # One block, or every block at the same count (a smoke run).
        return None
    return round(fit.slope * 1000, 4)


def _stamped(job_id: int, stamp: str) -> bool:
    """Whether the console's plugin accepted this job: it alone stamps AdminComment (users cannot)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, timeout=30, check=True
    )
    return f"AdminComment={stamp} " in shown.stdout


def _stamp_of(plugin: bytes) -> str:
    found = re.search(rb'^local STAMP = "([^"]+)"', plugin, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{SOURCE} names no STAMP; the row tells the two scripts apart by it")
    return found.group(1).decode()


def _installed() -> bytes | None:
    try:
        return INSTALLED.read_bytes()
    except FileNotFoundError:
        return None


def _jobs_in_slurmctld() -> int:
    """Every job record slurmctld holds (finished ones for MinJobAge too): what `slurm.jobs` lists."""
    listed = subprocess.run(
        ["squeue", "-h", "-a", "-t", "all", "-o", "%i"], capture_output=True, text=True, timeout=120
    )
    return len(listed.stdout.split())


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C while the pass-through may be in place: a finally puts the plugin back."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"
