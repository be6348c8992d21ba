"""Publishing the compiled policy to a cluster's head node, and reading back what Slurm refused with it.

The snapshot is a Lua table (`return { … }`): Debian's slurmctld links Lua 5.1, which has no
JSON reader before Slurm 26.05, and a data-only chunk loads with nothing to call. Its first
line names the version, the moment it was made and the body's hash; the plugin re-reads the
file only when that line changes, so an unchanged policy costs one short read per submit.

When it is published:
- on every change of what it holds: grants, quotas, group membership, a person deactivated
  or reactivated, a Linux account made (access.receivers, after the transaction commits);
- by the sync loop every round in which the settled use changed, and at least every
  HEARTBEAT, so a running console never lets the plugin's max age run out.
A new version (and an audit event) comes only with a change of rules or settled use.
A failed publish is kept on the Publication row (and logged); the next round tries again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from access.compiled import compile_cluster
from access.models import Publication
from audit.log import record
from clusters.models import Cluster
from clusters.policy_file import PolicyFileError, log_size, read_refusals, read_tail, write_policy

log = logging.getLogger("clusterra.access.snapshot")

# A running console rewrites the file at least this often, whatever changed: it keeps the snapshot
# young (max age) and moves "settled through" on, so the plugin counts ended jobs at most once.
HEARTBEAT = timedelta(minutes=1)


def build(cluster: Cluster, *, now: datetime | None = None, settled_through: datetime | None = None) -> dict:
    """The whole snapshot for one cluster, as plain values (what render() turns into Lua)."""
    now = now or timezone.now()
    rules = compile_cluster(cluster, now=now)
    return {
        "cluster": cluster.name,
        "enabled": cluster.enabled,
        "uid_min": settings.CLUSTERRA_UID_MIN,
        "uid_max": settings.CLUSTERRA_UID_MAX,
        "max_age": cluster.policy_max_age * 60,
        "when_stale": cluster.policy_when_stale,
        "settled_through": int(settled_through.timestamp()) if settled_through else 0,
        **rules,
    }


def digest(snapshot: dict) -> str:
    """What makes a new version: the rules and the settled use, not the moment use was settled up to."""
    rules = {k: v for k, v in snapshot.items() if k != "settled_through"}
    return hashlib.sha256(json.dumps(rules, sort_keys=True, default=str).encode()).hexdigest()


def render(snapshot: dict, *, version: int, generated_at: datetime) -> str:
    """The file the plugin reads: a header line, then one Lua table holding nothing but data."""
    stamp = int(generated_at.timestamp())
    body = f"return {lua_value({**snapshot, 'version': version, 'generated_at': stamp})}\n"
    # The plugin compares this line only: it names the body's hash, so no two contents share it.
    check = hashlib.sha256(body.encode()).hexdigest()[:16]
    return f"-- clusterra policy v{version} generated {stamp} sha256:{check}\n{body}"


def publish(cluster: Cluster, *, force: bool = False, settled_through: datetime | None = None) -> Publication:
    """Compile and write the cluster's snapshot if it changed (or `force`, or the heartbeat is due)."""
    with transaction.atomic():
        row, created = Publication.objects.select_for_update().get_or_create(cluster=cluster)
        if created:
            # Refusals logged before this console governed the cluster are not its people's to audit.
            row.refusals_read = log_size(cluster, cluster.refusal_log)
        if settled_through is not None:
            row.settled_through = settled_through
        now = timezone.now()
        snapshot = build(cluster, now=now, settled_through=row.settled_through)
        fingerprint = digest(snapshot)
        due = row.published_at is None or now - row.published_at >= HEARTBEAT
        if fingerprint == row.digest and not force and not due and not row.error:
            if settled_through is not None:
                row.save(update_fields=["settled_through", "refusals_read"])
            return row
        changed = fingerprint != row.digest
        version = row.version + 1 if changed else row.version
        text = render(snapshot, version=version, generated_at=now)
        try:
            write_policy(cluster, cluster.policy_path, text, group=cluster.slurm_user)
        except PolicyFileError as e:
            row.error = str(e)[:2000]
            row.save(update_fields=["error", "settled_through", "refusals_read"])
            log.warning("policy for %s not published: %s", cluster.slug, e)
            record(
                "policy.publish",
                cluster=cluster,
                target=cluster.policy_path,
                outcome="error",
                reason="head_node",
                message=f"The policy for {cluster.name} could not be written to its head node: {e}",
            )
            return row
        row.version, row.digest, row.published_at, row.error = version, fingerprint, now, ""
        row.people = len(snapshot["people"])
        row.save()
    if changed:
        record(
            "policy.publish",
            cluster=cluster,
            target=cluster.policy_path,
            message=f"Policy v{version} for {cluster.name} published: {row.people} people, "
            f"{len(snapshot['quotas'])} quotas.",
            details={"version": version, "people": row.people, "quotas": len(snapshot["quotas"])},
        )
    return row


