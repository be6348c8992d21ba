"""What the terminal app tells other apps when they ask: the live terminals offboarding will close."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from accounts import offboarding
from terminal.models import TerminalSession


@receiver(offboarding.foreseen, dispatch_uid="terminal.live_terminals")
def live_terminals(sender: Any, user: Any, **kwargs: Any) -> dict[str, int]:
    """The person's terminals not yet ended, on any worker (each has a row until it ends)."""
    return {"live_terminals": TerminalSession.objects.filter(person=user, ended__isnull=True).count()}
