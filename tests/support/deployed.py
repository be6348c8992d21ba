"""An installed console, for the deploy tests: the checkout copied where its units can read it, install.sh,
the units started by their own command lines (tests/support/units.py), Debian's nginx in front, curl.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.conftest import REPO, require
from tests.support import units

CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
ETC = Path("/etc/clusterra")
SYSTEMD = Path("/etc/systemd/system")
SITE = Path("/etc/nginx/sites-available/clusterra.conf")
SITE_LINK = Path("/etc/nginx/sites-enabled/clusterra.conf")
MANAGE = Path("/usr/local/sbin/clusterra-manage")
DATA = Path("/var/lib/clusterra")
STATIC = Path("/var/lib/clusterra-static")
BACKUPS = Path("/var/backups/clusterra")
TMPFILES = Path("/etc/tmpfiles.d/clusterra.conf")
RUN, SHELLS = Path("/run/clusterra"), Path("/run/clusterra-shells")
# Every path install.sh may create: the machine is compared on them before and after.
TOUCHED = [
    ETC,
    SITE,
    SITE_LINK,
    MANAGE,
    DATA,
    STATIC,
    BACKUPS,
    TMPFILES,
    RUN,
    SHELLS,
    Path("/var/www/clusterra-acme"),
]
TOUCHED += [SYSTEMD / n for n in ("clusterra.target", "clusterra-web@.service", "clusterra-.service.d")]


def sh(
    *argv: str, timeout: float = 120, env: dict[str, str] = CLEAN_ENV, **kw
) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def machine_state() -> dict[str, object]:
    """What install.sh could leave behind: its paths, the user and group."""
    state: dict[str, object] = {str(p): p.exists() or p.is_symlink() for p in TOUCHED}
    state["units"] = sorted(p.name for p in SYSTEMD.glob("clusterra*"))
    for kind in ("passwd", "group"):
        state[kind] = subprocess.run(["getent", kind, "clusterra"], capture_output=True).returncode == 0
    return state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, seconds: float = 30) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"{what} not within {seconds} s"
        time.sleep(0.1)
    return time.monotonic() - started


def answers(path: Path) -> bool:
    """Whether a server listens on the UNIX socket at `path` (a stopped one may leave the file behind)."""
    with socket.socket(socket.AF_UNIX) as probe:
        return probe.connect_ex(str(path)) == 0


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Curl:
    """curl through nginx, with the test's CA, a cookie jar and the answer's headers kept."""

    def __init__(self, folder: Path, cafile: Path) -> None:
        self.folder, self.cafile, self.count = folder, cafile, 0
        self.jar = folder / "cookies"

    def __call__(self, url: str, *args: str) -> tuple[int, str, dict[str, list[str]], str]:
        """(status, HTTP version, headers (lower-cased names), body) of one request."""
        self.count += 1
        head, body = self.folder / "head", self.folder / "body"
        done = sh(
            "curl", "-sS", "--http2", "--cacert", str(self.cafile), "-b", str(self.jar), "-c", str(self.jar),
            "-D", str(head), "-o", str(body), "-w", "%{http_code} %{http_version}", *args, url, timeout=30,
        )  # fmt: skip
        code, version = done.stdout.split()
        headers: dict[str, list[str]] = {}
        for line in head.read_text().splitlines()[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers.setdefault(name.strip().lower(), []).append(value.strip())
        return int(code), version, headers, body.read_text(errors="replace")


def nginx_conf(folder: Path) -> Path:
    """Debian's /etc/nginx/nginx.conf with its own pid file, logs and only the console's site.

    Its user (www-data), modules, TLS and gzip settings stay: nginx reaches the workers' sockets and the
    static folder as it would on a server. The access log names the upstream that answered each request.
    """
    text = Path("/etc/nginx/nginx.conf").read_text()
    swaps = [
        (r"(?m)^pid\s+\S+;", f"pid {folder}/nginx.pid;"),
        (r"(?m)^error_log\s+\S+;", f"error_log {folder}/error.log;"),
        (
            r"(?m)^\s*access_log\s+\S+;",
            f"log_format upstreams '$status $upstream_addr \"$request\"';\n"
            f"access_log {folder}/access.log upstreams;",
        ),
        (r"(?m)^\s*include /etc/nginx/sites-enabled/\*;", f"include {SITE_LINK};"),
    ]
    for pattern, replacement in swaps:
        text, found = re.subn(pattern, replacement, text)
        assert found == 1, f"Debian's nginx.conf no longer has {pattern!r}: adapt the test"
    path = folder / "nginx.conf"
    path.write_text(text)
    return path


def database_urls() -> tuple[str, str, str]:
    """(the server's maintenance database, a fresh database for the console, its name)."""
    url = os.environ.get("DATABASE_URL", "")
    require(url.startswith(("postgres://", "postgresql://")), "needs PostgreSQL: DATABASE_URL=postgres://…")
    name = f"clusterra_deploy_{secrets.token_hex(4)}"
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres")), urlunsplit(parts._replace(path=f"/{name}")), name


def stop_all(procs: dict[str, subprocess.Popen]) -> None:
    while procs:
        name, proc = procs.popitem()
        units.stop(proc, name=name)


def stop_nginx(nginx: subprocess.Popen | None) -> None:
    """SIGQUIT: nginx's graceful stop; whatever is left after 10 s is killed."""
    if nginx is None or nginx.poll() is not None:
        return
    nginx.send_signal(signal.SIGQUIT)
    try:
        nginx.wait(10)
    except subprocess.TimeoutExpired:
        nginx.kill()
        nginx.wait(5)


def copy_checkout() -> Path:
    """The checkout, as README's "make setup" leaves it, in /opt: the units cannot see /home or /root, and
    Debian's python3 (this machine's PATH finds root's own Python first, which `clusterra` cannot run)."""
    checkout = Path(f"/opt/clusterra-deploy-test-{secrets.token_hex(3)}")
    checkout.mkdir(mode=0o755)
    # Both virtualenvs are made anew: one made by another interpreter (root's own Python) is not Debian's to
    # reuse, and `make setup` would try to, whenever a lock file is newer than it.
    excluded = (
        "./.venv",
        "./.venv-uv",
        "./.git",
        "./data",
        "./test-artifacts",
        "__pycache__",
        ".pytest_cache",
    )
    tar = subprocess.Popen(
        ["tar", "-C", str(REPO), *(f"--exclude={e}" for e in excluded), "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    sh("tar", "-C", str(checkout), "-xf", "-", stdin=tar.stdout)
    assert tar.wait() == 0
    # In the operator's own environment (uv reads PyPI's address and certificates from it).
    sh("make", "-C", str(checkout), "setup", "PY=/usr/bin/python3", timeout=300, env=dict(os.environ))
    return checkout


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost and its key, valid for a day."""
    cert, key = folder / "tls.crt", folder / "tls.key"
    sh(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    return cert, key


def start_nginx(folder: Path) -> subprocess.Popen:
    """Debian's nginx with the installed site, in the foreground of a process of the test's."""
    return subprocess.Popen(
        ["nginx", "-c", str(nginx_conf(folder)), "-e", str(folder / "error.log"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
