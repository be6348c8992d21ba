"""Value decoders shared by the adapters: Slurm's numbers, times, states, exit codes and TRES strings."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

# NO_VAL and INFINITE as 32- and 64-bit integers; an old or odd server can leak them as plain ints.
_SENTINELS = frozenset({0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFE, 0xFFFFFFFFFFFFFFFF})

BASE_JOB_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "SUSPENDED",
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)
BASE_NODE_STATES = frozenset({"UNKNOWN", "DOWN", "IDLE", "ALLOCATED", "ERROR", "MIXED", "FUTURE", "EXTERNAL"})
# States in which a job has not ended, so an exit code of 0 means "nothing yet".
UNFINISHED_JOB_STATES = frozenset({"PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "RESIZING"})


def number(value: Any) -> int | None:
    """A count or limit: int (v0.0.38) or `{set, infinite, number}` (v0.0.39+); unset/infinite → None."""
    if isinstance(value, Mapping):
        if value.get("infinite") or not value.get("set", False):
            return None
        value = value.get("number")
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.lstrip("-").isdigit():
            return None
    try:
        result = int(value)
    except (TypeError, ValueError):
        return None
    # 22.05 prints an unsigned INFINITE through a signed field: MaxTime=INFINITE arrives as -1.
    return None if result in _SENTINELS or result < 0 else result


def is_infinite(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value.get("infinite"))


def timestamp(value: Any) -> datetime | None:
    """Epoch seconds (plain or wrapped) to an aware UTC datetime; Slurm writes 0 for "not yet"."""
    seconds = number(value)
    if not seconds or seconds < 0:
        return None
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def string_list(value: Any) -> tuple[str, ...]:
    """A list of strings, or a comma-separated string (csv_string is a list in the schema only)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, Iterable):
        return tuple(str(v) for v in value if v is not None and str(v) != "")
    return ()


def split_state(
    value: Any, base_states: frozenset[str], *, upper: bool = False
) -> tuple[str, tuple[str, ...]]:
    """(base state, other flags) from a string (v0.0.38) or a list (v0.0.40+), in Slurm's spelling."""
    states = list(string_list([value] if isinstance(value, str) else value))
    if upper:
        states = [s.upper() for s in states]
    if not states:
        return "", ()
    primary = next((s for s in states if s in base_states), states[0])
    return primary, tuple(s for s in states if s != primary)


def decode_wait_status(raw: Any) -> tuple[int | None, int | None]:
    """(exit status, signal) from v0.0.38's raw wait(2) status: `exit 3` is 768, SIGTERM is 15.

    Slurm also stores its own error numbers there for jobs that never launched
    (4021 with reason JobLaunchFailure). Such a value has both a high byte and low
    bits set, which no real wait status has, so it decodes to (None, None) and the
    job's reason is what explains it.
    """
    status = number(raw)
    if status is None or status < 0:
        return None, None
    if status > 0xFFFF:
        return None, None
    high, low = (status >> 8) & 0xFF, status & 0x7F
    if low == 0:
        return high, None
    if high == 0:
        return None, low
    return None, None


def decode_verbose_exit(raw: Any) -> tuple[int | None, int | None]:
    """(exit status, signal) from v0.0.40+'s `{status[], return_code, signal{id, name}}`."""
    if isinstance(raw, (int, str)) and not isinstance(raw, bool):
        return decode_wait_status(raw)
    if not isinstance(raw, Mapping):
        return None, None
    status = {s.upper() for s in string_list(raw.get("status"))}
    signal = raw.get("signal")
    signal_id = number(signal.get("id")) if isinstance(signal, Mapping) else None
    if status & {"SIGNALED", "CORE_DUMPED"}:
        return None, signal_id or None
    if status & {"SUCCESS", "ERROR"} or not status:
        return number(raw.get("return_code")), None
    return None, None


_TRES_ITEM = re.compile(r"^(?P<name>[^=]+)=(?P<count>\d+)(?P<unit>[KMGTP]?)$")
_UNITS = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}


