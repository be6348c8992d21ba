"""CI runs on the real database and channel layer; these fail there if either is missing."""

from __future__ import annotations

import os
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
