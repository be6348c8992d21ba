"""/v1 counts requests per API token: past CLUSTERRA_API_RATE it gets 429 with Retry-After; others do not."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from accounts import api_tokens
from accounts.models import User
from clusterra_site import env
from clusterra_site.api import PerToken
from tests.conftest import require

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_tokens(db, settings) -> tuple[dict[str, str], dict[str, str]]:
    """Two tokens of one person: the limit is the token's, not the person's."""
    settings.CLUSTERRA_API_RATE = "3/min"
    person = User.objects.create(username="ada", email="ada@example.org")
    return tuple(
        {"HTTP_AUTHORIZATION": f"Bearer {api_tokens.issue(person, name=name)[1]}"} for name in ("cli", "ci")
    )


def test_a_token_over_its_rate_gets_429_with_retry_after(client, two_tokens):
    busy, _ = two_tokens
    assert [client.get("/v1/me", **busy).status_code for _ in range(3)] == [200, 200, 200]
    r = client.get("/v1/clusters", **busy)
    assert r.status_code == 429
    assert 1 <= int(r["Retry-After"]) <= 60
    assert r.json() == {
        "error": {
            "code": "rate_limited",
            "message": f"Too many requests with this API token (at most 3/min); "
            f"try again in {r['Retry-After']} seconds.",
        }
    }


def test_another_token_is_unaffected(client, two_tokens):
    busy, quiet = two_tokens
    for _ in range(4):
        client.get("/v1/me", **busy)
    assert client.get("/v1/me", **busy).status_code == 429
    assert client.get("/v1/me", **quiet).status_code == 200


def test_the_document_and_its_page_are_not_counted(client, settings):
    settings.CLUSTERRA_API_RATE = "1/min"
    assert {client.get(url).status_code for url in ["/v1/openapi.json", "/v1/docs"] * 3} == {200}


def test_every_operation_that_takes_a_token_documents_the_429(client):
    paths = client.get("/v1/openapi.json").json()["paths"]
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters" or operation.get("security") == []:
                continue
            assert operation["responses"]["429"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, f"{method} {path}"


@pytest.fixture(params=["memory", "redis"])
def shared_cache(request, settings) -> str:
    """The cache the counts live in: one process's memory (the embedded set-up), or Redis (every worker)."""
    if request.param == "redis":
        url = os.environ.get("REDIS_URL", "")
        require(bool(url), "counting in Redis needs REDIS_URL")
        settings.CACHES = {"default": env.cache(url)}
    else:
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return request.param


def test_requests_of_one_token_at_once_are_each_counted(shared_cache, settings):
    """Twenty requests of one token in the same instant, at 10/min: ten pass, whatever the interleaving.

    A read of the token's history then a write of it lets two requests at once both see nine and both
    pass: the count has to be one step (a lock in one process, a Lua script in Redis).
    """
    settings.CLUSTERRA_API_RATE = "10/min"
    throttle = PerToken()
    request = SimpleNamespace(auth=f"at-once-{shared_cache}-{uuid.uuid4().hex}")
    start = threading.Barrier(20)

    def one(_: int) -> tuple[bool, float]:
        start.wait()
        allowed = throttle.allow_request(request)
        return allowed, throttle.wait()

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    assert sum(allowed for allowed, _ in answers) == 10
    # Each refused one is told to wait about the window: the first ten came just now.
    assert all(55 <= wait <= 60 for allowed, wait in answers if not allowed)
