"""Shared fixtures: the real parts the suite talks to, and how their absence is reported.

In CI (CI=true) a missing part fails the test that needs it; on a newcomer's
laptop the test skips with a one-line reason instead.

Where a test goes: tests/<app>/ for the app it exercises (access, accounts, audit, clusters, jobs,
terminal, site for clusterra_site, cli for clusterra_cli), browser/ for Playwright, faults/ for parts
failing under the console, security/ for attacks and hardening. Fakes, emulators and helpers live in
tests/support/. A fixture used by one folder goes into that folder's conftest.py; one used by several
goes here, or into a tests/support/*_fixtures.py module loaded below. Test modules import helpers,
never fixtures, and have no `pytest_plugins` of their own.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

# Fixture modules several folders use. Each imports Django only inside its fixtures, so protocol-only
# tests still collect with `-p no:django`.
pytest_plugins = [
    "tests.support.fixtures_idp",
    "tests.support.jobs_fixtures",
    "tests.support.demo_fixtures",
    "tests.support.headnode_fixtures",
]

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SLURM_ENV_FILE = Path(os.environ.get("SLURM_DEMO_ENV", "/run/slurm-demo/env"))


def require(available: bool, reason: str) -> None:
    """Skip (laptop) or fail (CI) a test whose real part is missing."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _unhashed_static_files(request):
    """Pages render without `collectstatic`: the hashed manifest is a production concern."""
    if not request.config.pluginmanager.hasplugin("django"):
        return  # protocol-only tests run with -p no:django
    settings = request.getfixturevalue("settings")
    settings.STORAGES = settings.STORAGES | {
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    }


@pytest.fixture(scope="session", autouse=True)
def _empty_cache_each_run(request):
    """Each run starts with no sign-in throttle counters, as it did when they lived in one process.

    With REDIS_URL they are in Redis and would outlast the run: a test's one wrong password, run
    six times in five minutes, would lock its user name out of the seventh run.
    """
    if not request.config.pluginmanager.hasplugin("django"):
        return
    from django.core.cache import cache

    cache.clear()


@dataclass(frozen=True)
class SlurmEnv:
    url: str
    api_version: str
    key_file: Path
    cluster_name: str
    partitions: tuple[str, ...]
    users: tuple[str, ...]
    accounting: bool
    release: str = "22.05"
    # Where this release's commands are (a chroot's wrappers), and its policy file and refusal log.
    bin: str = "/usr/bin"
    root: str = "/"
    policy_file: str = "/etc/slurm/clusterra/policy.lua"
    refusal_log: str = "/var/log/slurm/clusterra-refusals.log"

    def command(self, name: str) -> str:
        """The path of one of this release's Slurm commands."""
        return f"{self.bin}/{name}"

    @property
    def key(self) -> bytes:
        return self.key_file.read_bytes()


# The Slurm releases a live test marked `every_release` runs on: the host's (scripts/slurm-up.sh) and the two
# in debootstrap chroots beside it (SLURM_RELEASE=24.11|26.05 scripts/slurm-up.sh), each its own cluster.
RELEASES = ("22.05", "24.11", "26.05")


def slurm_env_file(release: str) -> Path:
    return SLURM_ENV_FILE if release == RELEASES[0] else Path(f"/run/slurm-demo-{release}/env")


def pytest_generate_tests(metafunc):
    """A test marked `every_release` that uses the real Slurm runs once per release (ids 22.05, 24.11, …)."""
    if metafunc.definition.get_closest_marker("every_release") and "slurm_env" in metafunc.fixturenames:
        metafunc.parametrize("slurm_release", RELEASES, indirect=True, scope="session")


@pytest.fixture(scope="session")
def slurm_release(request) -> str:
    """Which Slurm release `slurm_env` is: the host's unless the test runs on every release."""
    return getattr(request, "param", RELEASES[0])


def read_slurm_env(path: Path = SLURM_ENV_FILE) -> SlurmEnv | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, _, raw = line.partition("=")
            parsed = shlex.split(raw)
            values[name.strip()] = parsed[0] if parsed else ""
    return SlurmEnv(
        url=values["SLURMRESTD_URL"],
        api_version=values.get("SLURM_API_VERSION", ""),
        key_file=Path(values["SLURM_JWT_KEY_FILE"]),
        cluster_name=values.get("SLURM_CLUSTER", "demo"),
        partitions=tuple(values.get("SLURM_PARTITIONS", "").split()),
        users=tuple(values.get("SLURM_DEMO_USERS", "").split()),
        accounting=values.get("SLURM_ACCOUNTING", "1") == "1",
        release=values.get("SLURM_RELEASE", "22.05"),
        bin=values.get("SLURM_BIN", "/usr/bin"),
        root=values.get("SLURM_ROOT", "/"),
        policy_file=values.get("SLURM_POLICY_FILE", "/etc/slurm/clusterra/policy.lua"),
        refusal_log=values.get("SLURM_REFUSAL_LOG", "/var/log/slurm/clusterra-refusals.log"),
    )


