"""Every change made in the Django admin, of any app, becomes an audit event."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.core.exceptions import ObjectDoesNotExist
from django.db.models.signals import post_save
from django.dispatch import receiver

from audit.log import record

VERBS = {ADDITION: ("add", "Added"), CHANGE: ("change", "Changed"), DELETION: ("delete", "Deleted")}


@receiver(post_save, sender=LogEntry, dispatch_uid="audit.admin_change")
def admin_change_to_audit(sender: Any, instance: LogEntry, created: bool, **kwargs: Any) -> None:
    """Mirror the admin's own log entry, written in the same transaction as the change it describes.

    The admin writes a deletion's entry before deleting, so the object can still be read here.
    """
    if not created or instance.action_flag not in VERBS:
        return
    verb, past = VERBS[instance.action_flag]
    model = instance.content_type.model_class() if instance.content_type_id else None
    label = model._meta.label if model else "unknown"
    noun = str(model._meta.verbose_name) if model else "object"
    change = instance.get_change_message()
    message = f"{past} {noun} “{instance.object_repr}” in the admin"
    record(
        f"admin.{verb}",
        actor=instance.user,
        cluster=_cluster_of(instance, label),
        target=f"{label} {instance.object_id}",
        message=f"{message}: {change}" if change and instance.action_flag == CHANGE else f"{message}.",
        details={
            "model": label,
            "object_id": instance.object_id,
            "object": instance.object_repr,
            "change": change,
        },
    )


def _cluster_of(entry: LogEntry, label: str) -> str:
    """The cluster the changed object belongs to (its slug), so the audit can be filtered by cluster."""
    try:
        obj = entry.get_edited_object()
    except (ObjectDoesNotExist, AttributeError):
        return ""  # gone, or of a model no longer installed: the event is still worth writing
    # By label, not import: audit sits below the apps whose objects it describes.
    if label == "clusters.Cluster":
        return getattr(obj, "slug", "")
    cluster = getattr(obj, "cluster", None)
    return getattr(cluster, "slug", "") if cluster is not None else ""
