"""Many workers, one console: the deploy kit's layout on this machine, and what it promises.

deploy/install.sh installs the console (on its cluster's head node: `--head-node`, so the shell keeper can
open people's shells here) with three web workers behind Debian's nginx; the shell keeper, the three
workers and two sync loops are started by their installed units' own command lines (tests/support/units.py:
systemd is not PID 1 here), against this test's PostgreSQL database and Redis. Then, as people would meet it:

1. one sign-in works on every worker;
2. offboarding done through worker 1 closes a terminal held through worker 3;
3. killing the active sync loop hands over to the standby within 15 s, and the jobs around the kill still
   reach their final state;
4. the mixed load of tests/faults/test_load.py through nginx with one worker and with three;
5. a rolling restart of all three workers keeps every shell: six WebSocket clients and a Chromium page
   reattach through nginx to the same shells, with what the shells printed meanwhile replayed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from django.conf import settings
from django.db import connection

from accounts.models import User
from jobs.models import JobRecord
from tests.conftest import REPO, require
from tests.support import load, sync_procs, units
from tests.support.browser import browser_page, require_browser, session_cookie, until
from tests.support.deployed import (
    BACKUPS,
    CLEAN_ENV,
    DATA,
    ETC,
    RUN,
    SHELLS,
    SYSTEMD,
    answers,
    copy_checkout,
    free_port,
    listening,
    self_signed,
    sh,
    start_nginx,
    stop_all,
    stop_nginx,
    wait_for,
)
from tests.support.fake_headnode import remove_linux_user
from tests.support.jobs_support import make_person

pytestmark = [
    pytest.mark.root,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slurm,
    pytest.mark.browser,
]

WORKERS = 3
SHELLS_HELD = 6
# Seconds of load per run (1 worker, then 3): long enough for a steady rate, short enough for CI.
LOAD_SECONDS = 12.0
FAILOVER_LIMIT = 15.0
STEP = 10.0


# ---- the installed console ------------------------------------------------------------------------


@dataclass
class Console:
    """The console as install.sh left it, its units' processes, and nginx in front."""

    checkout: Path
    folder: Path
    https: int
    http: int
    cert: Path
    key: Path
    database_url: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    nginx: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"https://localhost:{self.https}"

    def install(self, workers: int, *extra: str) -> None:
        sh(
            "bash", str(self.checkout / "deploy" / "install.sh"), "--head-node", "--server-name", "localhost",
            "--https-port", str(self.https), "--http-port", str(self.http), "--cert", str(self.cert),
            "--key", str(self.key), "--workers", str(workers), *extra,
        )  # fmt: skip

    def start(self, name: str) -> None:
        self.procs[name] = units.start(name, log=self.folder / f"{name}.log")

    def stop(self, name: str, sig: int | None = None) -> None:
        proc = self.procs.pop(name)
        if sig is None:
            units.stop(proc, name=name)
        else:
            proc.send_signal(sig)
            proc.wait(STEP)

    def worker_socket(self, n: int) -> Path:
        return RUN / f"web-{n}.sock"

    def start_worker(self, n: int) -> None:
        self.start(f"clusterra-web@{n}.service")
        wait_for(lambda: answers(self.worker_socket(n)), f"web-{n}.sock answering", 30)

    def reload_nginx(self) -> None:
        """nginx reads the site again (a new worker count) without dropping a connection."""
        assert self.nginx is not None
        self.nginx.send_signal(signal.SIGHUP)
        time.sleep(1.0)

    def upstreams(self) -> list[str]:
        """The worker that answered each request through nginx so far, from its access log."""
        lines = (self.folder / "access.log").read_text().splitlines()
        return [found[-1] for line in lines if (found := re.findall(r"web-\d+", line))]


