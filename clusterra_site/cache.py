"""Django's Redis cache, degrading instead of failing while Redis cannot be reached.

The cache holds only what may be lost: the sign-in throttle's counters (allauth's `login_failed`).
Without this, a Redis outage made every password sign-in a 500. With it, reads miss and writes are
dropped, so sign-in works and the throttle does not count until Redis is back — the choice is to stay
available: people signing in through the IdP are throttled there, and the outage is logged loudly.
Sessions are read from here but kept in the database (clusterra_site/sessions.py), so nobody is signed
out by an outage.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

log = logging.getLogger(__name__)
# One warning a minute at most while Redis stays away; each failed call would otherwise log one.
WARN_EVERY = 60.0
_last_warning = 0.0
# Redis connection pools by server URL and options, shared by every cache object of the process.
_pools: dict[tuple[str, str], Any] = {}
_pools_lock = threading.Lock()


def _unreachable(action: str, exc: Exception) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= WARN_EVERY:
        _last_warning = now
        log.warning(
            "the cache (Redis) cannot be reached, %s skipped (%s: %s): sign-in attempts are not counted "
            "until it is back",
            action,
            type(exc).__name__,
            exc,
        )


class _DegradingClient(RedisCacheClient):
    def _get_connection_pool(self, write: bool) -> Any:
        # Django makes a cache object, and with it a connection pool, per thread and per async context:
        # under ASGI that is per request, so every request opened a new connection to Redis (a TCP
        # handshake and HELLO each time) and dropped it. One pool per process instead; redis-py's pools
        # are thread-safe and open anew in a forked child.
        server = self._servers[self._get_connection_pool_index(write)]
        key = (server, repr(sorted(self._pool_options.items(), key=lambda item: item[0])))
        pool = _pools.get(key)
        if pool is None:
            with _pools_lock:
                pool = _pools.get(key)
                if pool is None:
                    pool = _pools[key] = self._pool_class.from_url(server, **self._pool_options)
        return pool

    def _errors(self) -> tuple[type[Exception], ...]:
        # redis-py's ConnectionError and TimeoutError both derive from RedisError; OSError covers a
        # socket refused before redis-py wraps it.
        return (self._lib.exceptions.RedisError, OSError)

    def get(self, key: Any, default: Any) -> Any:
        try:
            return super().get(key, default)
        except self._errors() as exc:
            _unreachable("a read", exc)
            return default

    def get_many(self, keys: Any) -> dict:
        try:
            return super().get_many(keys)
        except self._errors() as exc:
            _unreachable("a read", exc)
            return {}

    def has_key(self, key: Any) -> bool:
        try:
            return super().has_key(key)
        except self._errors() as exc:
            _unreachable("a read", exc)
            return False

    def add(self, key: Any, value: Any, timeout: Any) -> bool:
        try:
            return super().add(key, value, timeout)
        except self._errors() as exc:
            _unreachable("a write", exc)
            # As if added: allauth takes a lock with add() before it counts, and with nothing stored there is
            # nothing to guard; False would make every sign-in wait a second for the lock and then get a 429.
            return True

    def set(self, key: Any, value: Any, timeout: Any) -> None:
        try:
            super().set(key, value, timeout)
        except self._errors() as exc:
            _unreachable("a write", exc)

    def set_many(self, data: Any, timeout: Any) -> None:
        try:
            super().set_many(data, timeout)
        except self._errors() as exc:
            _unreachable("a write", exc)

    def touch(self, key: Any, timeout: Any) -> bool:
        try:
            return super().touch(key, timeout)
        except self._errors() as exc:
            _unreachable("a write", exc)
            return False

    def delete(self, key: Any) -> bool:
        try:
            return super().delete(key)
        except self._errors() as exc:
            _unreachable("a delete", exc)
            return False

    def delete_many(self, keys: Any) -> None:
        try:
            super().delete_many(keys)
        except self._errors() as exc:
            _unreachable("a delete", exc)


class DegradingRedisCache(RedisCache):
    """RedisCache whose reads miss and writes are dropped while Redis is down (see the module's note)."""

    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _DegradingClient

    def count_within(self, key: str, most: int, seconds: float, now: float) -> float | None:
        """One more event under `key`, if fewer than `most` came in the `seconds` before `now`.

        None when it was counted; otherwise the seconds until the oldest one counted leaves the window.
        One round trip, and atomic (a Lua script: drop what left the window, count, add): requests of one
        token at once in several workers each see the others, where a read then a write of the list
        could lose one. While Redis is away the event is not counted, as the module's note says.
        """
        full_key = self.make_and_validate_key(key)
        member = f"{now:.6f}-{os.urandom(4).hex()}"
        try:
            client = self._cache.get_client(full_key, write=True)
            counted, oldest = client.register_script(_COUNT_WITHIN)(
                keys=[full_key], args=[repr(now), repr(float(seconds)), most, member]
            )
        except self._cache._errors() as exc:
            _unreachable("a rate count", exc)
            return None
        if int(counted):
            return None
        # Never past the window: a request of the same key that read its clock a moment after this one may
        # have been counted first, its time newer than `now` by the microseconds between.
        return min(float(seconds), max(0.0, float(seconds) - (now - float(oldest))))


# KEYS[1]: a sorted set of one key's events, scored by time. ARGV: now, window seconds, most, a new member.
# Returns {1, 0} when the event was counted, {0, oldest score} when the window is full.
_COUNT_WITHIN = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, oldest[2]}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])))
return {1, '0'}
"""
