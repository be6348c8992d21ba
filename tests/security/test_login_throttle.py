"""The sign-in throttle counts across web workers: its counters are in Redis when REDIS_URL is set.

Each "worker" here is a cache client built from the settings the way another web worker builds
its own (its own connection pool, nothing shared in memory); allauth's throttle runs against one or
the other in turn, as a load balancer would spread a guesser's attempts.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from allauth.core.internal import ratelimit
from django.conf import settings
from django.test import Client, RequestFactory
from django.utils.module_loading import import_string

from accounts.models import User
from clusterra_site import env
from tests.conftest import require


def worker_cache(config: dict[str, Any]) -> Any:
    """A cache client of its own from a CACHES entry, as Django's cache handler makes one in a process."""
    params = dict(config)
    backend = import_string(params.pop("BACKEND"))
    return backend(params.pop("LOCATION", ""), params)


@pytest.fixture
def two_workers() -> list[Any]:
    require(bool(settings.REDIS_URL), "REDIS_URL is not set: the throttle is one process's memory")
    config = env.cache(settings.REDIS_URL)
    workers = [worker_cache(config), worker_cache(config)]
    assert workers[0]._cache is not workers[1]._cache  # two clients, two pools: only Redis joins them
    return workers


def an_address() -> str:
    # A fresh address each run: the counters outlive this test in Redis (for up to five minutes).
    return f"127.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 1}"


def attempt(worker: Any, monkeypatch: pytest.MonkeyPatch, *, address: str, key: str) -> bool:
    """One failed sign-in counted the way allauth counts it, on `worker`; False once refused."""
    monkeypatch.setattr(ratelimit, "cache", worker)
    request = RequestFactory().post("/accounts/login/", REMOTE_ADDR=address)
    return bool(ratelimit.consume(request, app="allauth.account", action="login_failed", key=key))


def test_settings_take_the_cache_from_redis_url():
    assert settings.CACHES["default"] == env.cache(settings.REDIS_URL)


@pytest.mark.redis
def test_a_user_names_attempts_on_two_workers_add_up(two_workers, monkeypatch):
    key = f"testserver:who-{secrets.token_hex(4)}"
    answers = [attempt(two_workers[n % 2], monkeypatch, address=an_address(), key=key) for n in range(7)]
    # 5/300s/key in all, not five on each worker.
    assert answers == [True] * 5 + [False] * 2


@pytest.mark.redis
def test_an_addresss_attempts_on_two_workers_add_up(two_workers, monkeypatch):
    address = an_address()
    answers = [
        attempt(two_workers[n % 2], monkeypatch, address=address, key=f"testserver:n{secrets.token_hex(4)}")
        for n in range(12)
    ]
    # 10/m/ip in all.
    assert answers == [True] * 10 + [False] * 2


@pytest.mark.redis
@pytest.mark.django_db
def test_wrong_admin_passwords_on_two_workers_lock_the_name_on_both(two_workers, monkeypatch, settings):
    # A fast hasher: the shared counter is under test here, not PBKDF2's 0.5 s per attempt.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    name = f"sam{secrets.token_hex(4)}"
    User.objects.create_user(name, f"{name}@example.org", "pw-sam-123456", is_staff=True)
    codes = []
    for n in range(6):
        monkeypatch.setattr(ratelimit, "cache", two_workers[n % 2])
        guess = {"username": name, "password": f"guess-{n}"}
        codes.append(Client(REMOTE_ADDR=an_address()).post("/admin/login/", guess).status_code)
    assert codes == [200] * 5 + [429]
    monkeypatch.setattr(ratelimit, "cache", two_workers[0])
    right = {"username": name, "password": "pw-sam-123456"}
    assert Client(REMOTE_ADDR=an_address()).post("/admin/login/", right).status_code == 429
