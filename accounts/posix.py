"""A person's one POSIX identity: a Linux user name made from an IdP claim, and a UID that is never reused.

Decisions worth knowing:

- The name comes from the claim named by ``CLUSTERRA_POSIX_NAME_CLAIM`` (default ``email``);
  any value with an ``@`` (an e-mail address, a UPN) gives its local part, without a
  ``+tag``. It is made once, at the first login, and never follows later changes of
  the claim: files, jobs and Slurm associations on the clusters carry it.
- Names already taken by another PosixAccount, and reserved names (system and service
  accounts, every cluster's SlurmUser and service user, ``CLUSTERRA_RESERVED_POSIX_NAMES``),
  get a numeric suffix. The head nodes' own passwd files are *not* consulted here:
  the name is one for every cluster, including clusters added later, and asking each
  head node at login would make sign-in depend on all of them. Instead provisioning
  checks the head node and stops with a clear message if the name (or the UID) is
  held there by someone else; an administrator can then pick another name, which
  stays possible until the Linux user exists on some cluster.
- UID and GID are the same number (a user-private group), taken from
  ``CLUSTERRA_UID_MIN``..``CLUSTERRA_UID_MAX`` through a counter row locked with
  SELECT … FOR UPDATE, so two first logins at once never share a number and a
  number freed by a deleted row is never handed out again.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from accounts.models import IdCounter, PosixAccount, User
from audit.log import record

MAX_LENGTH = 32
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
DEFAULT_UID_MIN = 200_000
DEFAULT_UID_MAX = 299_999
# On a head node that hosts the console, every account the console makes is also in this group, whose
# only use is to be refused: the service sockets there give it nothing (terminal.confine_host).
PEOPLE_GROUP = "clusterra-people"
COUNTER = "posix_id"
# 65534 is nobody/nogroup and 65535 is (uid_t)-1 for 16-bit tools; no person may get either.
UNUSABLE_IDS = frozenset({65534, 65535})
# Accounts that Debian, RHEL-likes, AWS images and the Slurm stack create, plus names
# that would read as authority in a log line. A group of the same name is made for each
# person, so well-known group names are here too.
RESERVED_NAMES = frozenset(
    {
        "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
        "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup", "adm",
        "operator", "halt", "shutdown", "ftp", "tty", "disk", "kmem", "dialout", "fax", "voice",
        "cdrom", "floppy", "tape", "sudo", "audio", "dip", "src", "shadow", "utmp", "video",
        "sasl", "plugdev", "staff", "users", "wheel", "input", "render", "netdev", "crontab",
        "messagebus", "sshd", "polkitd", "chrony", "ntp", "postfix", "dnsmasq", "tcpdump",
        "avahi", "rpc", "rpcuser", "nfsnobody", "tss", "docker", "lxd", "libvirt", "kvm",
        "slurm", "slurmrest", "slurmrestd", "slurmdbd", "munge", "mysql", "mariadb", "postgres",
        "redis", "clusterra", "admin", "administrator", "ec2-user", "ssm-user", "ubuntu",
        "centos", "rocky", "almalinux", "debian", "fedora", "guest", "user",
        "ldap", "nslcd", "sssd", "systemd-network", "systemd-resolve", "systemd-timesync",
    }
)  # fmt: skip
RESERVED_PREFIXES = ("systemd-", "_")
# Letters that Unicode decomposition leaves alone but that have a usual Latin spelling.
_SPELLED = str.maketrans(
    {
        "ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "ł": "l", "þ": "th",
        "ħ": "h", "\u0131": "i", "ŋ": "ng", "\u017f": "s",
    }
)  # fmt: skip
# A claim value's word separators become "_", so "Jane.Doe" stays readable as jane_doe.
_SEPARATORS = re.compile(r"[\s.]+")
_NOT_ALLOWED = re.compile(r"[^a-z0-9_-]+")
_RUNS = re.compile(r"([_-])[_-]+")


class UidRangeExhausted(Exception):
    """Every number of the configured UID range has been handed out."""


# --- the name, as pure functions -------------------------------------------------------------


def name_base(value: str) -> str:
    """The Linux user name a claim value asks for, before collisions are looked at."""
    text = value.strip()
    if "@" in text:
        text = text.rpartition("@")[0].partition("+")[0]
    text = text.lower().translate(_SPELLED)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    text = _SEPARATORS.sub("_", text)
    text = _NOT_ALLOWED.sub("", text)
    text = _RUNS.sub(r"\1", text).strip("_-")
    if not text:
        return "user"
    if text[0].isdigit():
        # useradd refuses names that start with a digit (and ones that are all digits).
        text = "u" + text
    return text[:MAX_LENGTH].rstrip("_-")


def is_reserved(name: str, extra: frozenset[str] | set[str] = frozenset()) -> bool:
    return name in RESERVED_NAMES or name in extra or name.startswith(RESERVED_PREFIXES)


def make_name(
    value: str, is_taken: Callable[[str], bool] = lambda name: False, *, extra_reserved: Iterable[str] = ()
) -> str:
    """A valid, free Linux user name for `value`: its base, else the base with 2, 3, … appended."""
    base = name_base(value)
    if base.startswith(RESERVED_PREFIXES):
        # No suffix frees a reserved prefix ("systemd-x2" is still a system name): start the name anew.
        base = ("u" + base)[:MAX_LENGTH].rstrip("_-")
    reserved = frozenset(extra_reserved)
    for n in itertools.count(1):
        if n > 100_000:
            raise ValueError(f"no free name near {base!r}")
        suffix = "" if n == 1 else str(n)
        name = base[: MAX_LENGTH - len(suffix)].rstrip("_-") + suffix
        if not is_reserved(name, reserved) and not is_taken(name):
            return name
    raise AssertionError("unreachable")


def name_problem(name: str) -> str:
    """Why `name` cannot be a person's Linux user name, or "" if it can (for admin overrides)."""
    if not NAME.match(name or ""):
        return (
            "A Linux user name is 1 to 32 characters: lower-case letters, digits, '_' and '-', "
            "starting with a letter or '_'."
        )
    if is_reserved(name, reserved_names()):
        return f"{name!r} is reserved for a system or service account."
    return ""


# --- settings and the database -----------------------------------------------------------------


def reserved_names() -> set[str]:
    """Names reserved by configuration and by the registered clusters' own accounts."""
    from clusters.models import Cluster

    names = set(getattr(settings, "CLUSTERRA_RESERVED_POSIX_NAMES", ()))
    for slurm_user, service_user in Cluster.objects.values_list("slurm_user", "service_user"):
        names.update(n for n in (slurm_user, service_user) if n)
    return names


def uid_range() -> tuple[int, int]:
    low = int(getattr(settings, "CLUSTERRA_UID_MIN", DEFAULT_UID_MIN))
    high = int(getattr(settings, "CLUSTERRA_UID_MAX", DEFAULT_UID_MAX))
    if not 1000 <= low <= high <= 2**31 - 2:
        raise ImproperlyConfigured(
            f"CLUSTERRA_UID_MIN={low} and CLUSTERRA_UID_MAX={high} must satisfy 1000 <= min <= max < 2^31-1."
        )
    return low, high


def name_source(user: User, claims: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The value a person's name is made from, and where it came from (for the audit log)."""
    claim = getattr(settings, "CLUSTERRA_POSIX_NAME_CLAIM", "email") or "email"
    for key in dict.fromkeys([claim, "email"]):
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
