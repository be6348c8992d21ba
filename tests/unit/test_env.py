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
    assert db["OPTIONS"] == {"sslmode": "disable"}


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
    assert layer["CONFIG"]["hosts"] == [{"address": "redis://127.0.0.1:6379/0", "socket_timeout": None}]


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
