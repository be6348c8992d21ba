"""Test helpers for slurmrestd faults: a proxy in front of the real slurmrestd that misbehaves on cue,
and slurmrestd processes a test starts, kills and restarts itself (never the shared one on :6820).

The proxy speaks plain HTTP/1.1 with keep-alive, as slurmrestd does, and forwards every
request untouched unless a fault is set for it. A fault is chosen per submit by the
job's name (so a burst of concurrent submits meets a known fault each) or for every
request at once:

- `HOLD`: read the request and answer nothing until the client has given up;
- `GATEWAY_ERROR`: answer 503 with a load balancer's page, without forwarding;
- `DIVERT`: forward to another upstream instead (a slurmrestd whose slurmctld is
  unreachable, so the 5xx and its body are the real thing);
- `LOSE_ANSWER`: forward (Slurm really queues the job), then hang up without answering;
- `LOSE_ANSWER_SLOWLY`: forward, then hold the answer until the client has given up.

`stop()` closes the listener and every open connection, so the console meets a refused
connection exactly as if slurmrestd were stopped; `start()` listens on the same port again.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

SLURMRESTD = "/usr/sbin/slurmrestd"
# The user the shared slurmrestd runs as (scripts/slurm-up.sh): never root, never SlurmUser.
SLURMRESTD_USER = "slurmrest"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "proxy-connection", "upgrade", "te"}
GATEWAY_PAGE = b"<html><body><h1>503 Service Unavailable</h1>No server is available.</body></html>"


class Fault(enum.Enum):
    NONE = "none"
    HOLD = "hold"
    GATEWAY_ERROR = "gateway error"
    DIVERT = "divert"
    LOSE_ANSWER = "lose answer"
    LOSE_ANSWER_SLOWLY = "lose answer slowly"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, proxy: FaultyProxy) -> None:
        self.proxy = proxy
        self.open_connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        with self.lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_all(self) -> None:
        with self.lock:
            connections = list(self.open_connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args) -> None:
        pass  # a test's output is for its figures

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = proxy.fault_for(self.command, self.path, body)
        proxy.count(fault)
        if fault is Fault.HOLD:
            time.sleep(proxy.hold_seconds)
            self.close_connection = True
            return
        if fault is Fault.GATEWAY_ERROR:
            self._answer(503, {"Content-Type": "text/html"}, GATEWAY_PAGE)
            return
        upstream = proxy.divert_to if fault is Fault.DIVERT else proxy.upstream
        status, headers, answer = self._forward(upstream, body)
        if self.command == "POST" and self.path.endswith("/job/submit"):
            proxy.note_submit_answer(answer)
        if fault is Fault.LOSE_ANSWER:
            self.close_connection = True
            return
        if fault is Fault.LOSE_ANSWER_SLOWLY:
            time.sleep(proxy.hold_seconds)
            self.close_connection = True
            return
        self._answer(status, headers, answer)

    def _forward(self, upstream: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        target = urlsplit(upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            answer = response.read()
            kept = {
                k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}
            }
            return response.status, kept, answer
        finally:
            conn.close()

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FaultyProxy:
    """A loopback HTTP proxy to a real slurmrestd that injects faults on cue (see the module)."""

    def __init__(self, upstream: str, *, hold_seconds: float = 5.0, divert_to: str | None = None) -> None:
        self.upstream = upstream
        self.divert_to = divert_to
        self.hold_seconds = hold_seconds
        self.port = free_port()
        self.everything = Fault.NONE
        self.by_job_name: dict[str, Fault] = {}
        self.faults: Counter[Fault] = Counter()
        # Job ids slurmrestd gave for submits that passed through, answered or not.
        self.queued: list[int] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultyProxy:
        self._server = _Server(("127.0.0.1", self.port), _Handler, self)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="faulty-slurmrestd").start()
        return self

    def stop(self) -> None:
        """As if slurmrestd were stopped: the port refuses connections and open ones are cut."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.drop_all()

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fault_for(self, method: str, path: str, body: bytes) -> Fault:
        if self.everything is not Fault.NONE:
            return self.everything
        if method == "POST" and path.endswith("/job/submit") and self.by_job_name:
            try:
                name = json.loads(body).get("job", {}).get("name", "")
            except (ValueError, AttributeError):
                name = ""
            return self.by_job_name.get(name, Fault.NONE)
        return Fault.NONE

    def count(self, fault: Fault) -> None:
        if fault is not Fault.NONE:
            with self._lock:
                self.faults[fault] += 1

    def note_submit_answer(self, answer: bytes) -> None:
        try:
            job_id = json.loads(answer).get("job_id")
        except (ValueError, AttributeError):
            return
        if isinstance(job_id, int):
            with self._lock:
                self.queued.append(job_id)