def collect_refusals(cluster: Cluster) -> int:
    """Read the plugin's refusal log since last time into the audit log; returns how many were new."""
    row, _ = Publication.objects.get_or_create(cluster=cluster)
    try:
        data, offset = read_refusals(cluster, cluster.refusal_log, row.refusals_read)
    except PolicyFileError as e:
        log.warning("refusals of %s not read: %s", cluster.slug, e)
        return 0
    entries = _entries(data)
    for entry in entries:
        _audit_refusal(cluster, entry)
    Publication.objects.filter(pk=row.pk).update(refusals_read=offset)
    return len(entries)


def refusal_for(cluster: Cluster, uid: int, since: float) -> dict[str, Any] | None:
    """The plugin's latest refusal of `uid`'s job at or after `since` (epoch seconds), if it logged one.

    slurmrestd answers a refused submit with an error code only; the plugin's sentence is in its log.
    """
    for entry in reversed(_entries(read_tail(cluster, cluster.refusal_log))):
        if (entry.get("time") or 0) < int(since):
            return None
        if entry.get("uid") == uid and isinstance(entry.get("message"), str):
            return entry
    return None


def _entries(data: bytes) -> list[dict[str, Any]]:
    """The refusal log's lines, one JSON object each; a line that is not one is passed over."""
    found = []
    for line in data.decode("ascii", "replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            found.append(entry)
    return found


def _audit_refusal(cluster: Cluster, entry: dict[str, Any]) -> None:
    from accounts.models import PosixAccount

    uid = entry.get("uid")
    account = PosixAccount.objects.filter(uid=uid).select_related("user").first() if uid else None
    inside = entry.get("inside_job") or ""
    where = f" (from inside job {inside})" if inside else ""
    record(
        "job.refused_by_slurm",
        actor=account.user if account else None,
        cluster=cluster,
        target=str(entry.get("name") or "")[:200],
        outcome="denied",
        reason=str(entry.get("code") or "")[:64],
        message=f"Slurm refused a job of {entry.get('user')}{where}: {entry.get('message')}",
        details={
            "uid": uid,
            "user": entry.get("user"),
            "partition": entry.get("partition"),
            "inside_job": inside or None,
            "policy_version": entry.get("version"),
            "refused_at": entry.get("time"),
        },
    )


# --- Lua literals ------------------------------------------------------------------------------------


def lua_value(value: Any) -> str:
    """A Lua 5.1 literal for JSON-like data: nil, booleans, numbers, strings, lists, tables."""
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"no Lua literal for {value!r}")
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list | tuple):
        return "{" + ",".join(lua_value(v) for v in value) + "}"
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if item is None:
                continue  # an absent field is nil anyway
            items.append(f"[{lua_value(key)}]={lua_value(item)}")
        return "{" + ",".join(items) + "}"
    raise TypeError(f"no Lua literal for {type(value).__name__}")


def lua_string(text: str) -> str:
    """A double-quoted Lua string: printable ASCII as it is, every other byte as a decimal escape."""
    out = []
    for byte in text.encode("utf-8"):
        if 32 <= byte < 127 and byte not in (34, 92):
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'
