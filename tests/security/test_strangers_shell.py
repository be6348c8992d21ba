"""A stranger's shell: what a hostile person tries from the browser terminal on the console's own host.

Two real provisioned people on a local head node: the stranger types every attack into their terminal
(the console's real consumer, a real PTY, their own cgroup); the other person has a live shell and
files of their own. The host is confined the way `make demo` confines it (`manage.py confine_shells`).
An attempt that works is an escape; the figure counts them.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from django.core.management import call_command

from accounts import posix, provisioning
from accounts.models import User
from clusterra_site.asgi import application
from terminal import confine, live
from tests.conftest import require
from tests.support import live_server
from tests.support.confinement import restore_table, saved_table
from tests.support.fake_headnode import ct_email
from tests.support.slurm_shell import cancel_all, shell
from tests.support.terminal_support import (
    end_all_terminals,
    forget_real_person,
    grant_terminal,
    local_cluster,
    new_real_person,
    open_page,
    processes_of,
    session_cookie,
)

pytestmark = [pytest.mark.root, pytest.mark.django_db(transaction=True)]

# root's tools, also where the test's PATH has no sbin.
SBIN = "/usr/sbin:/usr/bin:/sbin:/bin"
# Small caps, so the attacks meet them within seconds.
CAPS = {"shell_max_processes": 64, "shell_max_memory_mb": 256, "shell_max_cpus": 0.5}
_EXIT = re.compile(rb"[\r\n]EXIT-(\d+)\r\n")


@pytest_asyncio.fixture(autouse=True)
async def _nothing_left_open(_no_connection_left_open):
    """Every shell still held is ended (a dropped page keeps its shell for the resume window), then the
    thread's database connection closed (tests/conftest.py)."""
    yield
    await end_all_terminals()


@pytest.fixture
def cluster():
    # The real slurmrestd's address, as `make demo` registers it: confine_shells leaves its port open.
    return local_cluster(slurmrestd_url="http://127.0.0.1:6820", **CAPS)


@pytest.fixture
def people(settings, cluster):
    """(stranger, other): two people of one UID block, each with a terminal grant."""
    _require_confinement_tools()
    stranger, stranger_name = new_real_person(settings)
    email = ct_email()
    other = User.objects.create(username=email, email=email)
    other_name = posix.ensure_account(other).username
    for person in (stranger, other):
        grant_terminal(person, cluster)
    yield stranger, other
    for name in (stranger_name, other_name):
        forget_real_person(name)


@pytest.fixture
def console(django_db_blocker):
    """The console served by uvicorn (its /healthz is what must keep answering)."""
    with live_server.forked(django_db_blocker) as url:
        yield url


@pytest.fixture
def confined_host(settings, people, console):
    """This host as `make demo` leaves it, for the test's UID block; the previous table is put back after."""
    before = saved_table()
    call_command("confine_shells", open_port=[_port(console)], stdout=open(os.devnull, "w"))  # noqa: SIM115
    yield
    restore_table(before)


class Terminal:
    """A terminal page of the console, typed into like a person would."""

    def __init__(self, page) -> None:
        self.page = page

    async def ready(self) -> None:
        await self.page.connected()
        await self.page.run("echo rea''dy", "ready", timeout=15)

    async def status(self, command: str, timeout: float = 20) -> int:
        """The exit status of `command`, its output thrown away."""
        start = len(self.page.screen)
        await self.page.type(f'( {command} ) >/dev/null 2>&1; echo "EXIT""-$?"\r'.encode())
        deadline = time.monotonic() + timeout
        while not (found := _EXIT.search(bytes(self.page.screen[start:]))):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{command!r} did not finish in {timeout} s: {bytes(self.page.screen[start:])!r}"
                )
            try:
                await self.page._next(asyncio.get_running_loop().time() + remaining)
            except TimeoutError:
                continue
        return int(found[1])


async def _terminal(person, cluster):
    cookie = await session_cookie(person)
    return open_page(application, cluster.slug, cookie=cookie)


