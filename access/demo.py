"""The demo's access: the `demo` group's grant and quota on the demo cluster, and each member's own quota.

A group's quota is shared by all its members together (access.quota), so the
per-person limits (running jobs, CPU-hours a day) cannot sit on the group: each
person gets their own quota when they join (accounts.demo sends `joined`) and loses
it when they leave. The group's quota keeps the per-job limit, which means the same
shared or not, so it still holds if an administrator deletes someone's own quota.

Rows made here carry a note; rows an administrator has edited since are theirs:
`seed` reports how they differ from the settings and changes them only with reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import transaction
from django.dispatch import receiver

from access.models import PARTITION_NAME, Grant, Quota
from accounts.demo import membership
from accounts.demo.membership import DEMO_GROUP
from accounts.models import DemoMember, IdpGroup
from audit.log import record
from clusters.models import Cluster

GRANT_NOTE = "Demo: the demo partition and the terminal for everyone in the demo (seed_demo)"
GROUP_QUOTA_NOTE = "Demo: per-job limit for everyone in the demo; each person's own demo quota has the rest"
# Exactly this note marks a person's quota as the demo's: `left` removes only such rows.
PERSON_QUOTA_NOTE = "Demo: this person's own demo quota (made when they joined, removed when they leave)"


class SeedError(Exception):
    """The demo cannot be seeded as asked; the message says what to fix."""


@dataclass(frozen=True)
class Plan:
    """What the settings ask the demo's rows to be."""

    partition: str
    max_running_jobs: int
    max_walltime: int
    cpu_hours_per_day: float

    def grant(self) -> dict[str, Any]:
        return {"all_partitions": False, "partitions": self.partition, "terminal": True}

    def group_quota(self) -> dict[str, Any]:
        return {"max_walltime": self.max_walltime}

    def person_quota(self) -> dict[str, Any]:
        return {
            "period": Quota.Period.DAY,
            "cpu_hours": self.cpu_hours_per_day,
            "max_running_jobs": self.max_running_jobs,
            "max_walltime": self.max_walltime,
        }


def plan() -> Plan:
    p = Plan(
        partition=str(settings.CLUSTERRA_DEMO_PARTITION).strip(),
        max_running_jobs=int(settings.CLUSTERRA_DEMO_MAX_RUNNING_JOBS),
        max_walltime=int(settings.CLUSTERRA_DEMO_MAX_WALLTIME),
        cpu_hours_per_day=float(settings.CLUSTERRA_DEMO_CPU_HOURS_PER_DAY),
    )
    if not PARTITION_NAME.match(p.partition):
        raise SeedError(f"CLUSTERRA_DEMO_PARTITION={p.partition!r} is not a partition name.")
    if p.max_running_jobs < 1 or p.max_walltime < 1 or p.cpu_hours_per_day <= 0:
        raise SeedError(
            "CLUSTERRA_DEMO_MAX_RUNNING_JOBS, CLUSTERRA_DEMO_MAX_WALLTIME and "
            "CLUSTERRA_DEMO_CPU_HOURS_PER_DAY must be more than 0."
        )
    return p


