"""A person's Linux user name: made from an IdP claim, checked against the names nobody may be given.

Names already taken by another PosixAccount, and reserved names (system and service
accounts, every cluster's SlurmUser and service user, ``CLUSTERRA_RESERVED_POSIX_NAMES``),
get a numeric suffix. The head nodes' own passwd files are *not* consulted here:
the name is one for every cluster, including clusters added later, and asking each
head node at login would make sign-in depend on all of them. Instead provisioning
checks the head node and stops with a clear message if the name (or the UID) is
held there by someone else; an administrator can then pick another name, which
stays possible until the Linux user exists on some cluster (accounts.models.PosixAccount.clean).
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable

from django.conf import settings

from clusters.models import Cluster

MAX_LENGTH = 32
NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
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


def reserved_names() -> set[str]:
    """Names reserved by configuration and by the registered clusters' own accounts."""
    names = set(settings.CLUSTERRA_RESERVED_POSIX_NAMES)
    for slurm_user, service_user in Cluster.objects.values_list("slurm_user", "service_user"):
        names.update(n for n in (slurm_user, service_user) if n)
    return names