@pytest.mark.asyncio
async def test_a_strangers_shell_reaches_nothing_but_their_own_things(
    people, cluster, console, confined_host
):
    stranger, other = people
    me = await sync_to_async(lambda: stranger.posix_account.username)()
    them = await sync_to_async(lambda: other.posix_account.username)()
    listener, port = _root_listener()
    host_ip = _host_address()
    results: list[tuple[str, bool]] = []

    async with await _terminal(other, cluster) as (_, _, other_page):
        victim = Terminal(other_page)
        await victim.ready()
        # The other person's files, as their own shell leaves them (default umask: 0644).
        await other_page.run("echo secret > job.out; printf '#!/bin/sh\\n' > job.sh; echo wr''ote", "wrote")
        await other_page.run("sleep 600 & echo bg''-started", "bg-started")
        other_home = Path(f"/home/{them}")

        async with await _terminal(stranger, cluster) as (_, _, page):
            me_shell = Terminal(page)
            await me_shell.ready()
            cgroup_dirs = confine.person_dirs(me)
            pids_dir = next(
                (d for d in cgroup_dirs if "/pids/" in str(d)), cgroup_dirs[0] if cgroup_dirs else None
            )
            attempts = [
                ("PostgreSQL on 127.0.0.1:5432", "psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1'"),
                (
                    "PostgreSQL's Unix socket",
                    "psql -h /var/run/postgresql -U postgres -d postgres -Atc 'select 1'",
                ),
                ("Redis on 127.0.0.1:6379", "redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG"),
                ("Redis on [::1]:6379", "redis-cli -h ::1 -p 6379 ping | grep -q PONG"),
                ("MariaDB on 127.0.0.1:3306", "mariadb -h 127.0.0.1 -P 3306 -u root -e 'select 1'"),
                ("MariaDB's Unix socket", "mariadb -S /run/mysqld/mysqld.sock -u root -e 'select 1'"),
                ("slurmdbd on 127.0.0.1:6819", "exec 3<>/dev/tcp/127.0.0.1/6819"),
                (f"another loopback service (port {port})", f"exec 3<>/dev/tcp/127.0.0.1/{port}"),
                (f"the host's own address {host_ip}:{port}", f"exec 3<>/dev/tcp/{host_ip}/{port}"),
                ("another person's home", f"ls /home/{them}"),
                ("another person's job output", f"cat /home/{them}/job.out"),
                ("another person's processes", f"ps -eo user:32= | grep -qx {them}"),
                ("the console's command line", f"cat /proc/{os.getpid()}/cmdline | grep -q ."),
                ("a signal to the console", f"kill -0 {os.getpid()}"),
                ("the Slurm JWT key", "cat /var/lib/slurm/slurmctld/jwt_hs256.key"),
                ("a Slurm token of their own", "scontrol token lifespan=60 | grep -q SLURM_JWT="),
                ("the policy Slurm enforces (write)", "echo 'return {}' >> /etc/slurm/clusterra/policy.lua"),
                ("leaving their cgroup", "echo $$ > /sys/fs/cgroup/pids/cgroup.procs"),
                ("raising their process cap", f"echo max > {pids_dir}/pids.max" if pids_dir else "false"),
            ]
            for name, command in attempts:
                results.append((name, await me_shell.status(command) == 0))

            # What they need still works: their home, slurmctld, slurmrestd, the console's web port.
            assert await me_shell.status("echo mine > own.txt && cat own.txt") == 0
            assert await me_shell.status("exec 3<>/dev/tcp/127.0.0.1/6817") == 0, (
                "slurmctld must stay reachable"
            )
            assert await me_shell.status("exec 3<>/dev/tcp/127.0.0.1/6820") == 0, (
                "slurmrestd must stay reachable"
            )
            assert await me_shell.status(f"exec 3<>/dev/tcp/127.0.0.1/{_port(console)}") == 0

            # A process that outlives the terminal: it leaves the session, so only the cgroup finds it.
            await page.run("setsid nohup sleep 900 >/dev/null 2>&1 < /dev/null & echo de''tached", "detached")
        await end_terminals_of(stranger)
        left = await _wait_until_gone(me)
        results.append(("a process left running after the terminal closed", bool(left)))

        # Attacks on the host itself, while the other person works and the console is asked for /healthz.
        async with await _terminal(stranger, cluster) as (_, _, page):
            me_shell = Terminal(page)
            await me_shell.ready()
            await asyncio.to_thread(_healthz_times, console, 5)  # warm: the first answers build caches
            before = await asyncio.to_thread(_healthz_times, console, 40)
            await page.type(b":(){ :|:& };:\r")
            await asyncio.sleep(2)
            await asyncio.sleep(1)
            during = await asyncio.to_thread(_healthz_times, console, 200)
            t0 = time.monotonic()
            await other_page.run("echo st''ill-here", "still-here", timeout=15)
            other_answer_ms = (time.monotonic() - t0) * 1000
            peak, refused_forks = _pids_peak(me)
        await end_terminals_of(stranger)
        results.append(("a fork bomb stopping the console", during.failures > 0 or during.p99 > 1000))
        results.append(("a fork bomb past its cap", peak > CAPS["shell_max_processes"]))
        bomb_left = await _wait_until_gone(me)
        results.append(("a fork bomb outliving its terminal", bool(bomb_left)))

        async with await _terminal(stranger, cluster) as (_, _, page):
            me_shell = Terminal(page)
            await me_shell.ready()
            hog = await me_shell.status("/usr/bin/python3 -c \"b = b'x' * (1 << 30)\"", timeout=60)
            results.append(("1 GiB held against a 256 MB cap", hog == 0))
            # The shell that ran it is still there; only the hog was killed.
            assert await me_shell.status("true") == 0
        hog_healthz = await asyncio.to_thread(_healthz_times, console, 20)
        results.append(("the console after the memory hog", hog_healthz.failures > 0))
        await other_page.run("echo st''ill-here-2", "still-here-2", timeout=15)

    listener.close()
    escapes = [name for name, escaped in results if escaped]
    print(f"stranger's shell: {len(escapes)} of {len(results)} escapes ({', '.join(escapes) or 'none'})")
    print(
        f"fork bomb: /healthz p99 {during.p99:.0f} ms during the attack ({before.p99:.0f} ms before), "
        f"{during.failures} failed of {during.count}; the bomb peaked at {peak} of "
        f"{CAPS['shell_max_processes']} processes ({refused_forks} forks refused); "
        "the other person's shell answered in "
        f"{other_answer_ms:.0f} ms"
    )
    assert not escapes, f"escapes: {escapes}"
    assert other_home.stat().st_mode & 0o077 == 0, "a home the console made is private"


