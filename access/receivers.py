"""Publish the policy to the head nodes whose Slurm enforces it, whenever what it holds changes.

Each change schedules a publish for after its transaction commits: a rolled-back admin form
publishes nothing, and the plugin never sees a rule the database does not have. publish()
compares what it compiled with what the head node has, so a change that alters nothing
(a second save, a login that brings the same groups) writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from access.held import EVERY_CLUSTER, bump_version, held
from access.models import Grant, Quota, Usage
from accounts.models import ClusterAccount
from accounts.offboarding import NOTICE_TIMEOUT, WITHDRAWN_MESSAGE_TYPE, person_group
from clusters.models import Cluster

log = logging.getLogger("clusterra.access.snapshot")
User = get_user_model()


def policy_changed(cluster_ids: list[int] | None) -> None:
    """The rules of these clusters (None: all) changed in this transaction: move their version with it,
    and stop deciding from what this process holds (access.held)."""
    bump_version(cluster_ids)
    held.rules_changed(cluster_ids)


def publish_soon(cluster_ids: list[int] | None = None) -> None:
    """Once the current transaction commits, publish these clusters' policy (None: all) where enforced."""
    clusters = Cluster.objects.filter(enforce_policy=True)
    if cluster_ids is not None:
        clusters = clusters.filter(pk__in=cluster_ids)
    ids = list(clusters.values_list("pk", flat=True))
    if ids:
        transaction.on_commit(lambda: _publish(ids))


def withdraw_terminals_soon(user_ids: set[int], cluster_ids: list[int] | None = None) -> None:
    """Once committed: close live terminals of these people on these clusters (None: all) where the
    terminal is no longer granted to them."""
    if user_ids:
        transaction.on_commit(lambda: _withdraw_terminals(set(user_ids), cluster_ids))


def _withdraw_terminals(user_ids: set[int], cluster_ids: list[int] | None) -> None:
    from access import policy

    clusters = Cluster.objects.all() if cluster_ids is None else Cluster.objects.filter(pk__in=cluster_ids)
    layer = get_channel_layer()
    if layer is None:
        return
    for person in User.objects.filter(pk__in=user_ids, is_active=True):
        for cluster in clusters:
            decision = policy.decide(person, "terminal.open", cluster)
            if decision.allowed:
                continue
            message = {"type": WITHDRAWN_MESSAGE_TYPE, "cluster": cluster.slug, "reason": decision.message}
            try:
                async_to_sync(_tell)(layer, person_group(person.pk), message)
            except (
                Exception
            ):  # the grant is withdrawn either way; a shell open elsewhere ends at its next check
                log.exception("live terminals of %s on %s not told", person.pk, cluster.slug)


async def _tell(layer: Any, group: str, message: dict[str, Any]) -> None:
    async with asyncio.timeout(NOTICE_TIMEOUT):
        await layer.group_send(group, message)


def unsuspend_soon(user_ids: set[int], cluster_ids: list[int] | None = None) -> None:
    """Once committed: unlock the accounts of these people that were locked for want of a grant, where
    they hold one again."""
    if user_ids:
        transaction.on_commit(lambda: _unsuspend(set(user_ids), cluster_ids))


def _unsuspend(user_ids: set[int], cluster_ids: list[int] | None) -> None:
    from access.quota import held_by
    from accounts import provisioning

    rows = ClusterAccount.objects.filter(state=ClusterAccount.State.SUSPENDED, account__user_id__in=user_ids)
    if cluster_ids is not None:
        rows = rows.filter(cluster_id__in=cluster_ids)
    for row in rows.select_related("account__user", "cluster"):
        person = row.account.user
        if person is None or not person.is_active:
            continue
        if not Grant.objects.filter(cluster=row.cluster).filter(held_by(person)).exists():
            continue
        try:
            provisioning.unsuspend(row)
        except Exception:  # the grant is saved; the next use says what is wrong with the head node
            log.exception("%s not unlocked on %s", row.account.username, row.cluster.slug)


def _holders(grant: Grant) -> set[int]:
    if grant.user_id:
        return {grant.user_id}
    return set(User.groups.through.objects.filter(group_id=grant.group_id).values_list("user_id", flat=True))


