"""The real console (ASGI app and static files) under uvicorn on a free loopback port, for live-server tests.

uvicorn as production runs each web worker (deploy/systemd/clusterra-web@.service; bench/README.md, "Which
ASGI server", says why it and not daphne): uvloop, httptools, the websockets library. Two ways, for two needs:

- `forked()`: the server in a child process, as production runs a worker: its own interpreter lock, event
  loop and database connections. It sees only what the test committed (a transactional test), and a load on
  it does not share a core's interpreter lock with the clients that make the load.
- `in_this_process()`: the server in a thread of the test's process, so it uses what the test set up in
  memory (a Stubber'd SSM client, a shorter minute) and writes where the test reads (even SQLite's in-memory
  test database).

`command()` is the command line of a worker started as its own program (the shell keeper's tests, a restored
backup).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from asgiref.sync import SyncToAsync
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.db import connections

from terminal import live, notices

# Seconds a server may take to listen, and to stop.
START_SECONDS = 30
STOP_SECONDS = 10
_fork_fix_registered = False


class Served(str):
    """The server's base URL, and the process serving it (a forked server's), for CPU accounting."""

    pid: int


def cpu_seconds(pid: int) -> float:
    """User plus system CPU the process has used so far, all its threads (/proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fresh_single_thread_executor() -> None:
    # The forked server copies asgiref's one-thread executor but not its thread; calls queued on it
    # (the WebSocket's session lookup) would wait forever. The child gets an executor of its own.
    SyncToAsync.single_thread_executor = ThreadPoolExecutor(max_workers=1)


# What every worker here runs with, as the systemd unit spells it (no access log: nginx keeps one).
OPTIONS: dict[str, Any] = {
    "loop": "uvloop",
    "http": "httptools",
    "ws": "websockets-sansio",
    "ws_per_message_deflate": False,
    "lifespan": "off",
}


def command(port: int, app: str = "clusterra_site.asgi:application") -> list[str]:
    """A worker as a program of its own, serving `app` on 127.0.0.1:port."""
    options = [f"--{name.replace('_', '-')}={str(value).lower()}" for name, value in OPTIONS.items()]
    listen = ["--host=127.0.0.1", f"--port={port}"]
    return [sys.executable, "-m", "uvicorn", *listen, *options, "--no-access-log", app]


def _server(sock: socket.socket):
    import uvicorn
    from channels.routing import get_default_application

    application = ASGIStaticFilesHandler(get_default_application())
    config = uvicorn.Config(
        application, **OPTIONS, log_level="warning", access_log=False, timeout_graceful_shutdown=STOP_SECONDS
    )
    return uvicorn.Server(config)


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _serve_in_child(sock: socket.socket, setup: Callable[[], None] | None, failed: Any) -> None:
    try:
        if setup is not None:
            setup()
        _server(sock).run(sockets=[sock])
    except BaseException as e:
        failed.put(repr(e))
        raise


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def forked(django_db_blocker: Any, *, setup: Callable[[], None] | None = None) -> Iterator[Served]:
    """The server forked onto a free loopback port; `setup` runs in the child first (a sync loop, say)."""
    global _fork_fix_registered
    if not _fork_fix_registered:
        os.register_at_fork(after_in_child=_fresh_single_thread_executor)
        _fork_fix_registered = True
    # The child must not share the parent's database sockets: each side would read the other's answers.
    # A PostgreSQL connection pool holds sockets too, and its worker threads would not exist in the child:
    # it is closed here, and each process opens a pool of its own when it next needs one.
    connections.close_all()
    for connection in connections.all(initialized_only=True):
        if getattr(connection, "pool", None) is not None:
            connection.close_pool()
    # Bound here, so the port is known before the child listens on it.
    sock = _listening_socket()
    port = sock.getsockname()[1]
    fork = multiprocessing.get_context("fork")
    failed = fork.Queue()
    child = fork.Process(target=_serve_in_child, args=(sock, setup, failed), name="live-server", daemon=True)
    with django_db_blocker.unblock():
        child.start()
    sock.close()
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _answers(port):
            if not child.is_alive() or time.monotonic() > deadline:
                why = failed.get(timeout=1) if not failed.empty() else "no error caught"
                raise RuntimeError(f"the server did not start within {START_SECONDS} s: {why}")
            time.sleep(0.02)
        served = Served(f"http://127.0.0.1:{port}")
        served.pid = child.pid
        yield served
    finally:
        child.terminate()  # SIGTERM: uvicorn closes its sockets and connections, then exits
        child.join(STOP_SECONDS + 5)
        if child.is_alive():
            child.kill()
            child.join(STOP_SECONDS)


@contextmanager
def in_this_process() -> Iterator[str]:
    """The server in a thread of this process, on a free loopback port, with an event loop of its own."""
    import uvloop

    sock = _listening_socket()
    server = _server(sock)
    loop = uvloop.new_event_loop()
    thread = threading.Thread(
        target=loop.run_until_complete, args=(server.serve(sockets=[sock]),), name="live-server", daemon=True
    )
    listening_before = notices.registered()
    thread.start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start listening within {START_SECONDS} s")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        # No shell of the test's Linux user may outlive the server.
        for terminal in live.running():
            end = terminal.end("closed", "The test is over.")
            asyncio.run_coroutine_threadsafe(end, loop).result(STOP_SECONDS)
        server.should_exit = True
        thread.join(STOP_SECONDS + 5)
        # A consumer whose page left as the server stopped may not have let go of its group; its event
        # loop is gone, so it would count as a listener that cannot hear offboarding in the next test.
        for listener in notices.registered() - listening_before:
            notices.forget(listener)
        # The ORM calls ran on asgiref's one shared thread; PostgreSQL would keep its connection open.
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(STOP_SECONDS)
        loop.close()
        sock.close()
