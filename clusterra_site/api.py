"""/v1: one NinjaAPI that mounts each app's router, answers every refusal in one shape, and limits each token.

The routes live with the apps that own them (access.api: you, clusters, partitions, quotas;
jobs.api: jobs) on what accounts.api gives them all (the bearer token, the error shape, `{id}`).
Here: the API itself, its OpenAPI document (derived from the routers' schemas) and the page that
shows it, the URL patterns, and what none of the routes should write for itself: the JSON body's
checks, the error answers, the per-token rate limit.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable
from functools import cache, wraps
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path, re_path
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Router
from ninja.errors import HttpError, Throttled, ValidationError
from ninja.parser import Parser
from ninja.throttling import SimpleRateThrottle

from access.api import router as access_router
from accounts.api import BearerToken
from clusterra_site import api_docs
from clusters.refusal import Refusal
from jobs.api import router as jobs_router

API_VERSION = "1.0.0"
NOT_FOUND_ROUTE = "v1-not-found"
MAX_BODY_BYTES = 64 * 1024

log = logging.getLogger("clusterra.api")
bearer = BearerToken()


class JsonBody(Parser):
    """A request body is one JSON object of at most MAX_BODY_BYTES, sent as application/json."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type and content_type != "application/json":
            raise Refusal("Send the body as application/json.", code="unsupported_media_type", status=415)
        if len(request.body) > MAX_BODY_BYTES:
            raise Refusal(f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.", code="invalid_request")
        try:
            data = json.loads(request.body)
        except ValueError as e:
            raise Refusal(f"The body is not valid JSON: {e}.", code="invalid_json") from None
        if not isinstance(data, dict):
            raise Refusal("The body must be a JSON object.", code="invalid_request")
        return data


class PerToken(SimpleRateThrottle):
    """At most CLUSTERRA_API_RATE requests ("120/min") per API token, counted in the cache all workers share.

    The rate is read on each request, so a changed setting applies at once. The document and
    its page, asked for without a token, are not counted.

    One instance serves every request of the process, on several threads at once
    (clusterra_site.asgi), so nothing of a request is kept on it: ninja's own allow_request keeps the
    token's key and history there, and two requests at once could write one token's history under the
    other's key. The seconds to wait, asked for just after a refusal on the same thread, are the
    thread's.
    """

    scope = "v1"

    def __init__(self) -> None:
        """The rate is read per request (allow_request), not once here."""
        self._refused = threading.local()
        self._lock = threading.Lock()

    def allow_request(self, request: HttpRequest) -> bool:
        key = self.get_cache_key(request)
        if key is None:
            return True
        most, seconds = self.parse_rate(settings.CLUSTERRA_API_RATE)
        count_within = getattr(self.cache, "count_within", None)
        if count_within is not None:
            # Redis (clusterra_site.cache): counted there in one atomic round trip, for every worker.
            # Its own key: a sorted set where the list of earlier releases may still sit for a minute.
            wait = count_within(f"{key}:times", most, seconds, self.timer())
        else:
            wait = self._count_here(key, most, seconds)
        if wait is None:
            return True
        self._refused.wait = wait
        return False

    def _count_here(self, key: str, most: int, seconds: float) -> float | None:
        """count_within for the in-memory cache: one process, so a lock makes the read and write one."""
        with self._lock:
            # The clock read under the lock, so the history is in the order of its times: a request that
            # read it before waiting here would otherwise find newer times than its own and be told to
            # wait longer than the window.
            now = self.timer()
            # Newest first: the times of this token's requests still inside the window.
            history = [at for at in self.cache.get(key, []) if at > now - seconds]
            if len(history) >= most:
                # Until the oldest one counted leaves the window, and one more may go.
                return seconds - (now - history[-1])
            history.insert(0, now)
            self.cache.set(key, history, seconds)
            return None

    def get_cache_key(self, request: HttpRequest) -> str | None:
        token = getattr(request, "auth", None)  # the token's digest (accounts.api.BearerToken)
        return None if token is None else self.cache_format % {"scope": self.scope, "ident": token}

    def wait(self) -> float:
        """Seconds until the oldest request counted leaves the window, and one more may go (this thread's)."""
        return getattr(self._refused, "wait", 1.0)


api = NinjaAPI(
    title="Clusterra API",
    version=API_VERSION,
    description=(
        "Authenticate with a personal API token: `Authorization: Bearer <token>` (make one on the "
        "console's API tokens page, or with `clusterra login`). Errors are "
        '`{"error": {"code", "message"}}`; a policy denial is 403 with the decision\'s sentence. '
        "`{id}` is the cluster's slug."
    ),
    auth=bearer,
    throttle=PerToken(),
    parser=JsonBody(),
    # Served by the operations below, so the document lists them as it always has.
    openapi_url=None,
    docs_url=None,
    urls_namespace="v1",
    openapi_extra={
        "info": {"summary": "Submit, watch and cancel Slurm jobs as yourself."},
        "tags": [
            {"name": "people", "description": "You."},
            {"name": "clusters", "description": "Clusters, partitions and quotas."},
            {"name": "jobs", "description": "Submit, list, show, cancel, output."},
            {"name": "documentation", "description": "This document."},
        ],
    },
)


def answer(request: HttpRequest, refusal: Refusal) -> HttpResponse:
    """A refusal as /v1 says it: `{"error": {"code", "message"}}` with its status and headers."""
    response = api.create_response(
        request, {"error": {"code": refusal.code, "message": refusal.message}}, status=refusal.status
    )
    for name, value in refusal.headers.items():
        response[name] = value
    return response


@api.exception_handler(Refusal)
def _refused(request: HttpRequest, exc: Refusal) -> HttpResponse:
    return answer(request, exc)


@api.exception_handler(Throttled)
def _throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    # ninja adds Retry-After to this answer, from the same wait.
    return answer(
        request,
        Refusal(
            f"Too many requests with this API token (at most {settings.CLUSTERRA_API_RATE}); "
            f"try again in {math.ceil(exc.wait or 1)} seconds.",
            code="rate_limited",
            status=429,
        ),
    )


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    # ninja wraps whatever the body parser raises in HttpError(400): JsonBody's own refusal is the answer.
    if isinstance(exc.__cause__, Refusal):
        return answer(request, exc.__cause__)
    return answer(request, Refusal(f"{exc.message}.", code="invalid_request", status=exc.status_code))


@api.exception_handler(ValidationError)
def _unreadable(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    # The schemas' own checks raise Refusals; what ninja refuses before them is a request with no body.
    return answer(request, Refusal("The body must be a JSON object.", code="invalid_request"))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return answer(request, Refusal(str(exc) or "Not found.", code="not_found", status=404))


@api.exception_handler(Exception)
def _failed(request: HttpRequest, exc: Exception) -> HttpResponse:
    log.exception("API %s %s failed", request.method, request.path, exc_info=exc)
    return answer(
        request,
        Refusal(
            "The console failed to answer this request; the error is logged. Try again later.",
            code="internal_error",
            status=500,
        ),
    )


# --- the document and its page, read without a token ---------------------------------------------

documentation = Router(tags=["documentation"], auth=None)


@documentation.get(
    "/openapi.json",
    url_name="v1-openapi",
    operation_id="getOpenApi",
    summary="This document",
    openapi_extra={
        "security": [],
        "responses": {
            200: {
                "description": "The OpenAPI 3 document of /v1.",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    },
)
def openapi_json(request: HttpRequest) -> HttpResponse:
    return JsonResponse(document(request), json_dumps_params={"indent": 1})


@documentation.get(
    "/docs",
    url_name="v1-docs",
    operation_id="getDocs",
    summary="This document as a web page",
    openapi_extra={
        "security": [],
        "responses": {
            200: {
                "description": "The API reference as HTML.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    },
)
def docs(request: HttpRequest) -> HttpResponse:
    return api_docs.page(request, document(request))


api.add_router("", access_router)
api.add_router("", jobs_router)
api.add_router("", documentation)


@cache
def _document() -> dict[str, Any]:
    """ninja's document of the routers, as clients read it (JSON), with each path's own parameters said
    once for the path rather than under each of its methods."""
    derived = json.loads(json.dumps(api.get_openapi_schema(path_prefix="")))
    for item in derived["paths"].values():
        shared: list[dict[str, Any]] = []
        for operation in item.values():
            own = []
            for parameter in operation.pop("parameters", []):
                if parameter["in"] != "path":
                    own.append(parameter)
                elif parameter not in shared:
                    shared.append(parameter)
            if own:
                operation["parameters"] = own
        if shared:
            item["parameters"] = shared
    return derived


def document(request: HttpRequest | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of /v1; its server is this console's /v1 when a request says where that is."""
    server = "/v1" if request is None else request.build_absolute_uri("/v1")
    return {**_document(), "servers": [{"url": server}]}


# --- the URL patterns ------------------------------------------------------------------------------


def _one_path(
    view: Callable[..., HttpResponse], allowed: list[str], public: bool
) -> Callable[..., HttpResponse]:
    """ninja's view of one path; a method the path lacks is refused in the error shape, after the token."""
    words = ", ".join(allowed)

    @wraps(view)
    def one_path(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method in allowed:
            return view(request, *args, **kwargs)
        try:
            if not public:
                bearer(request)
            raise Refusal(
                f"{request.method} is not allowed here; use {words}.",
                code="method_not_allowed",
                status=405,
                headers={"Allow": words},
            )
        except Refusal as refusal:
            return answer(request, refusal)

    # What a token reads is the person's own and must not be kept by a cache on the way.
    return one_path if public else never_cache(one_path)


def _urlpatterns() -> list[URLPattern]:
    paths = _document()["paths"]
    routes: dict[str, URLPattern] = {}
    for pattern in api.urls[0]:
        route = str(pattern.pattern)
        # ninja makes one pattern per method of a path, all alike, and one for a root page /v1 has not.
        if route in routes or pattern.name == "api-root":
            continue
        item = paths["/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)]
        operations = {method: op for method, op in item.items() if method != "parameters"}
        public = all(op.get("security") == [] for op in operations.values())
        allowed = sorted(method.upper() for method in operations)
        routes[route] = path(route, _one_path(pattern.callback, allowed, public), name=pattern.name)
    return list(routes.values())


@csrf_exempt
def not_found(request: HttpRequest, rest: str) -> HttpResponse:
    """Anything else under /v1 answers in the API's error shape, not with an HTML page."""
    return answer(
        request,
        Refusal(f"There is no API route /v1/{rest}; /v1/docs lists them.", code="not_found", status=404),
    )


urlpatterns = [
    *_urlpatterns(),
    # Last, and not an operation of the API (the document does not list it): the JSON 404.
    re_path(r"^(?P<rest>.*)$", not_found, name=NOT_FOUND_ROUTE),
]
