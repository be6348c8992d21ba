"""CI runs on the real database and channel layer; these fail there if either is missing."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection

from tests.conftest import require


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_suite_runs_on_postgresql_in_ci():
    require(connection.vendor == "postgresql", "DATABASE_URL does not point at PostgreSQL; running on SQLite")
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        assert cursor.fetchone()[0].startswith("PostgreSQL")


@pytest.mark.redis
def test_the_channel_layer_delivers_through_redis():
    require(bool(os.environ.get("REDIS_URL")), "REDIS_URL is not set; the in-memory channel layer is in use")
    layer = get_channel_layer()
    assert type(layer).__module__.startswith("channels_redis")
    channel = async_to_sync(layer.new_channel)()
    message = {"type": "probe.message", "nonce": uuid.uuid4().hex}
    async_to_sync(layer.send)(channel, message)
    assert async_to_sync(layer.receive)(channel) == message


@pytest.mark.redis
def test_an_idle_consumer_outlives_the_redis_read_window():
    """A terminal nobody types in waits on the layer longer than channels-redis's 5 s blocking pop.

    redis-py 8 reads with a 5 s timeout by default; before the layer's hosts said otherwise, this wait
    ended in "Timeout reading from 127.0.0.1:6379" and the terminal closed with 1011.
    """
    require(bool(os.environ.get("REDIS_URL")), "REDIS_URL is not set; the in-memory channel layer is in use")
    layer = get_channel_layer()

    async def wait_idle_then_deliver():
        channel = await layer.new_channel()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(layer.receive(channel), timeout=6.5)
        idle = time.monotonic() - started
        await layer.send(channel, {"type": "probe.after_idle"})
        return idle, await asyncio.wait_for(layer.receive(channel), timeout=2)

    idle, message = async_to_sync(wait_idle_then_deliver)()
    assert idle >= 6
    assert message == {"type": "probe.after_idle"}