def seed(cluster: Cluster, *, reset: bool = False, by: Any = "manage.py seed_demo") -> list[str]:
    """Make the demo group, its grant and quota, and every member's own quota; lines saying what happened.

    Idempotent: a second call finds everything in place and changes nothing.
    """
    wanted = plan()
    lines: list[str] = []
    with transaction.atomic():
        group, created = Group.objects.get_or_create(name=DEMO_GROUP)
        if IdpGroup.objects.filter(group=group).exists():
            # Sync rewrites an IdP group's members at each login, which would throw demo people out.
            raise SeedError(
                f"The group {DEMO_GROUP!r} is managed by an identity provider; rename that group in the "
                "admin so the demo can have a plain console group of this name."
            )
        if created:
            _note(lines, by, cluster, f"group {DEMO_GROUP}", f"Created the console group {DEMO_GROUP}.")
        grant = Grant.objects.filter(cluster=cluster, group=group).first()
        if grant is None:
            Grant.objects.create(cluster=cluster, group=group, note=GRANT_NOTE, **wanted.grant())
            _note(
                lines,
                by,
                cluster,
                f"grant of group {DEMO_GROUP}",
                f"Granted group {DEMO_GROUP} partition {wanted.partition} and the terminal "
                f"on {cluster.slug}.",
            )
        else:
            _converge(lines, grant, wanted.grant(), reset, by, cluster, f"grant of group {DEMO_GROUP}")
        quota = Quota.objects.filter(cluster=cluster, group=group).first()
        if quota is None:
            Quota(cluster=cluster, group=group, note=GROUP_QUOTA_NOTE, **wanted.group_quota()).save(
                changed_by=by
            )
            _note(
                lines,
                by,
                cluster,
                f"quota of group {DEMO_GROUP}",
                f"Set group {DEMO_GROUP}'s quota on {cluster.slug}: {wanted.max_walltime} minutes per job.",
            )
        else:
            _converge(lines, quota, wanted.group_quota(), reset, by, cluster, f"quota of group {DEMO_GROUP}")
        members = DemoMember.objects.filter(
            ended__isnull=True, user__is_active=True, user__groups=group
        ).select_related("user")
        for member in members:
            if give_person_quota(member.user, cluster, by=by) is not None:
                lines.append(f"Gave {member.user.get_username()} their own demo quota on {cluster.slug}.")
    return lines


def give_person_quota(user: Any, cluster: Cluster, *, by: Any = None) -> Quota | None:
    """The person's own demo quota on `cluster`, made if they have no quota of their own there.

    An existing personal quota is left alone: an administrator set it on purpose.
    """
    if Quota.objects.filter(cluster=cluster, user=user).exists():
        return None
    quota = Quota(cluster=cluster, user=user, note=PERSON_QUOTA_NOTE, **plan().person_quota())
    quota.save(changed_by=by if by is not None else "demo signup")
    return quota


def take_person_quota(user: Any, cluster: Cluster, *, by: Any = None) -> int:
    """Remove the person's demo-made quota on `cluster` (kept in the quota history); how many were removed."""
    rows = list(Quota.objects.filter(cluster=cluster, user=user, note=PERSON_QUOTA_NOTE))
    for quota in rows:
        quota.delete(changed_by=by if by is not None else "demo expiry")
    return len(rows)


@receiver(membership.joined, dispatch_uid="clusterra.access.demo.joined")
def on_joined(sender: Any, member: DemoMember, **kwargs: Any) -> None:
    if member.cluster is not None:
        give_person_quota(member.user, member.cluster, by="demo signup")


@receiver(membership.left, dispatch_uid="clusterra.access.demo.left")
def on_left(sender: Any, member: DemoMember, **kwargs: Any) -> None:
    if member.cluster is not None:
        take_person_quota(member.user, member.cluster)


def _converge(
    lines: list[str],
    row: Grant | Quota,
    wanted: dict[str, Any],
    reset: bool,
    by: Any,
    cluster: Cluster,
    what: str,
) -> None:
    differs = {k: (getattr(row, k), v) for k, v in wanted.items() if getattr(row, k) != v}
    if not differs:
        return
    words = ", ".join(f"{k} is {now!r}, settings say {want!r}" for k, (now, want) in differs.items())
    if not reset:
        lines.append(f"Kept the {what} as it is ({words}); --reset rewrites it.")
        return
    for name, (_, want) in differs.items():
        setattr(row, name, want)
    if isinstance(row, Quota):
        row.save(changed_by=by)
    else:
        row.save()
    _note(lines, by, cluster, what, f"Reset the {what} to the settings ({words}).")


def _note(lines: list[str], by: Any, cluster: Cluster, target: str, message: str) -> None:
    lines.append(message)
    record("demo.seeded", actor=by, cluster=cluster, target=target, message=message)
