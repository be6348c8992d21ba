"""What the numbers were measured on: hardware, versions of everything in the path, and the code's commit."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _git(*args: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return done.stdout.strip()
    return ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe(*, slurm: str, database: dict[str, Any], channel_layer: dict[str, Any]) -> dict[str, Any]:
    """The machine and software description that goes into every results file."""
    changed = _git("status", "--porcelain")
    return {
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": _memory_bytes(),
        "kernel": platform.release(),
        "damon_pageout": _damon_pageout(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        "django": _version("django"),
        "channels": _version("channels"),
        "channels_redis": _version("channels-redis"),
        "daphne": _version("daphne"),
        "twisted": _version("twisted"),
        "psycopg": _version("psycopg"),
        "websockets": _version("websockets"),
        "slurm": slurm,
        "database": database,
        "channel_layer": channel_layer,
        "git_commit": _git("rev-parse", "HEAD"),
        # The commit alone does not describe a tree with uncommitted changes; say how many files differ.
        "git_uncommitted_files": len(changed.splitlines()) if changed else 0,
    }


def _damon_pageout() -> bool:
    """Whether the kernel's DAMON pages memory out proactively: it makes any process stall now and then."""
    admin = Path("/sys/kernel/mm/damon/admin/kdamonds")
    with contextlib.suppress(OSError):
        for state in admin.glob("*/state"):
            if state.read_text().strip() == "on":
                actions = admin.glob(f"{state.parent.name}/contexts/*/schemes/*/action")
                if any(a.read_text().strip() == "pageout" for a in actions):
                    return True
    return False


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip('"')
    return platform.system()


def database_description() -> dict[str, Any]:
    """Needs django.setup(): the engine and the server's own version string."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        else:
            version = connection.Database.sqlite_version  # type: ignore[attr-defined]
    return {"vendor": connection.vendor, "version": version, "name": str(connection.settings_dict["NAME"])}


def channel_layer_description(redis_url: str) -> dict[str, Any]:
    if not redis_url:
        return {"backend": "channels.layers.InMemoryChannelLayer"}
    import redis

    server = redis.Redis.from_url(redis_url).info("server")
    return {
        "backend": "channels_redis.core.RedisChannelLayer",
        "redis": server.get("redis_version", "unknown"),
    }
