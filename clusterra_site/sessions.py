"""Sessions read from the cache (Redis) and kept in the database: one Redis GET instead of a query a page.

Django's `cached_db` engine, with one change: an entry lives in the cache at most `CACHED_SECONDS`,
however long the session itself lasts. The cache degrades instead of failing (clusterra_site/cache.py):
while Redis cannot be reached, reads fall through to the database and writes and deletes are dropped.
A sign-out in that window (the person's, or the IdP's back-channel logout) deletes the database row but
not the cache's copy; were the copy kept for the session's 12 hours, Redis coming back with its data
would sign the session in again until then. Capped, it is gone within a minute at most, and every
other read is still one GET.
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends import cached_db

# Long enough that someone working in the console reads their session from Redis on nearly every
# page; short enough that a sign-out whose cache delete was lost in an outage holds at most this long.
CACHED_SECONDS = 60


class _CappedCache:
    """The session cache, with every entry's lifetime capped at CACHED_SECONDS."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache

    @staticmethod
    def _capped(timeout: Any) -> int:
        return CACHED_SECONDS if timeout is None else max(0, min(int(timeout), CACHED_SECONDS))

    def get(self, key: str, default: Any = None) -> Any:
        return self._cache.get(key, default)

    def set(self, key: str, value: Any, timeout: Any = None) -> None:
        self._cache.set(key, value, self._capped(timeout))

    def delete(self, key: str) -> Any:
        return self._cache.delete(key)

    def __contains__(self, key: str) -> bool:
        return key in self._cache

    async def aget(self, key: str, default: Any = None) -> Any:
        return await self._cache.aget(key, default)

    async def aset(self, key: str, value: Any, timeout: Any = None) -> None:
        await self._cache.aset(key, value, self._capped(timeout))

    async def adelete(self, key: str) -> Any:
        return await self._cache.adelete(key)


class SessionStore(cached_db.SessionStore):
    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._cache = _CappedCache(self._cache)
