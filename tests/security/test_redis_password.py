"""Redis with a password: the console works through it, and a process without the password gets nothing."""

from __future__ import annotations

import secrets
import shutil
import socket

import pytest
from channels.layers import get_channel_layer
from django.core.checks import run_checks

from clusterra_site import env
from tests.conftest import require
from tests.support.redis_support import RedisServer, free_port


@pytest.fixture(params=["redis", "rediss"])
def redis_with_password(request, settings, tmp_path):
    """A Redis of the test's own that wants a password: plain, and TLS only (rediss://)."""
    require(bool(shutil.which("redis-server")), "needs redis-server (Debian package redis-server)")
    tls_dir = tmp_path if request.param == "rediss" else None
    server = RedisServer(free_port(), password=secrets.token_urlsafe(24), tls_dir=tls_dir)
    server.start()
    settings.REDIS_URL = server.url
    settings.CHANNEL_LAYERS = {"default": env.channel_layer(server.url)}
    settings.CACHES = {"default": env.cache(server.url)}
    yield server
    server.crash()


@pytest.mark.asyncio
async def test_the_channel_layer_and_the_cache_work_through_a_password(redis_with_password):
    from django.core.cache import cache

    layer = get_channel_layer()
    name = await layer.new_channel()
    await layer.send(name, {"type": "offboard.close", "reason": "test"})
    assert (await layer.receive(name))["reason"] == "test"
    await cache.aset("k", "v")
    assert await cache.aget("k") == "v"


def test_a_process_without_the_password_is_refused(redis_with_password):
    with redis_with_password.connect() as s:
        s.sendall(b"KEYS *\r\n")
        answer = s.recv(256)
    assert answer.startswith(b"-NOAUTH"), answer


def test_over_tls_a_plain_text_connection_gets_nothing(tmp_path):
    require(bool(shutil.which("redis-server")), "needs redis-server (Debian package redis-server)")
    server = RedisServer(free_port(), password="pw", tls_dir=tmp_path)
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=2) as s:
            s.sendall(b"AUTH pw\r\nPING\r\n")
            try:
                answer = s.recv(64)
            except ConnectionResetError:
                answer = b""  # the server hung up on a client that did not start TLS
    finally:
        server.crash()
    assert b"PONG" not in answer, answer
    assert b"+OK" not in answer, answer


def test_deploy_check_warns_about_a_redis_without_a_password(settings):
    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    warned = [m for m in run_checks(include_deployment_checks=True) if m.id == "clusterra.W010"]
    assert len(warned) == 1
    assert "requirepass" in warned[0].hint

    for quiet in ("redis://:s3cret@127.0.0.1:6379/0", "rediss://:s3cret@redis.internal:6380/0", ""):
        settings.REDIS_URL = quiet
        assert not [m for m in run_checks(include_deployment_checks=True) if m.id == "clusterra.W010"], quiet
