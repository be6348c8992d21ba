"""`make demo SLURM_RELEASE=…`: the demo cluster, registered from that release's settings, answers /healthz.

scripts/demo.sh registers the demo with `register_cluster <ClusterName> --slurm-env
/run/slurm-demo[-RELEASE]/env --transport local --enforce-policy`, then seeds it; the first test does the
same against each running release, and the last runs `make demo SLURM_RELEASE=26.05` itself, as a newcomer
would, until its administrator sees that cluster healthy on /healthz.
"""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from django.core.management import CommandError, call_command

from accounts.provisioning import slurm_cluster_name
from clusters import probe
from clusters.models import Cluster
from tests.conftest import REPO, require, slurm_env_file
from tests.support.confinement import table_kept


@pytest.fixture(autouse=True)
def _no_recent_probes(monkeypatch):
    monkeypatch.setattr(probe, "_recent", {})


def register(env_file, slug: str, **options) -> str:
    out = io.StringIO()
    call_command(
        "register_cluster",
        slug,
        name="Demo cluster",
        slurm_env=env_file,
        transport="local",
        enforce_policy=True,
        stdout=out,
        **options,
    )
    return out.getvalue()


@pytest.mark.slurm
@pytest.mark.every_release
@pytest.mark.django_db
def test_the_demo_registered_from_a_releases_settings_answers_healthz(
    client, admin_client, slurm_env, slurm_release
):
    # demo.sh names the demo cluster after the release's ClusterName: demo, demo2411, demo2605.
    slug = slurm_env.cluster_name
    said = register(slurm_env_file(slurm_release), slug)
    call_command("seed_demo", cluster=slug, stdout=io.StringIO())

    cluster = Cluster.objects.get(slug=slug)
    assert (cluster.slurmrestd_url, cluster.api_version, cluster.jwt_key_ref) == (
        slurm_env.url,
        slurm_env.api_version,
        str(slurm_env.key_file),
    )
    assert (cluster.slurm_bin, cluster.policy_path, cluster.refusal_log) == (
        slurm_env.bin,
        slurm_env.policy_file,
        slurm_env.refusal_log,
    )
    assert (cluster.has_accounting, cluster.enforce_policy, cluster.transport) == (
        slurm_env.accounting,
        True,
        "local",
    )
    assert f"on Slurm {slurm_release}" in said
    # The head-node commands go to that release's Slurm, not the host's (whose ClusterName is demo).
    assert slurm_cluster_name(cluster) == slurm_env.cluster_name

    r = admin_client.get("/healthz")
    assert r.status_code == 200
    health = r.json()["clusters"][slug]
    assert health["ok"] is True, health["detail"]
    assert f"slurmrestd {slurm_env.api_version} on Slurm {slurm_release}" in health["detail"]
    assert client.get("/healthz").json() == {"ok": True, "degraded": []}


@pytest.mark.django_db
def test_given_options_win_over_the_settings_file_and_left_out_ones_keep_the_clusters(tmp_path):
    env_file = tmp_path / "env"
    env_file.write_text(
        "SLURMRESTD_URL=http://127.0.0.1:9\nSLURM_API_VERSION=v0.0.42\nSLURM_JWT_KEY_FILE=/k\n"
        'SLURM_PARTITIONS="cpu gpu"\nSLURM_ACCOUNTING=0\nSLURM_BIN=/opt/slurm/bin\n'
    )
    register(env_file, "c1", no_check=True, api_version="v0.0.40", refusal_log="/var/log/r.log")

    cluster = Cluster.objects.get(slug="c1")
    assert (cluster.slurmrestd_url, cluster.api_version, cluster.jwt_key_ref, cluster.has_accounting) == (
        "http://127.0.0.1:9",
        "v0.0.40",
        "/k",
        False,
    )
    # No SLURM_POLICY_FILE line: the model's default stays.
    assert (cluster.slurm_bin, cluster.policy_path, cluster.refusal_log) == (
        "/opt/slurm/bin",
        "/etc/slurm/clusterra/policy.lua",
        "/var/log/r.log",
    )