# --- slurmrestd processes owned by a test -------------------------------------------------------


def can_run_slurmrestd() -> str:
    """Why this machine cannot start a slurmrestd of its own, or "" when it can."""
    if os.geteuid() != 0:
        return "needs root to start slurmrestd as its service user"
    if not os.access(SLURMRESTD, os.X_OK):
        return f"{SLURMRESTD} is not installed"
    try:
        pwd.getpwnam(SLURMRESTD_USER)
    except KeyError:
        return f"no {SLURMRESTD_USER} user (scripts/slurm-up.sh makes it)"
    return ""


def unreachable_controller_conf(slurm_conf: Path = Path("/etc/slurm/slurm.conf")) -> Path:
    """A copy of slurm.conf whose slurmctld port nobody listens on: a slurmrestd reading it is up,
    but every request it forwards fails the way it does when slurmctld is down.

    In a new folder of its own under /tmp (the caller removes it): slurmrestd drops to its
    own user before it reads the file, and pytest's folders are root's alone.
    """
    folder = Path(tempfile.mkdtemp(prefix="clusterra-ctld-down-"))
    folder.chmod(0o755)
    dead = free_port()
    lines = [
        f"SlurmctldPort={dead}" if line.startswith("SlurmctldPort=") else line
        for line in slurm_conf.read_text().splitlines()
        if not line.startswith("MessageTimeout=")
    ]
    # Without it slurmrestd retries the dead port for seconds before answering.
    lines.append("MessageTimeout=1")
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    for sibling in ("gres.conf",):
        if (slurm_conf.parent / sibling).exists():
            shutil.copy(slurm_conf.parent / sibling, folder / sibling)
    for path in folder.iterdir():
        path.chmod(0o644)
    return conf


class OwnSlurmrestd:
    """A slurmrestd started the way scripts/slurm-up.sh starts the shared one, on its own port.

    Same binary, user, auth/jwt and SLURM_JWT=daemon; `conf` may point it at another
    slurm.conf. Only the process started here is ever signalled, by its own pid.
    """

    def __init__(self, log: Path, *, conf: Path | None = None, plugins: str = "openapi/v0.0.38") -> None:
        self.port = free_port()
        self.conf = conf
        self.plugins = plugins
        self.log = log
        self.process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> OwnSlurmrestd:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURMRESTD_")}
        # slurmrestd's own credential for slurmctld is the JWT it is handed per request.
        env["SLURM_JWT"] = "daemon"
        if self.conf is not None:
            env["SLURM_CONF"] = str(self.conf)
        argv = [SLURMRESTD, "-u", SLURMRESTD_USER, "-g", SLURMRESTD_USER, "-a", "rest_auth/jwt"]
        argv += ["-s", self.plugins, f"127.0.0.1:{self.port}"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"slurmrestd exited with {self.process.returncode}; see {self.log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                break
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"slurmrestd did not listen on {self.port} within {timeout:g} s")
            time.sleep(0.02)
        self.starts += 1
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> OwnSlurmrestd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill(signal.SIGTERM)