# ---- helpers ------------------------------------------------------------------------------------


class Timings:
    def __init__(self, millis: list[float], failures: int) -> None:
        self.count = len(millis) + failures
        self.failures = failures
        ordered = sorted(millis) or [float("inf")]
        self.p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _healthz_times(url: str, count: int) -> Timings:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    millis, failures = [], 0
    for _ in range(count):
        t0 = time.monotonic()
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=5)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            failures += 1
            continue
        if status != 200:
            failures += 1
            continue
        millis.append((time.monotonic() - t0) * 1000)
    return Timings(millis, failures)


async def end_terminals_of(person) -> None:
    """What the idle timeout or offboarding does: the console ends the person's terminals."""
    for terminal in live.running():
        if terminal.person_id == person.pk:
            await terminal.end("closed", "The test ended this terminal.")


async def _wait_until_gone(user: str, seconds: float = 10) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := processes_of(user)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return left


def _pids_peak(user: str) -> tuple[int, int]:
    """(the most processes the person's cgroup held, how many forks it refused at the cap)."""
    for d in confine.person_dirs(user):
        if (d / "pids.events").exists():
            # The kernel counts a refused fork where it was tried (v1: the terminal's own cgroup).
            refused = sum(
                int(dict(line.split() for line in f.read_text().splitlines()).get("max", 0))
                for f in d.rglob("pids.events")
            )
            peak = d / "pids.peak"
            held = int(peak.read_text()) if peak.exists() else int((d / "pids.current").read_text())
            return held, refused
    return 0, 0


def _root_listener() -> tuple[socket.socket, int]:
    """A service of root's on every address of this host: nobody in the console's UID range may reach it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 0))  # noqa: S104 - the point is a service on the host's own address too
    s.listen(16)
    return s, s.getsockname()[1]


def _host_address() -> str:
    """One of this host's own non-loopback addresses (traffic to it still goes out through lo)."""
    words = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=False).stdout.split()
    return next((w for w in words if ":" not in w and not w.startswith("127.")), "127.0.0.2")


def _require_confinement_tools() -> None:
    tools = shutil.which("nft", path=SBIN) and shutil.which("setfacl", path=SBIN)
    require(bool(tools), "needs nftables and acl (scripts/test-prepare.sh)")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ---- the caps themselves ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_shell_runs_in_its_persons_cgroup_with_the_clusters_caps_and_leaves_nothing(people, cluster):
    require(confine.host_kind() != "rlimit", "needs writable cgroups (root, cgroup v1 or v2)")
    stranger, _ = people
    me = await sync_to_async(lambda: stranger.posix_account.username)()
    async with await _terminal(stranger, cluster) as (_, _, page):
        shell = Terminal(page)
        await shell.ready()
        assert await shell.status(f"grep -q '{confine.TREE}/{me}/t-' /proc/self/cgroup") == 0
        dirs = confine.person_dirs(me)
        values = {f.name: f.read_text().split()[0] for d in dirs for f in d.iterdir() if f.name in _CAPS}
        assert values == _expected_caps(), values
    await end_terminals_of(stranger)
    # Their last terminal gone, so is their cgroup (people come and go; cgroups must not pile up).
    assert not any(d.exists() for d in confine.person_dirs(me))


