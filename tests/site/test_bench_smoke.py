"""The benchmarks' smoke mode runs end to end, so `make bench` never rots. Not a timed test: no thresholds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, SLURM_ENV_FILE, require

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.root]

ROWS = {
    1: "submit",
    2: "queue",
    3: "terminal echo",
    4: "terminal fan-out",
    5: "policy",
    6: "job_submit plugin",
    7: "submit on each release",
    8: "mixed load",
}


def _postgres_answers() -> bool:
    url = os.environ.get("BENCH_DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/postgres"
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    require(os.geteuid() == 0, "the benchmarks need root (a Linux user, login shells, a Slurm partition)")
    require(
        SLURM_ENV_FILE.exists(), f"real Slurm not running ({SLURM_ENV_FILE} missing): run scripts/slurm-up.sh"
    )
    require(bool(shutil.which("runuser") and shutil.which("setsid")), "needs runuser and setsid (util-linux)")
    require(_postgres_answers(), "PostgreSQL on 127.0.0.1:5432 does not answer (set BENCH_DATABASE_URL)")
    results = tmp_path_factory.mktemp("bench-results")
    # A full `make bench` on the same machine holds the benchmarks' lock; the smoke run waits for it.
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--results-dir", str(results), "--wait-lock", "1800"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    return done, results


def test_it_prints_every_row(smoke_run):
    done, _ = smoke_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    keys = {line.split()[0] for line in lines if line[:1].isdigit()}
    for number in ROWS:
        assert any(key.startswith(str(number)) for key in keys), f"row {number} missing from:\n{done.stdout}"
    assert "FAILED" not in done.stdout


def test_it_writes_well_formed_json_with_the_machine(smoke_run):
    _, results = smoke_run
    files = list(results.glob("smoke-*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["mode"] == "smoke"
    machine = data["machine"]
    described = (
        "cpu_model",
        "cpus",
        "memory_bytes",
        "python",
        "django",
        "slurm",
        "database",
        "channel_layer",
    )
    for key in described:
        assert machine[key], key
    assert len(machine["git_commit"]) == 40
    assert {row["number"]: row["name"] for row in data["rows"]} == ROWS
    for row in data["rows"]:
        assert row["error"] == ""
        assert row["measurements"], row["name"]
        for measurement in row["measurements"]:
            for side in ("console", "baseline"):
                summary = measurement[side]
                assert summary["n"] > 0
                assert 0 < summary["median_ms"] <= summary["p99_ms"]
            assert measurement["ratio_median"] > 0