@contextlib.contextmanager
def installed_console(tmp_path: Path, people_uids: tuple[int, int]) -> Iterator[Console]:
    require(os.geteuid() == 0, "needs root: install.sh creates a user and installs system files")
    require(shutil.which("nginx") is not None, "nginx is missing: scripts/test-prepare.sh installs it")
    require(not Path("/run/systemd/system").exists(), "systemd is PID 1 here: run this test in a container")
    require(bool(os.environ.get("REDIS_URL")), "needs Redis: REDIS_URL=redis://…")
    require(connection.vendor == "postgresql", "needs PostgreSQL: DATABASE_URL=postgres://…")
    leftover = SYSTEMD / "clusterra-web@.service"
    if leftover.exists() and "/opt/clusterra-deploy-test-" in leftover.read_text():
        sh("bash", str(REPO / "deploy" / "install.sh"), "--uninstall", "--purge")  # an earlier run's
    require(not ETC.exists() and not leftover.exists(), "a Clusterra installation is already on this machine")

    # The workers use this test's own database (its rows are committed: a transactional test) and sign
    # sessions with its key, so the people and cookies the test makes are theirs too.
    database_url = sync_procs.database_url()
    cert, key = self_signed(tmp_path)
    console = Console(
        checkout=Path("/nonexistent"),
        folder=tmp_path,
        https=free_port(),
        http=free_port(),
        cert=cert,
        key=key,
        database_url=database_url,
    )
    try:
        console.checkout = copy_checkout()
        console.install(
            WORKERS,
            "--set", f"DATABASE_URL={database_url}",
            "--set", f"REDIS_URL={os.environ['REDIS_URL']}",
            "--set", f"DJANGO_SECRET_KEY={settings.SECRET_KEY}",
            "--set", f"CLUSTERRA_UID_MIN={people_uids[0]}",
            "--set", f"CLUSTERRA_UID_MAX={people_uids[1]}",
        )  # fmt: skip
        console.start("clusterra-shells.service")
        wait_for(lambda: answers(SHELLS / "keeper.sock"), "the shell keeper's socket", 30)
        for n in range(1, WORKERS + 1):
            console.start_worker(n)
        for n in (1, 2):
            console.start(f"clusterra-sync@{n}.service")
        console.nginx = start_nginx(tmp_path)
        wait_for(lambda: listening(console.https), "nginx listening", 15)
        yield console
    except BaseException:
        # What the parts said, for a failure that only shows itself now and then (a reattach once waited
        # past 10 s for its handshake on a slow VM, and nothing here said where).
        print_log_tails(tmp_path)
        raise
    finally:
        stop_all(console.procs)
        stop_nginx(console.nginx)
        if leftover.exists() or ETC.exists():
            subprocess.run(
                ["bash", str(REPO / "deploy" / "install.sh"), "--uninstall", "--purge"], env=CLEAN_ENV
            )
        if console.checkout.exists():
            shutil.rmtree(console.checkout, ignore_errors=True)


def print_log_tails(folder: Path, lines: int = 30) -> None:
    """The last lines of every unit's log and of nginx's access and error logs, for a failure's output."""
    for log in sorted(folder.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print(f"---- {log.name} (last {len(tail)} lines)", *tail, sep="\n")


# ---- one worker, directly (not through nginx) ----------------------------------------------------------


class WorkerConnection(http.client.HTTPConnection):
    """HTTP to one worker's UNIX socket, as nginx sends it: Host and X-Forwarded-Proto as the site sets."""

    def __init__(self, path: Path, port: int) -> None:
        super().__init__("localhost", port, timeout=STEP)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.socket_path))