def tres(text_value: Any) -> dict[str, int]:
    """ "cpu=4,mem=8G,node=1,gres/gpu=2" → {"cpu": 4, "mem": 8192, …}; memory in MB."""
    result: dict[str, int] = {}
    for part in text(text_value).split(","):
        match = _TRES_ITEM.match(part.strip())
        if not match:
            continue
        name, count = match["name"], int(match["count"])
        if name == "mem" or match["unit"]:
            count = int(count * _UNITS[match["unit"] or "M"])
        result[name] = result.get(name, 0) + count
    return result


def gpus_in_tres(text_value: Any) -> int | None:
    """GPUs counted in a TRES string: the untyped `gres/gpu` total, else the sum of the typed ones."""
    counts = tres(text_value)
    if "gres/gpu" in counts:
        return counts["gres/gpu"]
    typed = [v for k, v in counts.items() if k.startswith("gres/gpu:")]
    return sum(typed) if typed else None


def _top_level_items(value: str) -> list[str]:
    """Split on commas outside parentheses: "gpu:a100:2(S:0,1),mps:100" has two items."""
    items, depth, current = [], 0, []
    for ch in value:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [i.strip() for i in items if i.strip()]


def gpus_in_gres(text_value: Any) -> int | None:
    """GPUs in a GRES string: "gpu:2", "gpu:tesla:2(S:0-1)", "gres/gpu:1", "gres:gpu:a100:2", or None."""
    found = None
    for item in _top_level_items(text(text_value)):
        item = item.split("(", 1)[0].replace("=", ":")
        for prefix in ("gres/", "gres:"):
            if item.startswith(prefix):
                item = item[len(prefix) :]
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else "1"
        if count.isdigit():
            found = (found or 0) + int(count)
        elif len(parts) <= 2:
            # "gpu:a100" asks for one GPU of that type.
            found = (found or 0) + 1
    return found


def job_gpus(job: Mapping[str, Any], node_count: int | None, tasks: int | None) -> int:
    """GPUs a job has (or asked for), from the most authoritative place that mentions them."""
    for key in ("tres_alloc_str", "tres_req_str"):
        found = gpus_in_tres(job.get(key))
        if found is not None:
            return found
    detail = job.get("gres_detail")
    if isinstance(detail, list) and detail:
        found = sum(gpus_in_gres(d) or 0 for d in detail)
        if found:
            return found
    found = gpus_in_gres(job.get("tres_per_job"))
    if found is not None:
        return found
    found = gpus_in_gres(job.get("tres_per_node"))
    if found is not None:
        return found * (node_count or 1)
    found = gpus_in_gres(job.get("tres_per_task"))
    if found is not None:
        return found * (tasks or 1)
    return 0


def job_memory_mb(job: Mapping[str, Any], cpus: int | None, node_count: int | None) -> int | None:
    """Memory per node in MB: asked per node, or per CPU times the CPUs on one node, or from TRES."""
    per_node = number(job.get("memory_per_node"))
    if per_node:
        return per_node
    per_cpu = number(job.get("memory_per_cpu"))
    nodes = node_count or 1
    if per_cpu and cpus:
        return per_cpu * max(1, cpus // nodes)
    for key in ("tres_alloc_str", "tres_req_str"):
        mem = tres(job.get(key)).get("mem")
        if mem:
            return mem // nodes
    return None


def release_from_meta(meta: Any) -> tuple[str, str | None]:
    """(Slurm release, cluster name) from `meta.Slurm` (≤ v0.0.39) or `meta.slurm` (v0.0.40+)."""
    if not isinstance(meta, Mapping):
        return "", None
    slurm = meta.get("slurm") or meta.get("Slurm") or {}
    if not isinstance(slurm, Mapping):
        return "", None
    release = text(slurm.get("release"))
    if not release:
        version = slurm.get("version")
        if isinstance(version, Mapping) and version.get("major") is not None:
            parts = [version.get("major"), version.get("minor"), version.get("micro")]
            release = ".".join(str(p) for p in parts if p is not None)
    cluster = slurm.get("cluster")
    return release, (str(cluster) if cluster else None)
