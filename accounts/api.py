"""The ground floor of /v1 that every app's router stands on: who is asking, how a refusal looks, `{id}`.

Who is asking is a personal API token (accounts.api_tokens) sent as a bearer; a refusal is
`{"error": {"code", "message"}}` with one meaning per status, the same in every operation of the
document; `{id}` is a cluster's slug. Here rather than higher up because accounts owns the tokens
and may import clusters, so access/ and jobs/ can both build on it.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Path, Schema
from ninja.security import HttpBearer

from accounts import api_tokens
from clusters.models import Cluster, cluster_by_slug
from clusters.refusal import Refusal

# Words, not a secret (the S105 rule reads "TOKEN" as a password).
TOKEN_HELP = "make one on the console's API tokens page (/tokens/) or with `clusterra login`"  # noqa: S105
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="clusterra"'}


class BearerToken(HttpBearer):
    """`Authorization: Bearer <personal API token>`, and nothing else.

    No session and no CSRF: /v1 is for programs, which hold a token, not a cookie.
    """

    openapi_description = "A personal API token (ct_…)."

    def __call__(self, request: HttpRequest) -> str:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refusal(
                f"Send your API token as 'Authorization: Bearer <token>'; {TOKEN_HELP}.",
                code="unauthorized",
                status=401,
                headers=CHALLENGE,
            )
        return self.authenticate(request, value.strip())

    def authenticate(self, request: HttpRequest, token: str) -> str:
        person = api_tokens.authenticate(token, request=request)
        if person is None:
            raise Refusal(
                "The API token is not valid (unknown, revoked or expired, or its owner is deactivated); "
                f"{TOKEN_HELP}.",
                code="invalid_token",
                status=401,
                headers=CHALLENGE,
            )
        request.user = person
        # request.auth is the token, by its digest: the rate limit counts per token, not per person.
        return api_tokens.digest(token)


class ErrorBody(Schema):
    code: str = Field(description="A stable code, e.g. `no_grant`, `not_found`, `cluster_unavailable`.")
    message: str = Field(description="What happened and what to do, in one or two sentences.")


class Error(Schema):
    """Every answer other than success."""

    error: ErrorBody


# What each error status means, the same in every operation that may answer it.
ERRORS = {
    400: "The request is malformed, or the script or its directives cannot be used "
    "(the message says which line).",
    401: "No API token, or one that is unknown, revoked or expired.",
    403: "Not allowed: the message is the policy decision's sentence, with the numbers.",
    404: "No such cluster, or no such job of yours (someone else's job answers the same).",
    409: "A conflict: the job already ended, or an Idempotency-Key reused for another request.",
    415: "The body is not application/json.",
    429: "Too many requests with this API token; the Retry-After header says how many seconds to wait.",
    502: "The cluster (slurmrestd or its head node) did not answer; nothing was changed.",
}


RETRY_AFTER = {"description": "Seconds to wait before the next request.", "schema": {"type": "integer"}}


def answers(ok: dict[int, tuple[Any, str]], *errors: int) -> dict[str, Any]:
    """`response` and `openapi_extra` of an operation that takes a token.

    `ok` maps each success status to its schema and what it means for this operation; `errors` are
    the error statuses it may answer besides 429, which every token may get (the rate limit).
    """
    codes = (*errors, 429)
    return {
        "response": {**{status: schema for status, (schema, _) in ok.items()}, **dict.fromkeys(codes, Error)},
        "openapi_extra": {
            "responses": {
                **{status: {"description": words} for status, (_, words) in ok.items()},
                **{status: {"description": ERRORS[status]} for status in codes},
                429: {"description": ERRORS[429], "headers": {"Retry-After": RETRY_AFTER}},
            }
        },
    }


ClusterId = Annotated[
    str,
    Path(
        description="The cluster's slug, as `GET /v1/clusters` lists it (e.g. `demo`).",
        pattern="^[-a-zA-Z0-9_]+$",
    ),
]


def cluster_or_404(slug: str) -> Cluster:
    """The cluster `{id}` names; a Refusal when there is none or the console has it switched off."""
    cluster = cluster_by_slug(slug)
    if cluster is None:
        raise Refusal(
            f"There is no cluster {slug!r}; `GET /v1/clusters` lists yours.", code="not_found", status=404
        )
    if not cluster.enabled:
        raise Refusal(
            f"{cluster.name} is disabled in the console; ask an administrator.",
            code="cluster_disabled",
            status=403,
        )
    return cluster