def ask_worker(
    console: Console, n: int, method: str, path: str, cookies: dict[str, str], form: dict | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    conn = WorkerConnection(console.worker_socket(n), console.https)
    headers = {
        "Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items()),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "127.0.0.1",
    }
    body = None
    if form is not None:
        body = urlencode(form, doseq=True)
        headers |= {
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": console.base,
            "Referer": f"{console.base}{path}",
        }
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.headers, response.read().decode(errors="replace")
    finally:
        conn.close()


# ---- a terminal, from a WebSocket client ---------------------------------------------------------------


class Shell:
    """One browser terminal as its page speaks to it: status messages, keystrokes, output; reattach."""

    def __init__(self, opener: Callable[[str | None], Any]) -> None:
        self.opener = opener
        self.ws: Any = None
        self.token: str | None = None
        self.output = bytearray()
        self.statuses: list[dict] = []
        self.reattached = 0

    def open(self, resume: str | None = None) -> dict:
        self.ws = self.opener(resume)
        while True:
            message = self.ws.recv(timeout=STEP)
            if isinstance(message, bytes):
                self.output += message
                continue
            status = json.loads(message)
            self.statuses.append(status)
            if status["type"] == "closed":
                raise AssertionError(f"the terminal closed instead of opening: {status}")
            if status.get("state") == "connected":
                self.token = status["resume"]
                return status

    def type(self, line: str) -> None:
        self.ws.send((line + "\r").encode())

    def until(self, pattern: bytes, timeout: float = STEP) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (found := re.search(pattern, self.output)):
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern!r} not within {timeout} s; output: {bytes(self.output[-500:])!r}"
            with contextlib.suppress(TimeoutError):
                message = self.ws.recv(timeout=left)
                if isinstance(message, bytes):
                    self.output += message
                else:
                    self.statuses.append(json.loads(message))
        return found

    def pid(self, tag: str) -> int:
        self.type(f"echo {tag}=$$")
        return int(self.until(rf"{tag}=(\d+)".encode())[1])

    def closed(self, timeout: float = STEP) -> dict:
        from websockets.exceptions import ConnectionClosed

        deadline = time.monotonic() + timeout
        with contextlib.suppress(ConnectionClosed):
            while time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    message = self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
                    if isinstance(message, str):
                        status = json.loads(message)
                        self.statuses.append(status)
                        if status["type"] == "closed":
                            return status
        raise AssertionError(f"no 'closed' message within {timeout} s: {self.statuses[-3:]}")

    def alive(self) -> bool:
        """Whether the connection still reaches a worker (a ping answered), draining what came meanwhile."""
        from websockets.exceptions import ConnectionClosed

        try:
            pong = self.ws.ping()
            deadline = time.monotonic() + 2.0
            while not pong.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    message = self.ws.recv(timeout=0.05)
                    if isinstance(message, bytes):
                        self.output += message
            return pong.is_set()
        except ConnectionClosed:
            return False

    def reattach_if_dropped(self) -> bool:
        if self.alive():
            return False
        with contextlib.suppress(Exception):
            self.ws.close()
        status = self.open(self.token)
        assert status["resumed"] is True, status
        assert status["message"].startswith("Reconnected to your shell"), status
        self.reattached += 1
        return True


TERMINAL = "/ws/clusters/demo/terminal/?cols=100&rows=30"


def through_nginx(console: Console, cookie: str) -> Callable[[str | None], Any]:
    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=str(console.cert))

    def opener(resume: str | None) -> Any:
        url = f"wss://localhost:{console.https}{TERMINAL}" + (f"&resume={resume}" if resume else "")
        return connect(
            url,
            ssl=context,
            origin=console.base,
            additional_headers={"Cookie": f"sessionid={cookie}"},
            legacy=True,
        )

    return opener


def through_worker(console: Console, n: int, cookie: str) -> Callable[[str | None], Any]:
    from websockets.sync.client import unix_connect

    def opener(resume: str | None) -> Any:
        return unix_connect(
            str(console.worker_socket(n)),
            uri=f"ws://localhost:{console.https}{TERMINAL}" + (f"&resume={resume}" if resume else ""),
            origin=console.base,
            additional_headers={"Cookie": f"sessionid={cookie}", "X-Forwarded-Proto": "https"},
            legacy=True,
        )

    return opener


