"""Publish the policy to the head nodes whose Slurm enforces it, whenever what it holds changes.

Each change schedules a publish for after its transaction commits: a rolled-back admin form
publishes nothing, and the plugin never sees a rule the database does not have. publish()
compares what it compiled with what the head node has, so a change that alters nothing
(a second save, a login that brings the same groups) writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from access.models import Grant, Quota
from accounts.models import ClusterAccount
from clusters.models import Cluster

log = logging.getLogger("clusterra.access.snapshot")
User = get_user_model()


def publish_soon(cluster_ids: list[int] | None = None) -> None:
    """Once the current transaction commits, publish these clusters' policy (None: all) where enforced."""
    clusters = Cluster.objects.filter(enforce_policy=True)
    if cluster_ids is not None:
        clusters = clusters.filter(pk__in=cluster_ids)
    ids = list(clusters.values_list("pk", flat=True))
    if ids:
        transaction.on_commit(lambda: _publish(ids))


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
    publish_soon([instance.cluster_id])


@receiver(post_save, sender=Cluster, dispatch_uid="access.publish.cluster_saved")
def cluster_changed(sender: Any, instance: Cluster, **kwargs: Any) -> None:
    if instance.enforce_policy:
        publish_soon([instance.pk])


@receiver(post_save, sender=ClusterAccount, dispatch_uid="access.publish.account_saved")
def account_changed(sender: Any, instance: ClusterAccount, **kwargs: Any) -> None:
    if instance.state in (ClusterAccount.State.READY, ClusterAccount.State.LOCKED):
        publish_soon([instance.cluster_id])


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="access.publish.groups_changed")
def groups_changed(sender: Any, action: str, **kwargs: Any) -> None:
    if action in ("post_add", "post_remove", "post_clear"):
        publish_soon()


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
