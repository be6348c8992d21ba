"""Row 7, submit on each Slurm release: row 1's console-against-raw submit on 22.05, 24.11 and 26.05 at once.

Each release that scripts/slurm-up.sh has up (its settings file /run/slurm-demo[-RELEASE]/env, and a
slurmrestd that answers) is a cluster of the console under test: the host's 22.05 is row 1's `demo`; 24.11
and 26.05 are registered as `make demo SLURM_RELEASE=…` registers them (slug = their ClusterName, their
commands folder, policy file and refusal log, Slurm enforcing the policy). The bench person is provisioned
on each (an association on each release's slurmdbd) and the policy published to each; every job goes to a
parking partition made on each release, as on the host. A release that is not up is skipped, with a line
that says why.

Both sides are row 1's, per release: POST /v1/clusters/<slug>/jobs through daphne, and a raw POST job/submit
to that release's slurmrestd with a token minted once and the body the console's adapter builds for that
API version (v0.0.38's and v0.0.40+'s shapes differ). The releases take turns call by call, and within
each the side that goes first alternates, so drift (a growing queue, a busy minute) hits all of them alike.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.raw_slurm import PARKING, RawSlurm, SlurmSite, create_parking, remove_parking, slurm_release
from bench.stats import Measurement, Row, Series, Target

TARGET = Target("ratio", 2.0)
# The releases in the order they are measured, each with its settings file and its line's key in the table.
RELEASES = (
    ("22.05", Path("/run/slurm-demo/env"), "7a"),
    ("24.11", Path("/run/slurm-demo-24.11/env"), "7b"),
    ("26.05", Path("/run/slurm-demo-26.05/env"), "7c"),
)
HOST_RELEASE = RELEASES[0][0]


@dataclass
class Side:
    """One release under measurement: its cluster in the console, its raw floor, and the two series."""

    release: str
    key: str
    slug: str
    site: SlurmSite
    raw: RawSlurm
    raw_body: dict[str, Any]
    console: Series
    floor: Series
    jobs: list[int]


def run(
    base_url: str,
    api_token: str,
    cast: Any,
    script_text: str,
    host_raw: RawSlurm,
    *,
    count: int,
    warmup: int,
    submitted: list[int],
) -> Row:
    """`submitted` gets the host's job ids (run.py cancels them); the other releases' are cancelled here."""
    row = Row(7, "submit on each release")
    skipped: dict[str, str] = {}
    workdir = cast.script_path.rpartition("/")[0]
    with ExitStack() as cleanup:
        sides: list[Side] = []
        for release, env_file, key in RELEASES:
            reason = "" if env_file.exists() else f"no {env_file}"
            site = None if reason else SlurmSite.read(env_file)
            raw = host_raw if release == HOST_RELEASE else None
            if site is not None and raw is None:
                raw = RawSlurm(site, cast.posix_user)
                cleanup.callback(raw.close)
                try:
                    raw.ping()
                except (requests.RequestException, ValueError) as e:
                    reason = f"its slurmrestd at {site.url} does not answer ({type(e).__name__})"
            if reason or site is None or raw is None:
                skipped[release] = reason
                message = f"row 7: Slurm {release} is not up ({reason}); skipped"
                row.remarks.append(f"note: {message}; SLURM_RELEASE={release} make slurm-up starts it")
                print(f"bench: {message}", file=sys.stderr, flush=True)
                continue
            # The host's jobs go into run.py's list (it empties the host's parking); the others' are cancelled
            # when their parking partition goes, whatever happens in between.
            jobs = submitted if release == HOST_RELEASE else []
            if release == HOST_RELEASE:
                slug = cast.local_cluster.slug
            else:
                slug = _register(site, cast, cleanup)
                cleanup.callback(remove_parking, jobs, site.bin)
                create_parking(site.bin)
            sides.append(
                Side(
                    release,
                    key,
                    slug,
                    site,
                    raw,
                    _raw_body(site, cast.posix_user, script_text, workdir),
                    Series(f"POST /v1/clusters/{slug}/jobs"),
                    Series("raw POST job/submit"),
                    jobs,
                )
            )
        if not sides:
            raise RuntimeError(
                "no Slurm release is up: " + "; ".join(f"{r}: {w}" for r, w in skipped.items())
            )
        _measure(base_url, api_token, cast.script_path, sides, count=count, warmup=warmup)
    row.measurements = [
        Measurement(
            side.key,
            f"submit on Slurm {side.release} ({side.site.api_version}): POST /v1/clusters/{side.slug}/jobs",
            side.console,
            side.floor,
            TARGET,
        )
        for side in sides
    ]
    row.info = {
        "jobs_each_side": count,
        "warmup_each_side": warmup,
        "partition": PARKING,
        "releases": {
            side.release: {
                "cluster": side.slug,
                "api_version": side.site.api_version,
                "slurm": slurm_release(side.site.bin),
                "slurmrestd": side.site.url,
            }
            for side in sides
        },
        "skipped": skipped,
    }
    return row


def _register(site: SlurmSite, cast: Any, cleanup: ExitStack) -> str:
    """The release as a cluster of the console, the person provisioned and the policy published there.

    `cleanup` puts the release's policy file back as it was. The person's association stays, as on the
    host, for the next run.
    """
    from access import snapshot
    from access.models import Grant, Quota
    from accounts.provisioning import ensure_ready
    from clusters.models import Cluster
    from tests.support.slurm_shell import Release

    # Before the cluster exists: saving it (and its grant, quota, account) publishes on the spot.
    release = Release(site.bin, site.root, Path(site.policy_file))
    before = release.save_policy()
    cleanup.callback(release.restore_policy, before)
    # The row is measured again when the machine was busy: the second time finds what the first made.
    cluster, _ = Cluster.objects.update_or_create(
        slug=site.cluster,
        defaults={
            "name": f"Demo cluster (Slurm {site.release})",
            "slurmrestd_url": site.url,
            "api_version": site.api_version,
            "jwt_key_source": Cluster.KeySource.FILE,
            "jwt_key_ref": str(site.key_file),
            "transport": Cluster.Transport.LOCAL,
            "enforce_policy": True,
            "slurm_bin": site.bin,
            "policy_path": site.policy_file,
            "refusal_log": site.refusal_log,
        },
    )
    Grant.objects.get_or_create(cluster=cluster, user=cast.person, defaults={"all_partitions": True})
    # As on row 1's cluster: every check runs (and every submit reserves) without one ever refusing.
    Quota.objects.get_or_create(
        cluster=cluster,
        user=cast.person,
        defaults={"cpu_hours": 10_000_000, "gpu_hours": 1_000_000, "max_queued_jobs": 1_000_000},
    )
    ensure_ready(cast.person, cluster)
    snapshot.publish(cluster, force=True)
    return cluster.slug


def _raw_body(site: SlurmSite, user: str, script_text: str, workdir: str) -> dict[str, Any]:
    """The body the console's adapter sends for this API version, for row 1's job."""
    from clusters.slurm import DEFAULT_PATH, JobSpec, SlurmClient

    spec = JobSpec(
        script=script_text,
        working_directory=workdir,
        environment={"PATH": DEFAULT_PATH},
        name="bench",
        partition=PARKING,
        time_limit=5,
        nodes=1,
        cpus_per_task=1,
        get_user_environment=True,
    )
    # With the version given the client asks slurmrestd nothing; the token is never sent from here.
    client = SlurmClient(site.url, user_name=user, token="-", api_version=site.api_version)
    return client.adapter.submit_body(spec)


def _measure(
    base_url: str, api_token: str, script_path: str, sides: list[Side], *, count: int, warmup: int
) -> None:
    session = requests.Session()
    session.trust_env = False
    session.headers["Authorization"] = f"Bearer {api_token}"
    request = {"script_path": script_path, "partition": PARKING, "time_limit": 5}

    def through_console(side: Side) -> Callable[[], float]:
        def submit() -> float:
            started = time.perf_counter()
            response = session.post(f"{base_url}/v1/clusters/{side.slug}/jobs", json=request, timeout=60)
            elapsed = time.perf_counter() - started
            if response.status_code != 201:
                raise RuntimeError(
                    f"the console refused the submit to {side.slug} ({response.status_code}): "
                    f"{response.text[:500]}"
                )
            side.jobs.append(int(response.json()["job"]["id"]))
            return elapsed

        return submit

    def straight_to_slurm(side: Side) -> Callable[[], float]:
        def submit() -> float:
            started = time.perf_counter()
            job_id = side.raw.submit(side.raw_body)
            elapsed = time.perf_counter() - started
            side.jobs.append(job_id)
            return elapsed

        return submit

    try:
        for index in range(warmup + count):
            for side in sides:
                console, floor = through_console(side), straight_to_slurm(side)
                # Alternate which goes first, so neither always follows the other's slurmctld work.
                if index % 2 == 0:
                    console_took, raw_took = console(), floor()
                else:
                    raw_took = floor()
                    console_took = console()
                if index >= warmup:
                    side.console.samples.append(console_took)
                    side.floor.samples.append(raw_took)
    finally:
        session.close()
