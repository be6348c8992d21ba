"""Two Slurm releases as two clusters of one console: one person submits to both through /v1.

The host's Slurm 22.05 is cluster `demo`, the chroot's 26.05 (scripts/slurm-release.sh) cluster `demo2605`,
registered as make demo registers a release (its commands folder, policy file and refusal log). Each job must
land on its own Slurm, the lists and /healthz must show both clusters, and one sync loop must follow both.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time

import pytest

from access.models import Grant
from accounts import provisioning
from clusters.models import Cluster
from jobs.models import JobRecord
from tests.conftest import SlurmEnv, read_slurm_env, require, slurm_env_file
from tests.support.jobs_support import sync_until

pytestmark = [pytest.mark.slurm, pytest.mark.root, pytest.mark.django_db]

SECOND = "26.05"


def run(env: SlurmEnv, command: str, *args: str) -> str:
    """One of that release's Slurm commands, as root; its output (an error is an answer here too)."""
    done = subprocess.run(
        [env.command(command), *args], capture_output=True, text=True, timeout=60, check=False, cwd="/tmp"
    )
    return done.stdout + done.stderr


@pytest.fixture
def second_env() -> SlurmEnv:
    path = slurm_env_file(SECOND)
    env = read_slurm_env(path)
    require(
        env is not None,
        f"real Slurm {SECOND} not running ({path} missing): "
        f"run SLURM_RELEASE={SECOND} scripts/slurm-up.sh as root",
    )
    return env


@pytest.fixture
def second(demo_cluster, second_env) -> Cluster:
    """Slurm 26.05 as the console's second cluster, under its own slug (its ClusterName)."""
    return Cluster.objects.create(
        slug=second_env.cluster_name,
        name=f"Demo cluster (Slurm {SECOND})",
        slurmrestd_url=second_env.url,
        api_version=second_env.api_version,
        jwt_key_ref=str(second_env.key_file),
        has_accounting=second_env.accounting,
        slurm_bin=second_env.bin,
        policy_path=second_env.policy_file,
        refusal_log=second_env.refusal_log,
    )


def forget_on(env: SlurmEnv, name: str) -> None:
    """The person's jobs and association on that release gone (the people fixture cleans the host's only)."""
    run(env, "scancel", "-u", name)
    deadline = time.monotonic() + 15
    while run(env, "squeue", "-h", "-u", name).strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    run(env, "sacctmgr", "-i", "delete", "user", f"name={name}", f"cluster={env.cluster_name}")


@pytest.fixture
def ada(people, second_env):
    """A person provisioned on the host's cluster, with no association on 26.05 yet (a pooled name may have
    one left by an earlier test there)."""
    person = people()
    forget_on(second_env, person.name)
    yield person
    forget_on(second_env, person.name)


def test_one_person_submits_to_two_releases_and_each_job_runs_on_its_own_slurm(
    client, admin_client, ada, demo_cluster, second, slurm_env, second_env
):
    assert ada.name not in run(second_env, "sacctmgr", "-n", "-P", "show", "assoc", f"user={ada.name}")
    provisioning.ensure_ready(ada.user, second)
    Grant.objects.create(cluster=second, user=ada.user, all_partitions=True)
    # Provisioning made the association on 26.05's own slurmdbd, for its own cluster only.
    shown = run(
        second_env, "sacctmgr", "-n", "-P", "show", "assoc", f"user={ada.name}", "format=cluster,account"
    )
    assert shown.split() == [f"{second.slug}|demo"], shown

    tag = secrets.token_hex(3)
    sides = {demo_cluster.slug: slurm_env, second.slug: second_env}
    submitted: dict[str, tuple[int, str]] = {}
    for slug in sides:
        # A folder each: both Slurms count job ids on their own, and two slurm-<id>.out could clash.
        folder = ada.home / slug
        folder.mkdir()
        os.chown(folder, ada.uid, ada.uid)
        ada.script(f"{slug}/job.sh", "#!/bin/sh\n#SBATCH -p debug -t 1\necho ran on $SLURM_CLUSTER_NAME\n")
        name = f"ct-two-{slug}-{tag}"
        r = client.post(
            f"/v1/clusters/{slug}/jobs",
            json.dumps(
                {"script_path": str(folder / "job.sh"), "name": name, "working_directory": str(folder)}
            ),
            content_type="application/json",
            **ada.auth,
        )
        assert r.status_code == 201, r.content
        assert r.json()["job"]["user"] == ada.name
        submitted[slug] = (r.json()["job"]["id"], name)

    # Each job is on its own release's Slurm (its scontrol knows it by name), and not on the other's.
    for slug, (job_id, name) in submitted.items():
        for other, env in sides.items():
            shown = run(env, "scontrol", "show", "job", str(job_id))
            assert (f"JobName={name}" in shown.split()) == (other == slug), (slug, other, shown)

    # One sync loop follows both clusters to the end of both jobs.
    records = {
        slug: JobRecord.objects.get(cluster__slug=slug, slurm_job_id=job_id)
        for slug, (job_id, _) in submitted.items()
    }
    for slug, record in records.items():
        record = sync_until(record, {"COMPLETED", "FAILED"})
        assert (record.state, record.exit_code, record.posix_user) == ("COMPLETED", 0, ada.name), slug

    for slug, (job_id, _) in submitted.items():
        out = client.get(f"/v1/clusters/{slug}/jobs/{job_id}/output", **ada.auth).json()
        assert out["stdout"]["text"].strip() == f"ran on {sides[slug].cluster_name}"
        listed = client.get(f"/v1/clusters/{slug}/jobs", **ada.auth).json()
        assert [j["id"] for j in listed["jobs"]] == [job_id], slug

    clusters = {c["id"] for c in client.get("/v1/clusters", **ada.auth).json()["clusters"]}
    assert clusters == {demo_cluster.slug, second.slug}
    health = admin_client.get("/healthz").json()["clusters"]
    for slug, env in sides.items():
        assert health[slug]["ok"] is True, health[slug]["detail"]
        assert f"slurmrestd {env.api_version} on Slurm {env.release}" in health[slug]["detail"]
