"""The console under test: its database, data folder, daphne process, and the person and clusters it serves.

The console runs as in production: PostgreSQL, the Redis channel layer (when Redis answers),
DEBUG off, daphne serving HTTP and WebSockets on 127.0.0.1. Its database is fresh for every
run, cloned from a template migrated once per set of migrations, so a run never sees the rows
of another and costs no migration time when nothing changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/clusterra_bench"
# A database index of its own, so no test's channel-layer group ever reaches a benchmark's terminal.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
DATA_DIR = REPO / "data" / "bench"
# The benchmark person's Linux account: the same name and UID on every run, so a second run finds
# the user, home and Slurm association of the first one already there.
PERSON_EMAIL = "clbench@bench.invalid"
UID = 290500
SCRIPT_TEXT = """#!/bin/sh
#SBATCH --job-name=bench
#SBATCH --time=5
#SBATCH --cpus-per-task=1
echo "a benchmark job; it waits in a DOWN partition and never runs"
"""


@dataclass(frozen=True)
class Settings:
    """Where the console under test keeps its state, read from BENCH_* variables with loopback defaults."""

    database_url: str
    redis_url: str
    data_dir: Path

    @classmethod
    def from_environment(cls) -> Settings:
        database = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_DATABASE_URL
        redis = os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL)
        if redis and not _redis_answers(redis):
            # The in-memory layer still serves one daphne process; the JSON says which layer ran.
            redis = ""
        return cls(database, redis, Path(os.environ.get("BENCH_DATA_DIR", DATA_DIR)))

    def environment(self) -> dict[str, str]:
        """What both this process and daphne run with."""
        return {
            # The console's own settings, unchanged: the numbers are those of the console as deployed.
            "DJANGO_SETTINGS_MODULE": "clusterra_site.settings",
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "CLUSTERRA_DATA_DIR": str(self.data_dir),
            "CLUSTERRA_DEBUG": "0",
            "CLUSTERRA_ALLOWED_HOSTS": "127.0.0.1 localhost",
            "CLUSTERRA_UID_MIN": str(UID),
            "CLUSTERRA_UID_MAX": str(UID + 99),
            # But one: a token here sends hundreds of submits a minute, which the per-token rate limit
            # would answer 429; the rows measure the console's work, not its limit.
            "CLUSTERRA_API_RATE": "1000000/min",
            # The console's own default (a log line per audit event); BENCH_CONSOLE_LOG_LEVEL to compare.
            "CLUSTERRA_LOG_LEVEL": os.environ.get("BENCH_CONSOLE_LOG_LEVEL", "INFO"),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def _migrations_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(REPO.glob("*/migrations/*.py")):
        digest.update(str(path.relative_to(REPO)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def prepare_database(settings: Settings, python: str) -> str:
    """Drop and recreate the bench database from a migrated template; returns the template's name."""
    name = urlsplit(settings.database_url).path.lstrip("/")
    template = f"{name}_tpl_{_migrations_digest()}"
    admin = _with_database(settings.database_url, "postgres")
    with psycopg.connect(admin, autocommit=True) as db:
        existing = {row[0] for row in db.execute("SELECT datname FROM pg_database")}
        if template not in existing:
            for stale in sorted(d for d in existing if d.startswith(f"{name}_tpl_")):
                db.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(stale)))
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(template)))
            env = (
                os.environ
                | settings.environment()
                | {"DATABASE_URL": _with_database(settings.database_url, template)}
            )
            done = subprocess.run(
                [python, "manage.py", "migrate", "--noinput", "-v0"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                db.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(template)))
                raise RuntimeError(f"migrating the bench template failed:\n{done.stderr[-2000:]}")
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        db.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        )
    return template


