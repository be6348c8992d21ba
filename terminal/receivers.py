"""What the terminal app hears from accounts: offboarding asks how many live terminals it will close,
and a deactivated person's terminal AWS credentials are dropped.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts import offboarding
from clusters import aws
from terminal.models import TerminalSession


@receiver(offboarding.foreseen, dispatch_uid="terminal.live_terminals")
def live_terminals(sender: Any, user: Any, **kwargs: Any) -> dict[str, int]:
    """The person's terminals not yet ended, on any worker (each has a row until it ends)."""
    return {"live_terminals": TerminalSession.objects.filter(person=user, ended__isnull=True).count()}


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="terminal.drop_aws_credentials")
def drop_aws_credentials(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A deactivated person's per-person AWS credentials leave this process's cache, and are not renewed.

    Any path that deactivates (offboarding, SCIM, the admin) saves the row, so this hears all of them.
    Other processes refuse the person at their next opening (aws.person_credentials reads is_active).
    """
    if not instance.is_active:
        aws.forget_person(instance.pk)