@pytest.fixture(scope="session")
def slurm_env(slurm_release) -> SlurmEnv:
    """The real single-node Slurm of `slurm_release` started by scripts/slurm-up.sh."""
    path = slurm_env_file(slurm_release)
    env = read_slurm_env(path)
    up = "" if slurm_release == RELEASES[0] else f"SLURM_RELEASE={slurm_release} "
    require(
        env is not None,
        f"real Slurm {slurm_release} not running ({path} missing): run {up}scripts/slurm-up.sh as root",
    )
    require(os.access(env.key_file, os.R_OK), f"cannot read the Slurm JWT key {env.key_file}: run as root")
    return env


@pytest.fixture
def demo_cluster(db, slurm_env):
    """The real local cluster as a registry row, the way `make demo` registers it."""
    from clusters.models import Cluster

    return Cluster.objects.create(
        slug="demo",
        name="Demo cluster",
        slurmrestd_url=slurm_env.url,
        api_version=slurm_env.api_version,
        jwt_key_source="file",
        jwt_key_ref=str(slurm_env.key_file),
        has_accounting=slurm_env.accounting,
        # The host's release is on the PATH; a chroot's commands are its wrappers.
        slurm_bin="" if slurm_env.release == RELEASES[0] else slurm_env.bin,
        policy_path=slurm_env.policy_file,
        refusal_log=slurm_env.refusal_log,
    )


@pytest_asyncio.fixture
async def _no_connection_left_open():
    """Close the database connection of the thread that ran the test's ORM calls (and the consumer's).

    For the async tests that reach the database from worker threads (terminal/, faults/, security/):
    with PostgreSQL the connection would otherwise stay open and block dropping the test database.
    A fixture that ends shells (a database write) depends on this one, so it runs before the close.
    """
    from tests.support.terminal_support import close_thread_connections

    yield
    await close_thread_connections()


# ---- figures ---------------------------------------------------------------------------------------
# The hardening and benchmark tests print one line of figures each ("faults survived: …"). pytest keeps
# a passing test's output to itself, so CI's log would never show them: they are gathered here and
# printed together at the end of the run, whatever the verbosity.
FIGURES = (
    "secrets found:",
    "bandit:",
    "routes × roles covered",  # noqa: RUF001
    "requests fuzzed:",
    "faults survived:",
    "terminals closed at once:",
    "load held:",
    "stranger's shell:",
    "stranger's job:",
    "fork bomb:",
    "policy enforced by Slurm:",
    "racing sbatch:",
    "console stopped:",
    "grant change reached Slurm",
    "second lock:",
    "requeue charged:",
    "offboarded in",
    "back-channel logout ended",
    "SCIM compliance",
    "SCIM active:false",
    "data at rest:",
    "open data folder:",
    "homes private:",
    "healthz probes:",
    "sparse output:",
    "scripts matching sbatch:",
    "make demo SLURM_RELEASE=",
    "axe:",
    "phone:",
    "sessions across workers:",
    "cross-worker offboarding:",
    "sync failover:",
    "load 1 vs 3 workers:",
    "rolling restart:",
    "shell keeper:",
    "sync rounds:",
    "backup restored:",
    "deploy kit:",
    "cfn-lint:",
    "IAM table:",
    "KMS session:",
    "per-person AWS identity:",
    "recordings to CloudWatch:",
)
_figures: list[tuple[str, str]] = []
# Per Slurm release, for the tests that run on every release: [passed, failed, skipped, seconds].
_lanes: dict[str, list[float]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    release = _release_of(report.nodeid)
    if release:
        lane = _lanes.setdefault(release, [0, 0, 0, 0.0])
        lane[3] += report.duration
        if report.when == "call" or report.outcome != "passed":
            lane[("passed", "failed", "skipped").index(report.outcome)] += 1
    if report.when != "call":
        return
    for line in report.capstdout.splitlines():
        if line.strip().startswith(FIGURES):
            _figures.append((report.nodeid, line.strip()))


def _release_of(nodeid: str) -> str:
    """The release in a test id such as test_x[24.11] (parametrised by pytest_generate_tests above)."""
    if not nodeid.endswith("]"):
        return ""
    found = [r for r in RELEASES if f"[{r}]" in nodeid or f"-{r}]" in nodeid or f"[{r}-" in nodeid]
    return found[0] if found else ""


def pytest_terminal_summary(terminalreporter) -> None:
    if _lanes:
        lanes = ", ".join(
            f"{r}: {int(p)} passed, {int(f)} failed, {int(k)} skipped in {t:.1f} s"
            for r, (p, f, k, t) in sorted(_lanes.items())
        )
        _figures.append(("tests/conftest.py", f"Slurm releases (live tests on each): {lanes}"))
    if not _figures:
        return
    terminalreporter.section("figures")
    for nodeid, line in _figures:
        terminalreporter.write_line(f"{line}    [{nodeid.split('::')[0]}]")
