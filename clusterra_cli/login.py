"""`clusterra login` in the browser: the console makes a token and posts it back to a loopback address.

The command listens on 127.0.0.1 (a random port) for one POST carrying the token and
the random `state` it sent, opens the console's /tokens/cli/ page, and waits. The
console only ever posts to a loopback address, and the state ties the answer to this
run, so a token cannot be handed to another program or another computer.
"""

from __future__ import annotations

import secrets
import socket
import threading
import webbrowser
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlencode

WAIT_SECONDS = 300
DONE_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>clusterra</title>"
    b"<p>The clusterra command is signed in. You can close this tab.</p>"
)


class LoginFailed(Exception):
    pass


class _Catcher(HTTPServer):
    state: str
    token: str = ""
    url: str = ""


class _Handler(BaseHTTPRequestHandler):
    server: _Catcher

    def do_POST(self) -> None:  # the name http.server calls
        length = min(int(self.headers.get("Content-Length") or 0), 16384)
        fields = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        state = fields.get("state", [""])[0]
        token = fields.get("token", [""])[0]
        if not secrets.compare_digest(state, self.server.state) or not token:
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"This answer is not for this clusterra login.")
            return
        self.server.token = token
        self.server.url = fields.get("url", [""])[0]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write(DONE_PAGE)

    def log_message(self, format: str, *args: object) -> None:
        # Quiet: the request line is not worth printing, and the body holds the token.
        return


def browser_login(
    console_url: str,
    *,
    open_browser: bool = True,
    say: Callable[[str], None] = print,
    wait: float = WAIT_SECONDS,
) -> str:
    """The token the person approved in the browser; LoginFailed after `wait` seconds or on a bad answer."""
    server = _Catcher(("127.0.0.1", 0), _Handler)
    server.state = secrets.token_urlsafe(24)
    server.timeout = 1.0
    port = server.server_address[1]
    query = urlencode(
        {"callback": f"http://127.0.0.1:{port}/callback", "state": server.state, "host": socket.gethostname()}
    )
    page = f"{console_url.rstrip('/')}/tokens/cli/?{query}"
    say(f"Approve this computer in the console: {page}")
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(page,), daemon=True).start()
    try:
        deadline = wait
        while not server.token and deadline > 0:
            server.handle_request()
            deadline -= server.timeout
    finally:
        server.server_close()
    if not server.token:
        raise LoginFailed(f"No answer from the console within {wait:g} s; run `clusterra login` again.")
    return server.token