@pytest.mark.asyncio
async def test_where_cgroups_cannot_be_written_rlimits_still_cap_the_shell(people, cluster, monkeypatch):
    monkeypatch.setattr(confine, "host_kind", lambda root=confine.CGROUP_ROOT: "rlimit")
    stranger, _ = people
    async with await _terminal(stranger, cluster) as (_, _, page):
        shell = Terminal(page)
        await shell.ready()
        processes, memory_kb = CAPS["shell_max_processes"], CAPS["shell_max_memory_mb"] * 1024
        assert (
            await shell.status(f'[ "$(ulimit -Hu)" = {processes} ] && [ "$(ulimit -Hv)" = {memory_kb} ]') == 0
        )
        # The person cannot raise what the console set (hard limits).
        assert await shell.status(f"ulimit -u {processes * 2}") != 0
    await end_terminals_of(stranger)


_CAPS = ("pids.max", "memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us", "cpu.max")


def _expected_caps() -> dict[str, str]:
    memory = str(CAPS["shell_max_memory_mb"] * 1024 * 1024)
    quota = str(int(CAPS["shell_max_cpus"] * 100_000))
    if confine.host_kind() == "v2":
        return {"pids.max": str(CAPS["shell_max_processes"]), "memory.max": memory, "cpu.max": quota}
    return {
        "pids.max": str(CAPS["shell_max_processes"]),
        "memory.limit_in_bytes": memory,
        "cpu.cfs_quota_us": quota,
    }


# ---- the same from a job --------------------------------------------------------------------------

# Run by Slurm as the person, outside any terminal and its cgroup: only the host-wide settings hold here.
JOB_ATTEMPTS = {
    "PostgreSQL on 127.0.0.1:5432": "exec 3<>/dev/tcp/127.0.0.1/5432",
    "Redis on 127.0.0.1:6379": "exec 3<>/dev/tcp/127.0.0.1/6379",
    "MariaDB on 127.0.0.1:3306": "exec 3<>/dev/tcp/127.0.0.1/3306",
    "slurmdbd on 127.0.0.1:6819": "exec 3<>/dev/tcp/127.0.0.1/6819",
    "PostgreSQL's Unix socket": "psql -h /var/run/postgresql -U postgres -d postgres -Atc 'select 1'",
    "MariaDB's Unix socket": "mariadb -S /run/mysqld/mysqld.sock -u root -e 'select 1'",
    "anyone else's processes": 'ps -eo user:32= | grep -vx "$(id -un)" | grep -q .',
}


@pytest.mark.slurm
def test_a_strangers_job_reaches_nothing_either(demo_cluster, settings, slurm_env, tmp_path):
    _require_confinement_tools()
    person, name = new_real_person(settings)
    try:
        provisioning.ensure_ready(person, demo_cluster)
        lines = [
            f'( {command} ) >/dev/null 2>&1 && echo "ESCAPED {label}"'
            for label, command in JOB_ATTEMPTS.items()
        ]
        script = Path(f"/home/{name}/attempts.sh")
        script.write_text("#!/bin/bash\n" + "\n".join(lines) + "\necho done\n")
        os.chown(script, pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid)
        before = saved_table()
        try:
            # The control: with the ports left open, the same script does get through.
            restore_table("")
            assert "ESCAPED PostgreSQL on 127.0.0.1:5432" in shell(name, "bash attempts.sh").out
            call_command("confine_shells", stdout=open(os.devnull, "w"))  # noqa: SIM115
            typed = shell(name, "sbatch --parsable -t 2 -o attempts.out attempts.sh")
            assert typed.job_id, typed
            out = Path(f"/home/{name}/attempts.out")
            deadline = time.monotonic() + 60
            while not (out.exists() and "done" in out.read_text()) and time.monotonic() < deadline:
                time.sleep(0.2)
            said = out.read_text()
        finally:
            restore_table(before)
    finally:
        cancel_all(name)
        forget_real_person(name)
    assert "done" in said, said
    escapes = [line.removeprefix("ESCAPED ") for line in said.splitlines() if line.startswith("ESCAPED ")]
    print(f"stranger's job: {len(escapes)} of {len(JOB_ATTEMPTS)} escapes ({', '.join(escapes) or 'none'})")
    assert not escapes