def drop_database(settings: Settings) -> None:
    name = urlsplit(settings.database_url).path.lstrip("/")
    with psycopg.connect(_with_database(settings.database_url, "postgres"), autocommit=True) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def collect_static(settings: Settings, python: str) -> None:
    """Pages need the hashed static manifest (DEBUG is off); collected again only when sources changed."""
    manifest = settings.data_dir / "static" / "staticfiles.json"
    sources = [REPO / "static", REPO / "package-lock.json"]
    newest = max(
        (p.stat().st_mtime for root in sources for p in ([root] if root.is_file() else root.rglob("*"))),
        default=0.0,
    )
    if manifest.exists() and manifest.stat().st_mtime >= newest:
        return
    env = os.environ | settings.environment()
    subprocess.run([python, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=REPO, env=env, check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The ASGI servers the bench can run the console under (row 8 compares them); the first is the console's own
# (deploy/systemd/clusterra-web@.service): uvicorn since issue 22's fifth pass, daphne before.
SERVERS = ("uvicorn", "daphne", "daphne-v0", "granian")


def server_command(kind: str, python: str, port: int, app: str) -> list[str]:
    """How `kind` serves `app` on 127.0.0.1:port with one worker, as deploy/systemd runs each worker."""
    if kind == "daphne":
        return [python, "-m", "bench.daphne_main", "-b", "127.0.0.1", "-p", str(port), app]
    if kind == "daphne-v0":
        # No access log (nginx keeps one in production): daphne formats and writes a line per request.
        return [python, "-m", "bench.daphne_main", "-v", "0", "-b", "127.0.0.1", "-p", str(port), app]
    if kind == "uvicorn":
        # Django has no lifespan events; uvloop and httptools are what uvicorn[standard] runs on.
        return [
            python, "-m", "bench.daphne_main", "--server", "uvicorn", "--host", "127.0.0.1",
            "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--ws", "websockets-sansio",
            "--ws-per-message-deflate", "false", "--lifespan", "off",
            "--no-access-log", app,
        ]  # fmt: skip
    if kind == "granian":
        return [
            python, "-m", "granian", "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--loop", "uvloop", "--log-level", "warning", app,
        ]  # fmt: skip
    raise ValueError(f"no ASGI server called {kind!r}; the bench knows {', '.join(SERVERS)}")


class Server:
    """One ASGI server process serving the console, as production runs it (one worker).

    It serves bench/floor.py's application: the console's, plus row 8's do-nothing route.
    """

    def __init__(self, python: str, env: dict[str, str], log_path: Path, kind: str = "") -> None:
        self.kind = kind or os.environ.get("BENCH_SERVER") or SERVERS[0]
        self.python = python
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.gc_log = log_path.with_name(f"{log_path.stem}-gc.log")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        self.gc_log.unlink(missing_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                server_command(self.kind, self.python, self.port, "bench.floor:application"),
                cwd=REPO,
                env=os.environ | self.env | {"BENCH_GC_LOG": str(self.gc_log)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.base_url}/healthz", timeout=5)
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer within {timeout:g} s; see {self.log_path}")

    def pids(self) -> list[int]:
        """The server's process and every process under it (a server may run its worker as a child)."""
        return process_tree(self.pid)

    def memory(self) -> dict[str, int]:
        """The server's resident and private (unshared) memory in bytes, from /proc, over its processes."""
        total = {"rss": 0, "pss": 0, "private": 0}
        for pid in self.pids():
            for name, value in process_memory(pid).items():
                total[name] += value
        return total

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(pid) for pid in self.pids())

    def major_faults(self) -> int:
        return sum(major_faults(pid) for pid in self.pids())

    def gc_pauses(self, since: float, until: float) -> list[tuple[float, float, int]]:
        """(wall-clock time, seconds, generation) of the server's collections of 5 ms or more then."""
        pauses = []
        with contextlib.suppress(OSError):
            for line in self.gc_log.read_text().splitlines():
                at, took, generation = line.split()
                if since <= float(at) <= until:
                    pauses.append((float(at), float(took), int(generation)))
        return pauses

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# Row 4 (bench/fanout.py) and older callers know the server by daphne's name.
Daphne = Server


def process_tree(root: int) -> list[int]:
    """`root` and its descendants that run the same program (a server's workers), from /proc.

    Other children (a terminal's runuser and login shell) are not the server's work: they are left out,
    and so is what they started. Gone processes are left out too.
    """
    program = os.readlink(f"/proc/{root}/exe")
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if os.readlink(entry / "exe") == program:
                    parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    return stat[stat.rfind(")") + 2 :].split()


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (all its threads), from /proc/PID/stat."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def major_faults(pid: int) -> int:
    """Page faults that had to read from disk: a process waiting on them stalls, whatever its code does."""
    return int(_stat_fields(pid)[9])


def process_memory(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            words = rest.split()
            if len(words) == 2 and words[1] == "kB":
                values[name.strip()] = int(words[0]) * 1024
    return {
        "rss": values.get("Rss", 0),
        "pss": values.get("Pss", 0),
        "private": values.get("Private_Clean", 0) + values.get("Private_Dirty", 0),
    }


@dataclass
class Cast:
    """The person and the clusters every benchmark uses, made through the console's own models."""

    person: Any
    posix_user: str
    home: Path
    local_cluster: Any
    ssm_cluster: Any
    api_token: str
    session_cookie: str
    script_path: str


def cast(slurm_url: str, api_version: str, key_file: Path, accounting: bool) -> Cast:
    """The benchmark's person and clusters; needs django.setup() and root (it provisions a Linux user)."""
    from django.test import Client
    from django.utils import timezone

    from access.models import Grant, Quota
    from accounts import api_tokens, posix
    from accounts.models import ClusterAccount, User
    from accounts.provisioning import ensure_ready
    from clusters.models import Cluster
    from tests.support.ssm_agent import REGION, TARGET

    common = {
        "slurmrestd_url": slurm_url,
        "api_version": api_version,
        "jwt_key_source": Cluster.KeySource.FILE,
        "jwt_key_ref": str(key_file),
        "has_accounting": accounting,
    }
    # Slurm enforces the policy here as on the demo: every submit, raw ones too, passes the job_submit plugin.
    local = Cluster.objects.create(
        slug="demo", name="Demo cluster", transport=Cluster.Transport.LOCAL, enforce_policy=True, **common
    )
    # The same head node reached through Session Manager, as an AWS deployment would register it.
    ssm = Cluster.objects.create(
        slug="aws",
        name="Demo cluster over SSM",
        transport=Cluster.Transport.SSM,
        ssm_instance_id=TARGET,
        aws_region=REGION,
        **common,
    )
    person = User.objects.create(username=PERSON_EMAIL, email=PERSON_EMAIL)
    for cluster in (local, ssm):
        Grant.objects.create(cluster=cluster, user=person, all_partitions=True, terminal=True)
    # Generous limits: every check runs (and every submit reserves) without one ever refusing.
    Quota.objects.create(
        cluster=local, user=person, cpu_hours=10_000_000, gpu_hours=1_000_000, max_queued_jobs=1_000_000
    )
    account = ensure_ready(person, local).account
    from access import snapshot

    snapshot.publish(local, force=True)
    # Provisioning on an SSM head node goes through Run Command, which the stand-in does not emulate;
    # the account is recorded as ready there, as an administrator's reconcile would leave it.
    now = timezone.now()
    ClusterAccount.objects.update_or_create(
        account=account,
        cluster=ssm,
        defaults={"state": ClusterAccount.State.READY, "user_created_at": now, "associated_at": now},
    )
    home = Path(f"/home/{account.username}")
    script = _write_script(home, account.uid, account.gid)
    _, token = api_tokens.issue(person, name="benchmarks")
    client = Client()
    client.force_login(person)
    assert posix.ensure_account(person).username == account.username
    return Cast(
        person=person,
        posix_user=account.username,
        home=home,
        local_cluster=local,
        ssm_cluster=ssm,
        api_token=token,
        session_cookie=client.cookies["sessionid"].value,
        script_path=str(script),
    )


def _write_script(home: Path, uid: int, gid: int) -> Path:
    folder = home / "clusterra-bench"
    folder.mkdir(mode=0o755, exist_ok=True)
    os.chown(folder, uid, gid)
    script = folder / "job.sh"
    script.write_text(SCRIPT_TEXT)
    os.chown(script, uid, gid)
    script.chmod(0o644)
    return script


def python_executable() -> str:
    return sys.executable