# ---- the test ------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_three_workers_behind_nginx_are_one_console(tmp_path, demo_cluster, people, monkeypatch, request):
    require_browser()
    ada, carol = people(), people()
    # Offboarded below, which closes their Slurm association for good: not a pooled Linux user, whom a later
    # test would be handed with that association still closed.
    bob = make_person(demo_cluster)
    request.addfinalizer(lambda: remove_linux_user(bob.name))
    crowd = load.visitors(demo_cluster, people)
    staff = User.objects.create(username="ops@clusterra.test", email="ops@clusterra.test", is_staff=True)
    staff.is_superuser = True
    staff.save()
    cookies = {p.name: session_cookie(p.user) for p in (ada, bob, carol)}
    staff_cookie = session_cookie(staff)
    uids = (settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX)
    # requests (the load's clients, the API calls) trust the test's own certificate authority.
    with installed_console(tmp_path, uids) as console:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(console.cert))

        # 1. One sign-in, every worker: sessions live in the database, not in a worker.
        for n in range(1, WORKERS + 1):
            status, _, body = ask_worker(console, n, "GET", "/", {"sessionid": cookies[ada.name]})
            assert status == 200, body[:300]
            assert ada.user.email in body or ada.user.username in body, body[:300]
        before = len(console.upstreams())
        with requests.Session() as browser:
            browser.cookies.set("sessionid", cookies[ada.name])
            for _ in range(30):
                page = browser.get(f"{console.base}/", timeout=STEP)
                assert page.status_code == 200
                assert ada.user.username in page.text
        spread = {f"web-{n}": console.upstreams()[before:].count(f"web-{n}") for n in range(1, WORKERS + 1)}
        assert all(spread.values()), spread
        print(
            f"sessions across workers: one sign-in answered by {WORKERS} of {WORKERS} workers directly, and "
            f"30 pages through nginx spread {', '.join(f'{k} {v}' for k, v in spread.items())}"
        )

        # 2. Offboarded through worker 1; the terminal held through worker 3 closes.
        held = Shell(through_worker(console, 3, cookies[bob.name]))
        held.open()
        assert held.pid("BOB") > 0
        status, headers, body = ask_worker(
            console, 1, "GET", "/admin/accounts/user/", {"sessionid": staff_cookie}
        )
        assert status == 200, body[:300]
        # The form's token goes with the cookie secret this same answer set.
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)[1]
        secret = re.search(r"csrftoken=([^;]+)", " ".join(headers.get_all("Set-Cookie") or []))[1]
        jar = {"sessionid": staff_cookie, "csrftoken": secret}
        form = {
            "action": "offboard_selected",
            "_selected_action": [str(bob.user.pk)],
            "select_across": "0",
            "index": "0",
            "post": "yes",
            "csrfmiddlewaretoken": csrf,
        }
        started = time.monotonic()
        status, _, body = ask_worker(console, 1, "POST", "/admin/accounts/user/", jar, form)
        answered = time.monotonic() - started
        assert status == 302, f"{status}: {body[:500]}"
        closed = held.closed()
        took = time.monotonic() - started
        assert closed["code"] == "offboarded", closed
        assert "access to the console was removed" in closed["reason"], closed
        bob.user.refresh_from_db()
        assert bob.user.is_active is False
        print(
            f"cross-worker offboarding: offboarded through web-1 (answered in {answered * 1000:.0f} ms), the "
            f"terminal held through web-3 closed {took * 1000:.0f} ms after the request"
        )

        # 3. The active sync loop dies; the standby takes over within 15 s, and no job state is lost.
        api = f"{console.base}/v1/clusters/{demo_cluster.slug}/jobs"
        bearer = {"Authorization": f"Bearer {carol.token}"}
        scripts = [
            carol.script(f"f{n}.sh", f"#!/bin/bash\n#SBATCH -p debug -t 1 -o /dev/null\nsleep {n * 3}\n")
            for n in (1, 2)
        ]
        first = requests.post(api, json={"script_path": scripts[0]}, headers=bearer, timeout=30)
        assert first.status_code == 201, first.text
        loops = {console.procs[f"clusterra-sync@{n}.service"].pid: n for n in (1, 2)}
        active = wait_for_value(
            lambda: sync_procs.active_sync_pid(console.database_url), "a sync loop active"
        )
        assert active in loops, (active, loops)
        killed_at = time.monotonic()
        console.stop(f"clusterra-sync@{loops[active]}.service", signal.SIGKILL)
        standby = wait_for_value(
            lambda: (pid := sync_procs.active_sync_pid(console.database_url)) != active and pid,
            "the standby holding the lock",
            FAILOVER_LIMIT,
        )
        handover = time.monotonic() - killed_at
        assert standby in loops
        assert standby != active
        assert handover < FAILOVER_LIMIT
        second = requests.post(api, json={"script_path": scripts[1]}, headers=bearer, timeout=30)
        assert second.status_code == 201, second.text
        job_ids = [first.json()["job"]["id"], second.json()["job"]["id"]]
        wait_for(
            lambda: (
                set(JobRecord.objects.filter(slurm_job_id__in=job_ids).values_list("state", flat=True))
                == {"COMPLETED"}
            ),
            "both jobs COMPLETED in the console's records",
            60,
        )
        console.start(f"clusterra-sync@{loops[active]}.service")
        print(
            f"sync failover: the active loop SIGKILLed, the standby held the lock {handover:.1f} s later; "
            f"the job submitted before and the one after both COMPLETED in the console's records"
        )

        # 4. The same mixed load through nginx, with one worker and with three.
        console.install(1)
        console.reload_nginx()
        load.warm_up(console.base, crowd[0])
        one = load.run(console.base, crowd, seconds=LOAD_SECONDS)
        load.check(one)
        console.install(WORKERS)
        console.reload_nginx()
        three = load.run(console.base, crowd, seconds=LOAD_SECONDS)
        load.check(three)
        print(
            f"load 1 vs 3 workers: 1 worker {one.per_second:.0f} req/s, p99 {one.p99:.0f} ms; "
            f"{WORKERS} workers {three.per_second:.0f} req/s, p99 {three.p99:.0f} ms "
            f"({three.per_second / one.per_second:.2f} times the rate) "
            f"on {os.cpu_count()} cores, {load.CLIENTS} clients through nginx"
        )

        # 5. A rolling restart of every worker: every shell is kept, in the WebSocket clients and the page.
        shells = [Shell(through_nginx(console, cookies[ada.name])) for _ in range(SHELLS_HELD)]
        pids = []
        for shell in shells:
            shell.open()
            pids.append(shell.pid("BEFORE"))
        assert len(set(pids)) == SHELLS_HELD
        # From a person's own shell, the deployed console's parts are out of reach: its settings (the secret
        # key, the database password), its data and backups, and the keeper's socket, which would open a
        # shell as anyone.
        probe = shells[0]
        probe.type(
            f"cat {ETC}/clusterra.env; ls {DATA}; ls {BACKUPS}; "
            f"python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{SHELLS}/keeper.sock')\"; "
            "echo PROBED"
        )
        probe.until(rb"\r\nPROBED")
        said = probe.output.decode(errors="replace")
        assert said.count("Permission denied") >= 4, said[-1500:]
        assert settings.SECRET_KEY not in said
        with browser_page(
            console.base, {"width": 1000, "height": 640}, person=ada.user, step_ms=STEP * 1000,
            ignore_https_errors=True,
        ) as page:  # fmt: skip
            page.goto(f"{console.base}/clusters/demo/terminal/")
            until(page, "document.getElementById('status').dataset.state === 'connected'", STEP)
            page.keyboard.type("echo PAGE=$$")
            page.keyboard.press("Enter")
            page_pid = until(page, "(termText().match(/PAGE=(\\d+)/) || [])[1]", STEP)
            slowest = 0.0
            for n in range(1, WORKERS + 1):
                # Output the shells print while their worker is away is kept by the keeper and replayed.
                # Keystrokes still on their way to a worker that stops are lost with it, as on any dropped
                # connection: the line is typed, and seen by the shell, before the worker goes.
                for shell in shells:
                    shell.type(f"sleep 1; echo DURING{n}=$$")
                for shell in shells:
                    shell.until(rf"sleep 1; echo DURING{n}=\$\$".encode())
                console.stop(f"clusterra-web@{n}.service")
                for shell in shells:
                    started = time.monotonic()
                    if shell.reattach_if_dropped():
                        slowest = max(slowest, time.monotonic() - started)
                console.start_worker(n)
                for i, shell in enumerate(shells):
                    assert int(shell.until(rf"DURING{n}=(\d+)".encode())[1]) == pids[i]
            for i, shell in enumerate(shells):
                assert shell.pid("AFTER") == pids[i]
            # The page reconnected on its own, to its own shell.
            until(page, "/Reconnected to your shell/.test(document.getElementById('status').textContent)", 30)
            page.keyboard.type("echo PAGE_AFTER=$$")
            page.keyboard.press("Enter")
            assert until(page, "(termText().match(/PAGE_AFTER=(\\d+)/) || [])[1]", STEP) == page_pid
        reattached = sum(shell.reattached for shell in shells)
        assert reattached >= WORKERS, [s.reattached for s in shells]
        print(
            f"rolling restart: {WORKERS} workers restarted one by one; {SHELLS_HELD} of {SHELLS_HELD} shells "
            f"and the Chromium page kept (same PID, output printed meanwhile replayed), {reattached} "
            f"reattaches, the slowest {slowest * 1000:.0f} ms"
        )


def wait_for_value(read: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (value := read()):
        assert time.monotonic() < deadline, f"{what} not within {seconds} s"
        time.sleep(0.1)
    return value
