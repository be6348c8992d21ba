"""`make demo SLURM_RELEASE=…`: the demo cluster, registered from that release's settings, answers /healthz.

scripts/demo.sh registers the demo with `register_cluster <ClusterName> --slurm-env
/run/slurm-demo[-RELEASE]/env --transport local --enforce-policy`, then seeds it; the first test does the
same against each running release.
"""

from __future__ import annotations

import io
import os
import subprocess

import pytest
from django.core.management import CommandError, call_command

from accounts.provisioning import slurm_cluster_name
from clusters import probe
from clusters.models import Cluster
from tests.conftest import REPO, slurm_env_file


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
