from __future__ import annotations

from pathlib import Path

import pytest

from clusterra_site import env


def test_it_defaults_to_sqlite_in_the_data_folder(tmp_path):
    db = env.database(None, tmp_path)
    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == tmp_path / "clusterra.sqlite3"


def test_it_reads_a_postgres_url():
    db = env.database("postgres://postgres:s%40cret@127.0.0.1:5432/clusterra_ci?sslmode=disable", Path("/x"))
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "clusterra_ci",
        "postgres",
        "s@cret",
        "127.0.0.1",
        "5432",
    )
    assert db["OPTIONS"]["sslmode"] == "disable"


def test_it_reads_an_absolute_sqlite_url():
    assert env.database("sqlite:////var/lib/c/db.sqlite3", Path("/x"))["NAME"] == Path(
        "/var/lib/c/db.sqlite3"
    )


def test_it_rejects_an_unknown_scheme():
    with pytest.raises(env.ConfigError, match="mysql"):
        env.database("mysql://root@localhost/x", Path("/x"))


def test_it_picks_redis_only_when_configured():
    assert env.channel_layer("")["BACKEND"].endswith("InMemoryChannelLayer")
    layer = env.channel_layer("redis://127.0.0.1:6379/0")
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    [host] = layer["CONFIG"]["hosts"]
    assert host["address"] == "redis://127.0.0.1:6379/0"
    # Longer than channels-redis's 5 s blocking pop, or idle terminals close; never None (a silent Redis).
    assert 5 < host["socket_timeout"] < 60
    assert host["socket_connect_timeout"] > 0


def test_flags_refuse_nonsense(monkeypatch):
    monkeypatch.setenv("CLUSTERRA_X", "maybe")
    with pytest.raises(env.ConfigError, match="CLUSTERRA_X"):
        env.flag("CLUSTERRA_X")
    monkeypatch.setenv("CLUSTERRA_X", "Yes")
    assert env.flag("CLUSTERRA_X") is True


def test_the_generated_secret_key_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv("DJANGO_SECRET_KEY", raising=False)
    first = env.secret_key(tmp_path)
    assert len(first) >= 50
    assert env.secret_key(tmp_path) == first
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_the_cache_is_one_process_memory_without_redis():
    cache = env.cache("")
    assert cache["BACKEND"] == "django.core.cache.backends.locmem.LocMemCache"
    assert env.cache(None) == cache


def test_the_cache_is_redis_with_a_bounded_wait_when_configured():
    cache = env.cache("redis://127.0.0.1:6379/3")
    assert cache["BACKEND"] == "clusterra_site.cache.DegradingRedisCache"
    assert cache["LOCATION"] == "redis://127.0.0.1:6379/3"
    # Never redis-py's default, which changed between versions (no timeout before 8, 5 s since).
    assert cache["OPTIONS"] == {"socket_connect_timeout": 2, "socket_timeout": 2}


POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/clusterra_ci"


def test_postgres_connections_come_from_a_pool_of_each_process(monkeypatch):
    monkeypatch.delenv("CLUSTERRA_DB_POOL_SIZE", raising=False)
    db = env.database(POSTGRES_URL, Path("/x"))
    # Under an ASGI server a kept connection (CONN_MAX_AGE) is never reused; Django refuses it with a pool.
    assert db["CONN_MAX_AGE"] == 0
    assert db["OPTIONS"]["pool"] == {
        "min_size": 2,
        "max_size": 10,
        "timeout": 10,
        "reset": env.reset_pooled_connection,
    }


def test_the_pool_size_comes_from_the_environment_and_0_turns_the_pool_off(monkeypatch):
    monkeypatch.setenv("CLUSTERRA_DB_POOL_SIZE", "1")
    pool = env.database(POSTGRES_URL, Path("/x"))["OPTIONS"]["pool"]
    assert (pool["min_size"], pool["max_size"]) == (1, 1)
    monkeypatch.setenv("CLUSTERRA_DB_POOL_SIZE", "0")
    db = env.database(POSTGRES_URL + "?sslmode=require", Path("/x"))
    assert db["OPTIONS"] == {"sslmode": "require"}
    assert db["CONN_MAX_AGE"] == 60
    for nonsense in ("-1", "ten"):
        monkeypatch.setenv("CLUSTERRA_DB_POOL_SIZE", nonsense)
        with pytest.raises(env.ConfigError, match="CLUSTERRA_DB_POOL_SIZE"):
            env.database(POSTGRES_URL, Path("/x"))


def test_sqlite_has_no_pool(monkeypatch, tmp_path):
    monkeypatch.setenv("CLUSTERRA_DB_POOL_SIZE", "5")
    assert "pool" not in env.database(None, tmp_path)["OPTIONS"]
    assert "pool" not in env.database("sqlite:////var/lib/c/db.sqlite3", tmp_path)["OPTIONS"]


def test_django_accepts_the_pool_settings(monkeypatch):
    """Django builds the pool only on first use; a setting it refuses would fail the first request."""
    from django.db.utils import ConnectionHandler

    monkeypatch.delenv("CLUSTERRA_DB_POOL_SIZE", raising=False)
    settings = env.database(POSTGRES_URL, Path("/x"))
    # An alias of its own: Django keeps pools per alias for the whole process.
    wrapper = ConnectionHandler({"default": settings, "env-pool-check": settings})["env-pool-check"]
    try:
        pool = wrapper.pool  # not opened: no connection is made
        assert (pool.min_size, pool.max_size, pool.timeout) == (2, 10, 10)
    finally:
        wrapper.close_pool()
