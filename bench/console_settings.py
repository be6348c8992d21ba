"""The console's own settings for the benchmarks, with the one change that keeps terminals open on Redis.

redis-py 8 made `socket_timeout` default to 5 s. channels-redis waits for a consumer's next
message with BZPOPMIN and a 5 s server-side timeout, so with that default every idle consumer's
receive raises TimeoutError after about five seconds and the socket is closed with 1011: no
terminal survives a pause in typing. Until clusterra_site/env.py sets `socket_timeout: None`
on its Redis host (or redis is pinned below 8), the benchmarks apply exactly that and say so in
their results (OVERRIDES); every other setting is the console's own.
"""

from __future__ import annotations

from typing import Any

import redis

from clusterra_site import settings as _console

globals().update({name: getattr(_console, name) for name in dir(_console) if name.isupper()})

OVERRIDES: list[str] = []


def _needs_no_socket_timeout(layers: dict[str, Any]) -> bool:
    layer = layers.get("default", {})
    hosts = layer.get("CONFIG", {}).get("hosts", [])
    plain = any(isinstance(host, str) for host in hosts)
    return (
        layer.get("BACKEND", "").startswith("channels_redis")
        and plain
        and int(redis.__version__.split(".")[0]) >= 8
    )


if _needs_no_socket_timeout(_console.CHANNEL_LAYERS):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": _console.CHANNEL_LAYERS["default"]["BACKEND"],
            "CONFIG": {
                "hosts": [
                    {"address": host, "socket_timeout": None} if isinstance(host, str) else host
                    for host in _console.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"]
                ]
            },
        }
    }
    OVERRIDES.append(
        f"CHANNEL_LAYERS Redis host with socket_timeout=None: redis-py {redis.__version__} defaults to 5 s, "
        "which closes every idle terminal (1011) after ~5 s under channels-redis's BZPOPMIN"
    )
