"""`manage.py check --deploy` on the terminal's channel layer: Redis carries what people type."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Warning, register


@register("security", deploy=True)
def redis_has_a_password(app_configs, **kwargs) -> list[Warning]:
    """A Redis without a password lets any process of the host read and write the channel layer.

    The consumer acts only on the console's own notices (a forged keystroke is dropped), but whoever
    reaches Redis can still read the group names, flood the layer or FLUSHALL it. A password closes it
    for processes of the host; rediss:// adds TLS where Redis is on another machine.
    """
    url = settings.REDIS_URL
    if not url:
        return []
    parts = urlsplit(url)
    if parts.scheme == "unix" or parts.password:
        return []
    return [
        Warning(
            "REDIS_URL has no password: every process on the Redis host can read and write the console's "
            "channel layer and cache.",
            hint="Set requirepass in redis.conf and put it in the URL: redis://:PASSWORD@host:6379/0 "
            "(rediss://… for TLS to a Redis on another machine).",
            id="clusterra.W010",
        )
    ]
