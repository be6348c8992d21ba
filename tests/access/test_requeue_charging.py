"""A job that Slurm starts over is charged for every run, read from accounting as JSON.

Slurm's queue shows only a requeued job's last run; `sacct --json` has them all, and no job name
(`a|debug|COMPLETED|0:0|x`) can shift what is read from it, as it would a `sacct -P` line.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from access.models import Usage
from accounts import posix, provisioning
from accounts.models import User
from jobs import accounting, sync
from tests.conftest import require
from tests.support.fake_headnode import ct_email, free_uid_block, remove_linux_user
from tests.support.slurm_shell import Release

TRICKY_NAME = "a|debug|COMPLETED|0:0|x"


def sacct_json(job_id: int, *runs: dict) -> str:
    return json.dumps({"meta": {}, "errors": [], "jobs": list(runs)})


def run_entry(job_id: int, word: str, start: int, end: int, cpus: int, **extra) -> dict:
    return {
        "job_id": job_id,
        "name": TRICKY_NAME,
        "partition": "debug",
        "state": {"current": word, "reason": "None"},
        "exit_code": {"status": "SUCCESS", "return_code": 0},
        "time": {"elapsed": end - start, "start": start, "end": end, "submission": start - 1},
        "tres": {"allocated": [{"type": "cpu", "name": None, "id": 1, "count": cpus}]},
        "nodes": "localhost",
        "working_directory": "/home/x",
    } | extra


def test_every_run_is_read_in_start_order_whatever_the_name():
    text = sacct_json(
        7,
        run_entry(7, "COMPLETED", 2000, 2100, 2),
        run_entry(7, "REQUEUED", 1000, 1060, 2),
        run_entry(8, "COMPLETED", 1000, 5000, 64),
    )
    runs = accounting.parse(text, 7)
    assert [(r.state, r.elapsed_seconds, r.cpus, r.name) for r in runs] == [
        ("REQUEUED", 60, 2, TRICKY_NAME),
        ("COMPLETED", 100, 2, TRICKY_NAME),
    ]


def test_newer_shapes_are_read_too():
    """26.05's data_parser wraps numbers ({set, number}) and lists the state words."""
    wrapped = run_entry(
        9,
        "x",
        0,
        0,
        0,
        state={"current": ["COMPLETED"], "reason": "None"},
        time={
            "elapsed": 30,
            "start": {"set": True, "infinite": False, "number": 1000},
            "end": {"set": True, "infinite": False, "number": 1030},
            "submission": {"set": True, "infinite": False, "number": 999},
        },
        tres={
            "allocated": [
                {"type": "cpu", "name": "", "id": 1, "count": 4},
                {"type": "gres", "name": "gpu:a100", "id": 1001, "count": 2},
                {"type": "gres", "name": "gpumem", "id": 1002, "count": 4096},
            ]
        },
    )
    [run] = accounting.parse(sacct_json(9, wrapped), 9)
    assert (run.state, run.elapsed_seconds, run.cpus, run.gpus) == ("COMPLETED", 30, 4, 2)


def test_a_requeued_run_reads_as_requeued_in_the_newer_shape_too():
    """24.11's and 26.05's sacct write a requeued run's state as its base state and flags (seen on both)."""
    newer = {"current": ["PENDING", "REQUEUED"], "reason": "None"}
    text = sacct_json(
        7,
        run_entry(7, "", 1000, 1060, 2, state=newer),
        run_entry(7, "", 2000, 2100, 2, state={"current": ["COMPLETED"], "reason": "None"}),
    )
    assert [r.state for r in accounting.parse(text, 7)] == ["REQUEUED", "COMPLETED"]


@pytest.fixture
def release(slurm_env) -> Release:
    return Release.of(slurm_env)


@pytest.fixture
def person(db, settings, demo_cluster, release):
    require(subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() == "0", "needs root")
    start = free_uid_block()
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = start, start + 19
    someone = User.objects.create(username=ct_email(), email=ct_email())
    name = posix.ensure_account(someone).username
    provisioning.ensure_ready(someone, demo_cluster)
    yield someone
    release.cancel_all(name)
    remove_linux_user(name)


@pytest.mark.slurm
@pytest.mark.root
@pytest.mark.every_release
def test_a_requeued_job_is_charged_for_every_run(person, demo_cluster, release):
    name = person.posix_account.username
    typed = release.shell(
        name, f"sbatch --parsable --requeue -p debug -t 2 -J '{TRICKY_NAME}' --wrap 'sleep 3'"
    )
    assert typed.code == 0, typed
    job_id = int(typed.out.strip())
    release.wait_for_state(job_id, "RUNNING")
    time.sleep(1.5)
    subprocess.run([release.command("scontrol"), "requeue", str(job_id)], check=True, capture_output=True)
    release.wait_for_state(job_id, "PENDING")
    # A requeued job waits two minutes before it may start again; an operator may let it go at once,
    # once slurmd has finished killing the first run (a launch before that fails at once).
    time.sleep(3)
    let_go = [release.command("scontrol"), "update", f"jobid={job_id}", "StartTime=now"]
    subprocess.run(let_go, check=True, capture_output=True)

    entry = None
    deadline = time.monotonic() + 90
    while entry is None and time.monotonic() < deadline:
        sync.sync_once()
        entry = Usage.objects.filter(cluster=demo_cluster, job_id=job_id, state=Usage.State.SETTLED).first()
        if entry is None:
            time.sleep(1)
    assert entry is not None, "the requeued job was never settled"

    runs = accounting.runs(demo_cluster, name, job_id)
    assert len(runs) == 2
    assert [r.state for r in runs] == ["REQUEUED", "COMPLETED"]
    charged = sum(r.elapsed_seconds * (r.cpus or 1) for r in runs) / 3600
    assert entry.used_cpu_hours == pytest.approx(charged)
    assert entry.used_cpu_hours > runs[-1].elapsed_seconds * (runs[-1].cpus or 1) / 3600
    assert entry.elapsed_seconds == sum(r.elapsed_seconds for r in runs)
    print(f"requeue charged: 2 runs, {entry.elapsed_seconds} s in all, for a job named {TRICKY_NAME!r}")
