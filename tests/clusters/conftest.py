"""For the tests against the real slurmrestd: tokens signed with its key, clients, and job clean-up."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import jwt
import pytest

from clusters.slurm import SlurmClient, SlurmError


@pytest.fixture(scope="session")
def slurm(slurm_env):
    """The running demo cluster (tests/conftest.py skips, or fails in CI, when it is not up)."""
    return slurm_env


@pytest.fixture(scope="session")
def mint(slurm) -> Callable[..., str]:
    """An HS256 token the way `scontrol token` makes one: iat, exp and sun."""
    key = slurm.key

    def mint(user: str, *, lifetime: int = 600, signing_key: bytes | None = None) -> str:
        now = int(time.time())
        claims = {"iat": now, "exp": now + lifetime, "sun": user}
        return jwt.encode(claims, signing_key or key, algorithm="HS256")

    return mint


@pytest.fixture
def as_user(slurm, mint) -> Callable[..., SlurmClient]:
    """A client acting as one Linux user; the API version is detected unless given."""

    def as_user(user: str, *, token: str | None = None, api_version: str | None = None) -> SlurmClient:
        return SlurmClient(slurm.url, user_name=user, token=token or mint(user), api_version=api_version)

    return as_user


@pytest.fixture
def cleanup(as_user) -> Iterator[Callable[[str, int], int]]:
    """Register (owner, job id) to have the job cancelled after the test, whatever its outcome."""
    jobs: list[tuple[str, int]] = []

    def register(owner: str, job_id: int) -> int:
        jobs.append((owner, job_id))
        return job_id

    yield register
    for owner, job_id in jobs:
        with contextlib.suppress(SlurmError):
            as_user(owner).cancel(job_id)