@pytest.mark.django_db
def test_a_missing_or_broken_settings_file_is_named(tmp_path):
    with pytest.raises(CommandError, match=r"--slurm-env .*/nowhere: cannot read it"):
        register(tmp_path / "nowhere", "c1", no_check=True)
    broken = tmp_path / "env"
    broken.write_text("SLURMRESTD_URL=http://127.0.0.1:9\nSLURM_BIN=/a /b\n")
    with pytest.raises(CommandError, match="line 2: not a NAME=VALUE line"):
        register(broken, "c1", no_check=True)
    assert not Cluster.objects.exists()


def test_demo_sh_names_the_releases_it_serves_before_starting_anything():
    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=REPO,
        env=os.environ | {"SLURM_RELEASE": "25.11", "CLUSTERRA_PORT": "9"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == "SLURM_RELEASE must be 22.05 (the default), 24.11 or 26.05, not '25.11'."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_healthz(url: str, demo: subprocess.Popen, log: Path, timeout: float) -> float:
    """Seconds until `url`/healthz answers; fails with the demo's own words if it ends or stalls first."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if demo.poll() is not None:
            pytest.fail(f"make demo ended with status {demo.returncode} first:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"make demo did not answer /healthz in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _staff_health(url: str, password: str) -> dict:
    """/healthz as the demo's administrator sees it, signed in through the admin's own login form."""
    with requests.Session() as browser:
        form = browser.get(f"{url}/admin/login/", timeout=10)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)[1]
        signed_in = browser.post(
            f"{url}/admin/login/?next=/admin/",
            data={"csrfmiddlewaretoken": token, "username": "admin", "password": password},
            headers={"Referer": f"{url}/admin/login/"},
            timeout=10,
        )
        assert signed_in.url == f"{url}/admin/", "the printed administrator password did not sign in"
        return browser.get(f"{url}/healthz", timeout=30).json()


@pytest.mark.slurm
def test_make_demo_on_slurm_26_05_serves_that_release_until_ctrl_c(tmp_path):
    """The README's `make demo SLURM_RELEASE=26.05` run whole, as a newcomer would (SQLite, no Redis)."""
    require(os.geteuid() == 0, "make demo runs the real Slurm and needs root")
    env_file = slurm_env_file("26.05")
    was_up = env_file.exists()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    log = tmp_path / "demo.log"
    newcomer = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    newcomer |= {"SLURM_RELEASE": "26.05", "CLUSTERRA_PORT": str(port), "CLUSTERRA_DATA_DIR": str(data)}
    # The demo confines shells for its own clusters only: the suite's table comes back after it.
    with table_kept(), log.open("w") as out:
        demo = subprocess.Popen(
            ["make", "demo"],
            cwd=REPO,
            env=newcomer,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            seconds = _wait_for_healthz(url, demo, log, timeout=240)
            assert requests.get(f"{url}/healthz", timeout=10).json() == {"ok": True, "degraded": []}
            health = _staff_health(url, (data / "admin.password").read_text().strip())
            said = log.read_text()
        finally:
            # Ctrl-C, as the README says to stop it: to the whole group, as a terminal would send it.
            os.killpg(demo.pid, signal.SIGINT)
            try:
                status = demo.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
                raise

    assert "Cluster demo2605: Slurm 26.05, slurmrestd http://127.0.0.1:" in said
    assert f"Clusterra is running on {url}/" in said
    cluster = health["clusters"]["demo2605"]
    assert cluster["ok"] is True, cluster["detail"]
    assert "on Slurm 26.05" in cluster["detail"]
    # make ends itself by the SIGINT it got, as it should for the shell (-2); the script under it ends with 0.
    assert status in (0, -signal.SIGINT), log.read_text()[-3000:]
    assert "Stopping the console..." in log.read_text()
    assert "stopping the rest" not in log.read_text()
    # Nothing it started is left: not the web server (its port is free), not the loops.
    with pytest.raises(ProcessLookupError):
        os.killpg(demo.pid, 0)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    print(
        f"make demo SLURM_RELEASE=26.05: /healthz answered in {seconds:.1f} s, cluster demo2605 healthy "
        f"({cluster['detail'].rstrip('.')}); Ctrl-C stopped it cleanly"
    )
    # A Slurm that was up before the demo is someone else's: Ctrl-C leaves it running.
    assert env_file.exists() == was_up
