"""The one ASGI application the web worker serves: HTTP through Django, WebSockets through Channels."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clusterra_site.settings")

# Django must be set up before anything imports models (the WebSocket routes will); its own HTTP handler is
# replaced below.
get_asgi_application()

from asgiref.sync import sync_to_async  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.core.handlers.base import BaseHandler  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from clusterra_site.routing import websocket_urlpatterns  # noqa: E402
from clusters.turns import Turns  # noqa: E402


class PagesOnWorkerThreads(ASGIHandler):
    """Django's HTTP handling, each request's synchronous work done in one go on a long-lived thread.

    Every view and middleware of the console is synchronous. Django's own ASGI handler starts a new thread
    for every request (asgiref's ThreadSensitiveContext), runs the middleware there, hops back to the
    event loop for the view and out to the thread again, and sends the request signals through the thread
    too: a thread start and join and five or so hand-overs per request, and with each new thread a new
    Redis connection for the cache (Django's caches are per thread). Here the whole request (the
    request_started signal, middleware, view, request_finished) runs as a WSGI server would run it, in
    one call on one of CLUSTERRA_WEB_THREADS threads that live as long as the worker; only reading the
    body and sending the answer stay on the event loop.

    Of those threads, CLUSTERRA_WEB_RUNNING run a request at a time (clusters.turns): a turn is taken
    before the request's Django work and given back early by a call that waits on a head node.

    asgiref's sync_to_async with an executor keeps what a view's async_to_sync needs (it goes back to
    this event loop, as the channel layer's calls must).
    """

    def __init__(self, threads: int, running: int) -> None:
        # Not ASGIHandler's __init__: it builds the asynchronous middleware chain, which is not used.
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self.thread_count = threads
        self.turns = Turns(min(running, threads) if running else threads)
        self._start_threads()
        # A process forked from this one (a test's server) has none of these threads: it starts its own.
        os.register_at_fork(after_in_child=self._start_threads)

    def _start_threads(self) -> None:
        self.threads = ThreadPoolExecutor(max_workers=self.thread_count, thread_name_prefix="page")
        self.respond = sync_to_async(self._respond, thread_sensitive=False, executor=self.threads)
        self.close = sync_to_async(self._close, thread_sensitive=False, executor=self.threads)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"{type(self).__name__} serves HTTP only, not {scope['type']}")
        try:
            body = await self.read_body(receive)
        except RequestAborted:  # the client left before it had sent its body
            return
        try:
            response = await self.respond(scope, body)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:
                    # Its content was read while it was being sent; request_finished comes after that.
                    await self.close(response)
        finally:
            body.close()

    def _respond(self, scope: dict[str, Any], body: Any) -> HttpResponse:
        with self.turns.taken():
            set_script_prefix(get_script_prefix(scope))
            signals.request_started.send(sender=type(self), scope=scope)
            request, refused = self.create_request(scope, body)
            response = refused if request is None else self.get_response(request)
            if not response.streaming:
                # The body is in memory already: the request ends here, on the thread that did the work,
                # so its database connection goes back to the pool now (request_finished), not after the
                # send.
                self._close(response)
            return response

    @staticmethod
    def _close(response: HttpResponse) -> None:
        response.close()


def _threads() -> int:
    if settings.CLUSTERRA_WEB_THREADS:
        return settings.CLUSTERRA_WEB_THREADS
    # As many as the database pool lends connections: a request without one would only wait for it.
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    return pool["max_size"] if isinstance(pool, dict) else 10


application = ProtocolTypeRouter(
    {
        "http": PagesOnWorkerThreads(_threads(), settings.CLUSTERRA_WEB_RUNNING),
        # The Origin check keeps another site's page from opening a shell with our session cookie.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
