"""The slurmrestd floor: plain HTTP with a pre-minted JWT and no console code; the bench's parking partition.

Everything the benchmarks submit goes to PARKING, a partition this module creates DOWN for the
length of the run: Slurm queues jobs there and never starts them, so submitting hundreds of jobs
costs no CPU on the node and cannot take it from anyone else's jobs. It is deleted at the end,
after every job in it was cancelled.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests

ENV_FILE = Path("/run/slurm-demo/env")
PARKING = "clusterra-bench"
# scancel takes job ids as arguments; this many keeps each command line well under ARG_MAX.
CANCEL_CHUNK = 1000
# Long enough for the longest run; a benchmark token never leaves this process.
TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class SlurmSite:
    """What scripts/slurm-up.sh wrote about the running cluster."""

    url: str
    api_version: str
    key_file: Path
    cluster: str
    release: str = "22.05"
    # Where the release's commands are ("" on the host: the PATH), and its job_submit plugin's files.
    bin: str = ""
    root: str = "/"
    policy_file: str = "/etc/slurm/clusterra/policy.lua"
    refusal_log: str = "/var/log/slurm/clusterra-refusals.log"

    @classmethod
    def read(cls, path: Path = ENV_FILE) -> SlurmSite:
        values: dict[str, str] = {}
        for line in path.read_text().splitlines():
            name, sep, raw = line.partition("=")
            if sep and not name.lstrip().startswith("#"):
                words = shlex.split(raw)
                values[name.strip()] = words[0] if words else ""
        release = values.get("SLURM_RELEASE") or "22.05"
        return cls(
            url=values["SLURMRESTD_URL"].rstrip("/"),
            api_version=values.get("SLURM_API_VERSION") or "v0.0.38",
            key_file=Path(values["SLURM_JWT_KEY_FILE"]),
            cluster=values.get("SLURM_CLUSTER", "demo"),
            release=release,
            bin="" if release == "22.05" else values.get("SLURM_BIN", ""),
            root=values.get("SLURM_ROOT") or "/",
            policy_file=values.get("SLURM_POLICY_FILE") or cls.policy_file,
            refusal_log=values.get("SLURM_REFUSAL_LOG") or cls.refusal_log,
        )


class RawSlurm:
    """slurmrestd as one POSIX user with one token minted up front: what a script with curl would do."""

    def __init__(self, site: SlurmSite, user: str) -> None:
        self.site = site
        self.user = user
        now = int(time.time())
        token = jwt.encode(
            {"iat": now, "exp": now + TOKEN_SECONDS, "sun": user},
            site.key_file.read_bytes(),
            algorithm="HS256",
        )
        # v0.0.38 wants both headers (22.05 answers 401 to a token alone).
        self.headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token}
        self.prefix = f"{site.url}/slurm/{site.api_version}"
        self._local = threading.local()

    def _session(self) -> requests.Session:
        # One keep-alive connection per thread, as the console's own client keeps one.
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
            session.headers.update(self.headers)
        return session

    def submit(self, body: dict[str, Any]) -> int:
        response = self._session().post(f"{self.prefix}/job/submit", json=body, timeout=30)
        data = response.json()
        if response.status_code != 200 or not data.get("job_id"):
            raise RuntimeError(f"raw submit refused ({response.status_code}): {data.get('errors')}")
        return int(data["job_id"])

    def jobs(self) -> tuple[int, int]:
        """GET /jobs, parsed as a client must: (jobs listed, bytes received)."""
        response = self._session().get(f"{self.prefix}/jobs", timeout=120)
        response.raise_for_status()
        return len(response.json().get("jobs") or []), len(response.content)

    def ping(self) -> dict[str, Any]:
        response = self._session().get(f"{self.prefix}/ping", timeout=10)
        response.raise_for_status()
        return response.json()

    def submit_many(self, body: dict[str, Any], count: int, concurrency: int = 4) -> list[int]:
        """`count` copies of one job, a few at a time: slurmctld takes them about as fast as it can."""
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(lambda _: self.submit(body), range(count)))

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


def job_body(
    script: str, *, name: str, workdir: str, time_limit: int = 5, hold: bool = False
) -> dict[str, Any]:
    """The submit body the console's own adapter would send for the same job (sbatch long options)."""
    job: dict[str, Any] = {
        "name": name,
        "partition": PARKING,
        "time_limit": time_limit,
        "current_working_directory": workdir,
        "environment": {"PATH": "/usr/local/bin:/usr/bin:/bin"},
        "nodes": [1, 1],
        "cpus_per_task": 1,
        "get_user_environment": "1",
    }
    if hold:
        job["hold"] = True
    return {"script": script, "job": job}


def _command(bin_dir: str, name: str) -> str:
    """A Slurm command of the host ("": on the PATH) or of the release whose commands are in `bin_dir`."""
    return f"{bin_dir.rstrip('/')}/{name}" if bin_dir else name


def _run(
    bin_dir: str, name: str, *args: str, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    # A chroot release's wrappers want a working directory the chroot shares (/tmp or /home).
    return subprocess.run(
        [_command(bin_dir, name), *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        cwd="/tmp",
    )


def _scontrol(*args: str, check: bool = True, bin_dir: str = "") -> subprocess.CompletedProcess[str]:
    return _run(bin_dir, "scontrol", *args, check=check)


def create_parking(bin_dir: str = "") -> None:
    """The DOWN partition every benchmark job goes to; one left by an interrupted run is reused."""
    shown = _scontrol("show", "partition", PARKING, check=False, bin_dir=bin_dir)
    if shown.returncode == 0:
        _scontrol("update", f"PartitionName={PARKING}", "State=DOWN", bin_dir=bin_dir)
        return
    _scontrol(
        "create", f"PartitionName={PARKING}", "Nodes=ALL", "State=DOWN", "MaxTime=INFINITE", bin_dir=bin_dir
    )


def cancel(job_ids: Iterable[int], bin_dir: str = "") -> None:
    """Cancel these jobs (as root, so whoever owns them), a thousand ids per scancel."""
    ids = [str(i) for i in job_ids]
    for start in range(0, len(ids), CANCEL_CHUNK):
        _run(bin_dir, "scancel", *ids[start : start + CANCEL_CHUNK], timeout=120)


def parked_jobs(bin_dir: str = "") -> list[int]:
    """Ids of every job still queued in the parking partition, whoever submitted it."""
    listed = _run(bin_dir, "squeue", "-h", "-a", "-p", PARKING, "-t", "PD,R,S,CG,CF", "-o", "%i", timeout=120)
    return [int(word) for word in listed.stdout.split() if word.isdigit()]


def remove_parking(submitted: Sequence[int] = (), bin_dir: str = "") -> int:
    """Cancel what this run submitted and anything else still parked, then delete the partition."""
    cancel(submitted, bin_dir)
    # A job submitted by an interrupted request (whose id never came back) is caught here.
    left = parked_jobs(bin_dir)
    cancel(left, bin_dir)
    with contextlib.suppress(subprocess.SubprocessError):
        _scontrol("delete", f"PartitionName={PARKING}", check=False, bin_dir=bin_dir)
    return len(left)


def slurm_release(bin_dir: str = "") -> str:
    """The Slurm release the cluster runs, from `sinfo --version`."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return _run(bin_dir, "sinfo", "--version", timeout=10).stdout.strip()
    return "unknown"
