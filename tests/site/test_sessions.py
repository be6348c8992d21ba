"""Sessions read from Redis, kept in the database: a sign-out ends them everywhere, a lost delete soon."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session

from clusterra_site import sessions


class _Recording:
    """A cache that records the lifetime each entry was written with."""

    def __init__(self) -> None:
        self.timeouts: list[int] = []

    def set(self, key, value, timeout=None) -> None:
        self.timeouts.append(timeout)


def test_a_cached_copy_lives_at_most_a_minute_however_long_the_session():
    cache = _Recording()
    capped = sessions._CappedCache(cache)
    capped.set("k", {}, 12 * 3600)
    capped.set("k", {}, None)
    capped.set("k", {}, 30)
    assert cache.timeouts == [sessions.CACHED_SECONDS, sessions.CACHED_SECONDS, 30]


@pytest.mark.django_db
def test_with_redis_a_session_is_read_from_the_cache_and_a_delete_ends_it():
    if not settings.REDIS_URL:
        pytest.skip("the cached session engine is used only with REDIS_URL")
    assert settings.SESSION_ENGINE == "clusterra_site.sessions"
    store = sessions.SessionStore()
    store["who"] = "ada"
    store.save()
    key = store.session_key
    # The row is kept, and a read no longer needs it while the cached copy lives.
    Session.objects.filter(session_key=key).update(session_data="")
    assert sessions.SessionStore(session_key=key).load() == {"who": "ada"}
    sessions.SessionStore(session_key=key).delete()
    assert not Session.objects.filter(session_key=key).exists()
    assert sessions.SessionStore(session_key=key).load() == {}
