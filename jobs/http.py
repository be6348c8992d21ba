"""The thin plumbing of the /v1 API: bearer-token auth, one error shape, JSON bodies, method dispatch."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from accounts import api_tokens
from clusters.models import Cluster
from jobs import present

log = logging.getLogger("clusterra.api")

MAX_BODY_BYTES = 64 * 1024
# Words, not a secret (the S105 rule reads "TOKEN" as a password).
TOKEN_HELP = "make one on the console's API tokens page (/tokens/) or with `clusterra login`"  # noqa: S105


class ApiError(Exception):
    """An answer other than success; becomes `{"error": {"code", "message"}}` with `status`."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def bearer_token(request: HttpRequest) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def api_view(handler: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Authenticate by API token, then run `handler(request, **kwargs)`; errors become the JSON shape.

    No session and no CSRF here: /v1 is for programs, which hold a token, not a cookie.
    """

    @csrf_exempt
    @never_cache
    @wraps(handler)
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raw = bearer_token(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="clusterra"'}
        if raw is None:
            return error_response(
                401,
                "unauthorized",
                f"Send your API token as 'Authorization: Bearer <token>'; {TOKEN_HELP}.",
                challenge,
            )
        person = api_tokens.authenticate(raw, request=request)
        if person is None:
            return error_response(
                401,
                "invalid_token",
                "The API token is not valid (unknown, revoked or expired, or its owner is deactivated); "
                f"{TOKEN_HELP}.",
                challenge,
            )
        request.user = person
        try:
            return handler(request, *args, **kwargs)
        except ApiError as e:
            return error_response(e.status, e.code, e.message, e.headers)
        except Exception:
            log.exception("API %s %s failed", request.method, request.path)
            return error_response(
                500,
                "internal_error",
                "The console failed to answer this request; the error is logged. Try again later.",
            )

    return view


def methods(**handlers: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """One URL, one handler per HTTP method (lower-case keyword); others get 405 with Allow."""
    allowed = ", ".join(sorted(m.upper() for m in handlers))

    @api_view
    def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        handler = handlers.get(request.method.lower())
        if handler is None:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here; use {allowed}.",
                headers={"Allow": allowed},
            )
        return handler(request, *args, **kwargs)

    view.handlers = handlers  # the route table reads these to publish the OpenAPI document
    return view


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request's JSON object; ApiError(400) for anything else."""
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type and content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    if len(request.body) > MAX_BODY_BYTES:
        raise ApiError(400, "invalid_request", f"The body is larger than {MAX_BODY_BYTES // 1024} KiB.")
    try:
        data = json.loads(request.body or b"{}")
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"The body is not valid JSON: {e}.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "The body must be a JSON object.")
    return data


def cluster_or_404(slug: str) -> Cluster:
    cluster = Cluster.objects.filter(slug=slug).first()
    if cluster is None:
        raise ApiError(404, "not_found", f"There is no cluster {slug!r}; `GET /v1/clusters` lists yours.")
    if not cluster.enabled:
        raise ApiError(
            403, "cluster_disabled", f"{cluster.name} is disabled in the console; ask an administrator."
        )
    return cluster


def flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def positive_int(request: HttpRequest, name: str, default: int, *, maximum: int) -> int:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        return present.whole_number(raw, name, maximum=maximum)
    except present.FilterError as e:
        raise ApiError(400, "invalid_request", str(e)) from None
