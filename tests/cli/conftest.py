"""Fixtures for the CLI tests: a stub console over real HTTP, and the command run here on a fast clock."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Asked:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class StubConsole:
    """Answers each (method, path) with its queue of answers, the last one again and again; keeps what it was
    asked. Anything it was not told about is a 404 in the console's error shape."""

    url: str = ""
    asked: list[Asked] = field(default_factory=list)
    routes: dict[tuple[str, str], list[tuple[int, Any, dict[str, str]]]] = field(default_factory=dict)

    def on(
        self, method: str, path: str, *answers: Any, status: int = 200, headers: dict | None = None
    ) -> None:
        """Queue answers: a body (with `status`), or a (status, body, headers) tuple."""
        queue = self.routes.setdefault((method, path), [])
        for answer in answers:
            queue.append(answer if isinstance(answer, tuple) else (status, answer, headers or {}))

    def clusters(self, *ids: str) -> None:
        self.on("GET", "/v1/clusters", {"clusters": [{"id": i, "name": f"{i.title()} cluster"} for i in ids]})

    def paths(self, method: str = "") -> list[str]:
        return [a.path for a in self.asked if not method or a.method == method]

    def answer(self, method: str, target: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any, dict]:
        parts = urlsplit(target)
        body = json.loads(raw) if raw else None
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.asked.append(Asked(method, parts.path, query, body, headers))
        queue = self.routes.get((method, parts.path))
        if not queue:
            return 404, {"error": {"code": "not_found", "message": f"No {parts.path} here."}}, {}
        return queue.pop(0) if len(queue) > 1 else queue[0]


def _handler(stub: StubConsole) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body, headers = stub.answer(self.command, self.path, raw, dict(self.headers))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def stub():
    console = StubConsole()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(console))
    # A short poll interval: shutting the server down at each test's end then takes no noticeable time.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    console.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield console
    server.shutdown()
    server.server_close()


class Clock:
    """time.monotonic and time.sleep for the command: sleeping moves the clock at once and is remembered."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture
def clusterra(stub, tmp_path, monkeypatch, capsys):
    """Run `clusterra ARGS…` in this process against the stub, signed in, with its own config folder."""
    from clusterra_cli import client, main, watch

    clock = Clock()
    monkeypatch.setattr(watch, "_sleep", clock.sleep)
    monkeypatch.setattr(watch, "_now", clock.monotonic)
    monkeypatch.setattr(client, "_sleep", clock.sleep)
    for name in ("CLUSTERRA_URL", "CLUSTERRA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    def run(*args: str, token: str | None = "ct_test", url: str | None = None) -> Run:  # noqa: S107 - made up
        monkeypatch.setenv("CLUSTERRA_URL", url or stub.url)
        if token:
            monkeypatch.setenv("CLUSTERRA_TOKEN", token)
        else:
            monkeypatch.delenv("CLUSTERRA_TOKEN", raising=False)
        capsys.readouterr()
        code = main.main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    run.clock = clock
    run.config = tmp_path / "config" / "clusterra" / "config.json"
    return run
