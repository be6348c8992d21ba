"""A person's one POSIX identity: a Linux user name made from an IdP claim, and a UID that is never reused.

Decisions worth knowing:

- The name comes from the claim named by ``CLUSTERRA_POSIX_NAME_CLAIM`` (default ``email``);
  any value with an ``@`` (an e-mail address, a UPN) gives its local part, without a
  ``+tag``. It is made once, at the first login, and never follows later changes of
  the claim: files, jobs and Slurm associations on the clusters carry it.
- Names already taken, and reserved names, get a numeric suffix (accounts.posix_names
  says which names and why).
- UID and GID are the same number (a user-private group), taken from
  ``CLUSTERRA_UID_MIN``..``CLUSTERRA_UID_MAX`` through a counter row locked with
  SELECT … FOR UPDATE, so two first logins at once never share a number and a
  number freed by a deleted row is never handed out again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from accounts.models import IdCounter, PosixAccount, User
from accounts.posix_names import make_name, reserved_names
from audit.log import record

# On a head node that hosts the console, every account the console makes is also in this group, whose
# only use is to be refused: the service sockets there give it nothing (terminal.confine_host).
PEOPLE_GROUP = "clusterra-people"
COUNTER = "posix_id"
# 65534 is nobody/nogroup and 65535 is (uid_t)-1 for 16-bit tools; no person may get either.
UNUSABLE_IDS = frozenset({65534, 65535})


class UidRangeExhausted(Exception):
    """Every number of the configured UID range has been handed out."""


# --- settings and the database -----------------------------------------------------------------


def uid_range() -> tuple[int, int]:
    low, high = settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX
    if not 1000 <= low <= high <= 2**31 - 2:
        raise ImproperlyConfigured(
            f"CLUSTERRA_UID_MIN={low} and CLUSTERRA_UID_MAX={high} must satisfy 1000 <= min <= max < 2^31-1."
        )
    return low, high


def name_source(user: User, claims: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The value a person's name is made from, and where it came from (for the audit log)."""
    for key in dict.fromkeys([settings.CLUSTERRA_POSIX_NAME_CLAIM, "email"]):
        value = (claims or {}).get(key)
        if isinstance(value, str) and value.strip():
            return value, f"claim {key}"
    if user.email:
        return user.email, "e-mail address"
    return user.get_username(), "console user name"


def ensure_account(user: User, claims: Mapping[str, Any] | None = None) -> PosixAccount:
    """The person's PosixAccount, made on first call (idempotent; safe under concurrent logins)."""
    existing = PosixAccount.objects.filter(user=user).first()
    if existing is not None:
        return existing
    value, source = name_source(user, claims)
    low, high = uid_range()
    with transaction.atomic():
        # Every allocation queues on this one row, so the name check and the number are race-free.
        counter, _ = IdCounter.objects.select_for_update().get_or_create(
            name=COUNTER, defaults={"next_value": low}
        )
        existing = PosixAccount.objects.filter(user=user).first()
        if existing is not None:
            return existing
        extra = reserved_names()
        name = make_name(
            value,
            lambda n: PosixAccount.objects.filter(username=n).exists(),
            extra_reserved=extra,
        )
        number = _next_free_id(max(counter.next_value, low), high)
        account = PosixAccount.objects.create(user=user, username=name, uid=number, gid=number)
        counter.next_value = number + 1
        counter.save(update_fields=["next_value"])
    record(
        "posix.account_created",
        actor=user,
        target=name,
        message=f"Linux user name {name} with UID/GID {number}, made from the {source}.",
        details={"uid": number, "gid": number, "source": source},
    )
    return account


def _next_free_id(start: int, high: int) -> int:
    number = start
    while number <= high:
        # Rows made by hand (or before the range moved) may already hold a number.
        if number not in UNUSABLE_IDS and not (
            PosixAccount.objects.filter(uid=number).exists()
            or PosixAccount.objects.filter(gid=number).exists()
        ):
            return number
        number += 1
    low, _ = uid_range()
    raise UidRangeExhausted(
        f"No UID is left in the range {low}-{high}; an administrator must raise CLUSTERRA_UID_MAX "
        "before anyone new can use a cluster."
    )


def on_login(user: User, claims: Mapping[str, Any]) -> PosixAccount | None:
    """Called by the OIDC adapter after every sign-in: makes the PosixAccount the first time.

    Later logins change nothing, even when the claim has changed: renaming a Linux
    user is an administrator's decision (see PosixAccount.clean). A full UID range
    does not stop the sign-in (None, audited): the console is still of use, and the
    first cluster action repeats the sentence to the person.
    """
    try:
        return ensure_account(user, claims)
    except UidRangeExhausted as e:
        record(
            "posix.account_created",
            actor=user,
            target=user.get_username(),
            outcome="error",
            reason="uid_range_full",
            message=str(e),
        )
        return None
