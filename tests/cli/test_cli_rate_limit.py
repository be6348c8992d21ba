"""The CLI and a throttled console: a short Retry-After is waited out once; a long one is the person's."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clusterra_cli.client import MAX_RATE_WAIT, ApiFailure, Client


class Throttling(BaseHTTPRequestHandler):
    """A console that answers 429 (with the given Retry-After) `throttled` times, then 200."""

    throttled = 1
    retry_after = "1"
    seen: list[float]

    def do_GET(self) -> None:
        self.seen.append(time.monotonic())
        if len(self.seen) <= self.throttled:
            self._answer(429, {"error": {"code": "rate_limited", "message": "Too many requests."}})
        else:
            self._answer(200, {"username": "ada"})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 429:
            self.send_header("Retry-After", self.retry_after)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def console():
    def start(throttled: int, retry_after: str) -> tuple[str, list[float]]:
        seen: list[float] = []
        handler = type(
            "Handler", (Throttling,), {"throttled": throttled, "retry_after": retry_after, "seen": seen}
        )
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    servers: list[ThreadingHTTPServer] = []
    yield start
    for server in servers:
        server.shutdown()


def test_a_short_retry_after_is_waited_out_once(console):
    url, seen = console(throttled=1, retry_after="1")
    assert Client(url, "token").get("/me") == {"username": "ada"}
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1.0


def test_a_second_429_is_the_persons_to_see(console):
    url, seen = console(throttled=5, retry_after="1")
    with pytest.raises(ApiFailure) as failed:
        Client(url, "token").get("/me")
    assert (failed.value.status, failed.value.code, failed.value.message) == (
        429,
        "rate_limited",
        "Too many requests.",
    )
    assert len(seen) == 2


def test_a_long_retry_after_is_not_waited(console):
    url, seen = console(throttled=1, retry_after=str(MAX_RATE_WAIT + 1))
    started = time.monotonic()
    with pytest.raises(ApiFailure) as failed:
        Client(url, "token").get("/me")
    assert failed.value.status == 429
    assert time.monotonic() - started < 5
    assert len(seen) == 1
