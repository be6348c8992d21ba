"""deploy/README.md, followed on this machine: install.sh for real, the units started, nginx in front.

systemd is not PID 1 here, so the installed units are checked by `systemd-analyze verify` and started
through their own command lines by tests/support/units.py; everything else is the real thing: the
`clusterra` user, /etc/clusterra, the tmpfiles folders, Debian's nginx (with Debian's own nginx.conf,
only its pid file, logs and site list moved aside so it never meets a system nginx) and PostgreSQL.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import ssl
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import REPO, require
from tests.support import units
from tests.support.deployed import (
    CLEAN_ENV,
    DATA,
    ETC,
    MANAGE,
    RUN,
    SHELLS,
    SITE,
    SITE_LINK,
    STATIC,
    SYSTEMD,
    TMPFILES,
    Curl,
    answers,
    copy_checkout,
    database_urls,
    free_port,
    listening,
    machine_state,
    self_signed,
    sh,
    start_nginx,
    stop_all,
    stop_nginx,
    wait_for,
)  # fmt: skip

pytestmark = [pytest.mark.root, pytest.mark.postgres]

WORKERS = 2
LONG_RUNNING = ["clusterra-shells.service", *(f"clusterra-web@{i}.service" for i in range(1, WORKERS + 1))]
LONG_RUNNING.append("clusterra-sync@1.service")
ONESHOTS = ["clusterra-expire-demo.service", "clusterra-reconcile.service", "clusterra-audit-export.service"]
VERIFIED = [
    "clusterra.target",
    "clusterra-sync@2.service",
    "clusterra-backup.service",
    *LONG_RUNNING,
    *ONESHOTS,
]
VERIFIED += [n.replace(".service", ".timer") for n in (*ONESHOTS, "clusterra-backup.service")]


def test_the_deploy_kit_installs_the_console_behind_nginx_and_uninstalls_cleanly(tmp_path):
    require(os.geteuid() == 0, "needs root: install.sh creates a user and installs system files")
    require(shutil.which("nginx") is not None, "nginx is missing: scripts/test-prepare.sh installs it")
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze is missing (package systemd)")
    require(Path("/usr/bin/python3").exists(), "Debian's python3 is missing")
    # Under a running systemd, install.sh would enable and start the units for real, beside this test's.
    require(not Path("/run/systemd/system").exists(), "systemd is PID 1 here: run this test in a container")
    require(bool(os.environ.get("REDIS_URL")), "needs Redis: REDIS_URL=redis://…")
    import psycopg

    maintenance, console_db, db_name = database_urls()
    leftover = SYSTEMD / "clusterra-web@.service"
    if leftover.exists() and "/opt/clusterra-deploy-test-" in leftover.read_text():
        sh("bash", str(REPO / "deploy" / "install.sh"), "--uninstall", "--purge")  # an earlier run's
    require(not ETC.exists() and not leftover.exists(), "a Clusterra installation is already on this machine")
    before = machine_state()

    checkout: Path | None = None
    procs: dict[str, subprocess.Popen] = {}
    nginx: subprocess.Popen | None = None
    logs = tmp_path / "logs"
    logs.mkdir()
    with psycopg.connect(maintenance, autocommit=True) as pg:
        pg.execute(f'CREATE DATABASE "{db_name}"')
    try:
        checkout = copy_checkout()
        cert, key = self_signed(tmp_path)
        https, http = free_port(), free_port()
        install = [
            "bash", str(checkout / "deploy" / "install.sh"), "--server-name", "localhost",
            "--https-port", str(https), "--http-port", str(http), "--cert", str(cert), "--key", str(key),
            "--workers", str(WORKERS), "--set", f"DATABASE_URL={console_db}",
            "--set", f"REDIS_URL={os.environ['REDIS_URL']}",
        ]  # fmt: skip
        started = time.monotonic()
        first = sh(*install)
        install_seconds = time.monotonic() - started
        assert "systemd is not running here" in first.stdout  # and it says what to run instead

        # What README promises install.sh made.
        env_file = ETC / "clusterra.env"
        account = pwd.getpwnam("clusterra")
        assert account.pw_uid < 1000
        assert account.pw_shell == "/usr/sbin/nologin"
        info = env_file.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, 0, account.pw_gid)
        settings = units.environment_file(env_file)
        assert len(settings["DJANGO_SECRET_KEY"]) >= 50
        assert settings["CLUSTERRA_SECURE"] == "1"
        assert settings["CLUSTERRA_ALLOWED_HOSTS"] == "localhost"
        for folder, mode, group in (
            (DATA, 0o700, "clusterra"),
            (RUN, 0o750, "www-data"),
            (SHELLS, 0o700, "clusterra"),
        ):
            info = folder.stat()
            assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (
                mode,
                account.pw_uid,
                grp.getgrnam(group).gr_gid,
            ), folder
        assert (
            f"ExecStart={checkout}/.venv/bin/uvicorn --uds /run/clusterra/web-%i.sock --proxy-headers"
            in (SYSTEMD / "clusterra-web@.service").read_text()
        )
        assert SITE_LINK.resolve() == SITE
        assert (STATIC / "staticfiles.json").exists()
        verified = units.verify(VERIFIED)
        # Every service gets the shared drop-in (the user and the sandbox); every timer has its service.
        for name in VERIFIED:
            if name.endswith(".service"):
                unit = units.read(name)
                sandbox = [unit.get("Service", k) for k in ("User", "NoNewPrivileges", "ProtectSystem")]
                assert sandbox == ["clusterra", "yes", "strict"], name
            elif name.endswith(".timer"):
                assert (SYSTEMD / name.replace(".timer", ".service")).exists(), name

        # Idempotent: a second run (an upgrade) changes no setting and keeps the secret key.
        started = time.monotonic()
        sh(*install)
        again_seconds = time.monotonic() - started
        assert units.environment_file(env_file) == settings

        # The units, started by their own command lines: keeper first, as clusterra.target orders them.
        procs["clusterra-shells.service"] = units.start("clusterra-shells.service", log=logs / "shells.log")
        for name in LONG_RUNNING[1:]:
            procs[name] = units.start(name, log=logs / f"{name}.log")
        sockets = [RUN / f"web-{i}.sock" for i in range(1, WORKERS + 1)] + [SHELLS / "keeper.sock"]
        wait_for(lambda: all(s.exists() for s in sockets), f"the sockets {sockets}", 45)
        for name, proc in procs.items():
            assert proc.poll() is None, (
                f"{name} exited {proc.returncode}: {(logs / f'{name}.log').read_text()}"
            )

        nginx = start_nginx(tmp_path)
        wait_for(lambda: listening(https) and listening(http), "nginx listening", 15)
        curl = Curl(tmp_path, cert)
        base = f"https://localhost:{https}"

        # TLS with HTTP/2, and the console's health through it.
        code, version, _, body = curl(f"{base}/healthz")
        assert (code, version) == (200, "2"), body
        assert json.loads(body)["ok"] is True
        # Plain HTTP is sent to the same place over HTTPS.
        code, _, headers, _ = curl(f"http://localhost:{http}/jobs/?page=2")
        assert code == 301
        assert headers["location"] == [f"{base}/jobs/?page=2"]

        # A static file comes from nginx: no Content-Security-Policy (Django's middleware adds one to all
        # it serves), cached for good under its hashed name; and (below) it still comes with no worker up.
        manifest = json.loads((STATIC / "staticfiles.json").read_text())["paths"]
        static_url = f"{base}/static/{manifest['ui/console.css']}"
        code, _, headers, body = curl(static_url, "--compressed")
        assert code == 200
        assert body == (STATIC / manifest["ui/console.css"]).read_text()
        assert "content-security-policy" not in headers
        assert headers["content-encoding"] == ["gzip"]  # collectstatic's .gz, sent as it is
        assert headers["cache-control"] == ["public, max-age=31536000, immutable"]
        code, _, headers, _ = curl(f"{base}/healthz")
        assert "content-security-policy" in headers  # a worker's answer has it

        # Bodies: past CLUSTERRA_MAX_UPLOAD_BYTES plus the margin nginx refuses itself; an upload of the
        # largest allowed size still reaches the console (which refuses this one for its missing token).
        limit = int(settings.get("CLUSTERRA_MAX_UPLOAD_BYTES", 10 * 1024 * 1024))
        big, fits = tmp_path / "big", tmp_path / "fits"
        big.write_bytes(b"x" * (limit + 2 * 1024 * 1024))
        fits.write_bytes(b"x" * (limit + 256 * 1024))
        for payload, refused in ((big, True), (fits, False)):
            code, _, _, body = curl(
                f"{base}/accounts/login/", "--data-binary", f"@{payload}", "-H", "Expect:"
            )
            assert (code == 413) is refused, (payload.name, code, body[:200])
            assert code != 413 or "nginx" in body

        # A person signs in (the first administrator, README's step) and gets secure cookies: the console
        # sees HTTPS through X-Forwarded-Proto, or the CSRF origin check would refuse the form.
        login = sh(str(MANAGE), "ensure_admin").stdout
        password = re.search(r"password: (\S+)", login)[1]
        code, _, _, body = curl(f"{base}/admin/login/?next=/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body)[1]
        code, _, headers, body = curl(
            f"{base}/admin/login/?next=/", "-H", f"Origin: {base}", "-H", f"Referer: {base}/admin/login/",
            "--data-urlencode", f"csrfmiddlewaretoken={token}", "--data-urlencode", "username=admin",
            "--data-urlencode", f"password={password}", "--data-urlencode", "next=/",
        )  # fmt: skip
        assert code == 302, body[:500]
        assert headers["location"] == ["/"]
        cookies = {c.split("=", 1)[0]: c for c in headers["set-cookie"]}
        assert "Secure" in cookies["sessionid"]
        assert "HttpOnly" in cookies["sessionid"]
        assert "strict-transport-security" in headers
        code, _, _, body = curl(f"{base}/")
        assert code == 200
        assert "Signed in as admin" in body
        session = re.search(r"sessionid=([^;]+)", cookies["sessionid"])[1]

        # The terminal's WebSocket through /ws/: upgraded by nginx, answered by the consumer. Signed out it
        # refuses the handshake (uvicorn turns a close before accept into a 403); signed in it accepts,
        # says why it cannot open a shell on a cluster that does not exist, and closes with its own code.
        ws_codes = websocket_answers(https, cert, session)
        assert ws_codes == {"signed out": 403, "signed in": 4000}, ws_codes

        # The background units run as clusterra: the sync loop holds its PostgreSQL lock, the timers'
        # jobs each run one pass.
        advisory = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        with psycopg.connect(console_db, autocommit=True) as pg:
            wait_for(lambda: pg.execute(advisory).fetchone()[0] == 1, "the sync loop's advisory lock", 20)
        with ThreadPoolExecutor(len(ONESHOTS)) as pool:
            codes = pool.map(lambda n: units.run(n, log=logs / f"{n}.log"), ONESHOTS)
            results = dict(zip(ONESHOTS, codes, strict=True))
        assert results == dict.fromkeys(ONESHOTS, 0), {n: (logs / f"{n}.log").read_text() for n in ONESHOTS}
        exports = list((DATA / "audit").glob("audit-*.jsonl"))
        assert len(exports) == 1
        assert exports[0].stat().st_uid == account.pw_uid
        owners = sh("ps", "-eo", "user:20=,args=").stdout.splitlines()
        ours = [line.split(None, 1) for line in owners if str(checkout) in line]
        assert len(ours) >= len(LONG_RUNNING), ours
        assert {user for user, _ in ours} == {"clusterra"}, ours
        nginx_workers = sh("ps", "-o", "user:20=", "--ppid", str(nginx.pid)).stdout.split()
        assert nginx_workers
        assert set(nginx_workers) == {"www-data"}

        # Both workers answer, and either alone serves everything: each is stopped in turn (a rolling
        # restart by hand) while requests keep coming, and none fails.
        failed = 0
        for stopped in range(1, WORKERS + 1):
            name = f"clusterra-web@{stopped}.service"
            units.stop(procs[name], name=name)
            for _ in range(10):
                failed += curl(f"{base}/")[0] != 200
            procs[name] = units.start(name, log=logs / f"{name}.log")
            # Back when it answers, as deploy/README's rolling restart waits: a worker stopped leaves its
            # socket file behind (the next one replaces it), so the file alone says nothing.
            wait_for(partial(answers, RUN / f"web-{stopped}.sock"), f"web-{stopped}.sock answering", 30)
        assert failed == 0
        # The access log names the sockets tried for each request; the last one answered.
        answered = [
            re.findall(r"web-\d+", line)[-1:] for line in (tmp_path / "access.log").read_text().splitlines()
        ]
        per_worker = {f"web-{i}": answered.count([f"web-{i}"]) for i in range(1, WORKERS + 1)}
        assert all(count >= 10 for count in per_worker.values()), per_worker
        # No worker at all: pages fail at nginx, static files do not.
        for i in range(1, WORKERS + 1):
            name = f"clusterra-web@{i}.service"
            units.stop(procs.pop(name), name=name)
        assert curl(f"{base}/healthz")[0] == 502
        assert curl(static_url)[0] == 200
        requests = curl.count
        stop_all(procs)
        stop_nginx(nginx)
        nginx = None

        # Uninstalled: the units, the site and the runtime folders go; settings, data, the user stay.
        sh("bash", str(checkout / "deploy" / "install.sh"), "--uninstall")
        for gone in (SYSTEMD / "clusterra-web@.service", SYSTEMD / "clusterra-.service.d", SITE, SITE_LINK,
                     MANAGE, TMPFILES, RUN, SHELLS, STATIC):  # fmt: skip
            assert not gone.exists(), gone
        assert list(SYSTEMD.glob("clusterra*")) == []
        assert env_file.exists()
        assert DATA.exists()
        assert subprocess.run(["getent", "passwd", "clusterra"], capture_output=True).returncode == 0
        # Purged: the machine is as it was found (the database is the operator's to drop).
        sh("bash", str(checkout / "deploy" / "install.sh"), "--uninstall", "--purge")
        assert machine_state() == before
    finally:
        stop_all(procs)
        stop_nginx(nginx)
        if leftover.exists() or ETC.exists():
            subprocess.run(
                ["bash", str(REPO / "deploy" / "install.sh"), "--uninstall", "--purge"], env=CLEAN_ENV
            )
        with psycopg.connect(maintenance, autocommit=True) as pg:
            pg.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        if checkout is not None:
            shutil.rmtree(checkout, ignore_errors=True)

    print(
        f"deploy kit: installed in {install_seconds:.1f} s (again in {again_seconds:.1f} s), {verified}, "
        f"{requests} requests through nginx over HTTP/2, {WORKERS} workers "
        f"({', '.join(f'{k} {v}' for k, v in per_worker.items())} requests), 0 failed while one was down, "
        f"uninstall --purge left the machine as found"
    )


def websocket_answers(port: int, cafile: Path, session: str) -> dict[str, int]:
    """What /ws/ answers through nginx: the handshake's status, or the close code the consumer chose."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    context = ssl.create_default_context(cafile=str(cafile))
    url = f"wss://localhost:{port}/ws/clusters/no-such-cluster/terminal/"
    origin = f"https://localhost:{port}"
    cases = {"signed out": {}, "signed in": {"Cookie": f"sessionid={session}"}}
    found: dict[str, int] = {}
    for case, headers in cases.items():
        try:
            with connect(url, ssl=context, origin=origin, additional_headers=headers, open_timeout=10) as ws:
                messages = []
                try:
                    while True:
                        messages.append(json.loads(ws.recv(timeout=10)))
                except ConnectionClosed as closed:
                    found[case] = closed.rcvd.code if closed.rcvd else -1
                if case == "signed in":  # the consumer spoke before it closed
                    assert [m["type"] for m in messages][-1:] == ["closed"], messages
        except InvalidStatus as refused:
            found[case] = refused.response.status_code
    return found
