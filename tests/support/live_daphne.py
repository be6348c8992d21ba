"""The real console (ASGI app and static files) under daphne on a free loopback port, for live-server tests.

Two ways, for two needs:

- `forked()`: daphne in a child process, as production runs a worker: its own interpreter lock, event loop
  and database connections. It sees only what the test committed (a transactional test), and a load on
  it does not share a core's interpreter lock with the clients that make the load.
- `in_this_process()`: daphne in a thread of the test's process, so the server uses what the test set up
  in memory (a Stubber'd SSM client, a shorter minute) and writes where the test reads (even SQLite's
  in-memory test database).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
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


@contextmanager
def forked(django_db_blocker: Any, *, setup: Callable[[], None] | None = None) -> Iterator[Served]:
    """daphne forked onto a free loopback port; `setup` runs in the child before it serves (a sync loop)."""
    from channels.testing.live import make_application
    from daphne.testing import DaphneProcess

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
    server = DaphneProcess(
        "127.0.0.1", partial(make_application, static_wrapper=ASGIStaticFilesHandler), setup=setup
    )
    with django_db_blocker.unblock():
        server.start()
    try:
        if not server.ready.wait(START_SECONDS):
            raise RuntimeError(f"daphne did not start within {START_SECONDS} s")
        served = Served(f"http://127.0.0.1:{server.port.value}")
        served.pid = server.pid
        yield served
    finally:
        server.terminate()
        server.join(STOP_SECONDS)


@contextmanager
def in_this_process() -> Iterator[str]:
    """daphne in a thread of this process, on a free loopback port.

    Twisted runs a reactor only once, so each server gets a fresh asyncio reactor, and the process's
    own is put back afterwards (a forked DaphneProcess installs its own anyway).
    """
    import twisted.internet
    import txaio.tx
    from twisted.internet import asyncioreactor

    saved_modules = {
        name: sys.modules.pop(name, None) for name in ("twisted.internet.reactor", "daphne.server")
    }
    saved_reactor = getattr(twisted.internet, "reactor", None)
    saved_txaio_loop = txaio.tx.config.loop  # autobahn's timers find the reactor through txaio
    loop = asyncio.new_event_loop()
    asyncioreactor.install(loop)
    txaio.tx.config.loop = None
    try:
        import daphne.server
        from channels.testing.live import make_application
        from daphne.endpoints import build_endpoint_description_strings
        from twisted.internet import reactor

        daphne.server.twisted_loop.close()  # made at import, unused: the reactor runs `loop`
        server = daphne.server.Server(
            application=make_application(static_wrapper=ASGIStaticFilesHandler),
            endpoints=build_endpoint_description_strings(host="127.0.0.1", port=0),
            signal_handlers=False,
        )
        thread = threading.Thread(target=server.run, name="daphne", daemon=True)
        listening_before = notices.registered()
        thread.start()
        try:
            deadline = time.monotonic() + START_SECONDS
            while not server.listening_addresses:
                if not thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"daphne did not start listening within {START_SECONDS} s")
                time.sleep(0.01)
            yield f"http://127.0.0.1:{server.listening_addresses[0][1]}"
        finally:
            # No shell of the test's Linux user may outlive the server.
            for terminal in live.running():
                end = terminal.end("closed", "The test is over.")
                asyncio.run_coroutine_threadsafe(end, loop).result(STOP_SECONDS)
            reactor.callFromThread(reactor.stop)
            thread.join(STOP_SECONDS)
            # A consumer whose page left as the server stopped may not have let go of its group; its event
            # loop is gone, so it would count as a listener that cannot hear offboarding in the next test.
            for listener in notices.registered() - listening_before:
                notices.forget(listener)
            # The ORM calls ran on asgiref's one shared thread; PostgreSQL would keep its connection open.
            SyncToAsync.single_thread_executor.submit(connections.close_all).result(STOP_SECONDS)
    finally:
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        if saved_reactor is None:
            vars(twisted.internet).pop("reactor", None)
        else:
            twisted.internet.reactor = saved_reactor
        txaio.tx.config.loop = saved_txaio_loop
        loop.close()
