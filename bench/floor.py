"""The console's ASGI application plus one route that does nothing: the framework's floor for row 8.

`GET /bench/floor` goes through the same server, the same Django and the console's own middleware as every
page, to a view that answers a few bytes of text: no session is read (the client sends no cookie), no
database is touched, no template rendered. What the console spends above it on a request is its own.
Every other URL is the console's, unchanged; the bench serves this module instead of
clusterra_site.asgi so that both are measured on one server, turn by turn.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

from bench.load import FLOOR_PATH
from clusterra_site.asgi import application  # noqa: F401 - what the server serves; sets Django up
from clusterra_site.urls import urlpatterns as console_urls


def floor(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok\n", content_type="text/plain")


async def floor_async(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"ok\n", content_type="text/plain")


urlpatterns = [
    path(FLOOR_PATH.lstrip("/"), floor, name="bench-floor"),
    path(FLOOR_PATH.lstrip("/") + "/async", floor_async, name="bench-floor-async"),
    *console_urls,
]
# The console's URLs plus the floor's; Django reads ROOT_URLCONF again on every request.
settings.ROOT_URLCONF = __name__
