"""A loopback HTTP server that answers like slurmrestd, for the transport, client and adapter tests."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-token-never-logged.sig"
NOT_FOUND_TEXT = "Unable find requested URL. Please view /openapi/v3 for API reference."
META_38 = {
    "plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"},
    "Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"},
}


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    text: str | None = None
    content_type: str | None = None
    delay: float = 0.0
    reset: bool = False


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_port: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeSlurmrestd:
    """A loopback HTTP server that answers like slurmrestd: scripted replies per (method, path)."""

    routes: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                fake.seen.append(
                    Seen(
                        self.command,
                        url.path,
                        parse_qs(url.query),
                        dict(self.headers.items()),
                        body,
                        self.client_address[1],
                    )
                )
                reply = fake.next_reply(self.command, url.path)
                if reply.reset:
                    # RST instead of FIN: what a slurmrestd under load did once in 2,000 requests.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if reply.delay:
                    time.sleep(reply.delay)
                self.send(reply)

            def send(self, reply: Reply) -> None:
                if reply.body is not None:
                    payload = json.dumps(reply.body).encode()
                    content_type = reply.content_type or "application/json"
                else:
                    payload = (reply.text or "").encode()
                    content_type = reply.content_type or "text/plain"
                self.send_response(reply.status)
                if reply.status != 304:
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                if reply.status >= 400:
                    # slurmrestd closes the connection after every error answer.
                    self.send_header("Connection", "Close")
                    self.close_connection = True
                self.end_headers()
                if reply.status != 304:
                    self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = handle_one

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, method: str, path: str, *replies: Reply, **one: Any) -> None:
        """Script the answers to (method, path); the last one repeats."""
        self.routes[(method, path)] = list(replies) if replies else [Reply(**one)]

    def next_reply(self, method: str, path: str) -> Reply:
        queue = self.routes.get((method, path))
        if not queue:
            return Reply(404, text=NOT_FOUND_TEXT)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