def _publish(ids: list[int]) -> None:
    from access import snapshot

    for cluster in Cluster.objects.filter(pk__in=ids, enforce_policy=True):
        try:
            snapshot.publish(cluster)
        except Exception:  # the change itself is saved; the sync loop publishes again
            log.exception("policy for %s not published after a change", cluster.slug)


@receiver(post_save, sender=Grant, dispatch_uid="access.publish.grant_saved")
@receiver(post_delete, sender=Grant, dispatch_uid="access.publish.grant_deleted")
@receiver(post_save, sender=Quota, dispatch_uid="access.publish.quota_saved")
@receiver(post_delete, sender=Quota, dispatch_uid="access.publish.quota_deleted")
def rules_changed(sender: Any, instance: Grant | Quota, **kwargs: Any) -> None:
    if _cluster_going(kwargs):
        return
    # First, so the decisions the hooks below make after the commit see the change.
    policy_changed([instance.cluster_id])
    publish_soon([instance.cluster_id])
    if isinstance(instance, Grant):
        holders = _holders(instance)
        withdraw_terminals_soon(holders, [instance.cluster_id])
        unsuspend_soon(holders, [instance.cluster_id])


@receiver(post_save, sender=Cluster, dispatch_uid="access.publish.cluster_saved")
def cluster_changed(sender: Any, instance: Cluster, **kwargs: Any) -> None:
    if instance.enforce_policy:
        publish_soon([instance.pk])


@receiver(post_save, sender=ClusterAccount, dispatch_uid="access.publish.account_saved")
def account_changed(sender: Any, instance: ClusterAccount, **kwargs: Any) -> None:
    if instance.state in (ClusterAccount.State.READY, ClusterAccount.State.LOCKED):
        publish_soon([instance.cluster_id])


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="access.publish.groups_changed")
def groups_changed(
    sender: Any, action: str, instance: Any, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    if action == "post_clear" or (action in ("post_add", "post_remove") and pk_set):
        policy_changed(EVERY_CLUSTER)
    if action in ("post_add", "post_remove", "post_clear"):
        publish_soon()
    if action == "post_add":
        unsuspend_soon(set(pk_set or ()) if reverse else {instance.pk})
    if action in ("post_remove", "post_clear"):
        # person.groups.remove(group), or group.user_set.remove(person): who left is on one side or the other.
        withdraw_terminals_soon(set(pk_set or ()) if reverse else {instance.pk})


@receiver(pre_save, sender=User, dispatch_uid="access.publish.person_saving")
def person_saving(sender: Any, instance: Any, **kwargs: Any) -> None:
    # Only a change of is_active matters to the policy; a login's last_login does not.
    if instance.pk is None:
        return
    was = User.objects.filter(pk=instance.pk).values_list("is_active", flat=True).first()
    instance._policy_changed = was is not None and was != instance.is_active


@receiver(post_save, sender=User, dispatch_uid="access.publish.person_saved")
def person_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    # After the save, so the snapshot compiles what was saved (outside a transaction on_commit runs at once).
    if getattr(instance, "_policy_changed", False):
        instance._policy_changed = False
        publish_soon()


@receiver(post_save, sender=Group, dispatch_uid="access.policy.group_saved")
@receiver(post_delete, sender=Group, dispatch_uid="access.policy.group_deleted")
def group_changed(sender: Any, instance: Group, created: bool = False, **kwargs: Any) -> None:
    # A renamed group changes the sentences ("group ml-team's quota"); a new one holds nothing yet.
    if not created:
        policy_changed(EVERY_CLUSTER)


@receiver(post_save, sender=Usage, dispatch_uid="access.policy.use_saved")
@receiver(post_delete, sender=Usage, dispatch_uid="access.policy.use_deleted")
def use_changed(sender: Any, instance: Usage, **kwargs: Any) -> None:
    if not _cluster_going(kwargs):
        held.use_changed([instance.cluster_id])


@receiver(m2m_changed, sender=Usage.groups.through, dispatch_uid="access.policy.use_groups_changed")
def use_groups_changed(sender: Any, action: str, instance: Any, reverse: bool, **kwargs: Any) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        held.use_changed(None if reverse else [instance.cluster_id])


def _cluster_going(signal: dict[str, Any]) -> bool:
    """Whether a row goes because its cluster is being deleted: then there is nothing left to change."""
    origin = signal.get("origin")
    model = getattr(origin, "model", type(origin))
    return model is Cluster
