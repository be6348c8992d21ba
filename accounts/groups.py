"""IdP group sync: a claim's values become console groups marked IdP-managed, rewritten at every login.

Naming rule. A new IdP group is named after the claim value ("hpc-users"). If that name is
taken, by a group made by hand or by a group another IdP manages, it becomes
"hpc-users (okta)", then "hpc-users (okta 2)", "hpc-users (okta 3)"... The first group to
arrive keeps the plain name. A group made by hand is never adopted, renamed or changed.
An administrator may rename an IdP-managed group (Entra sends object ids, for instance):
the IdpGroup row, not the name, ties the group to its claim value, so sync keeps using it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group
from django.db import IntegrityError, transaction

from accounts.models import IdpGroup

logger = logging.getLogger("clusterra.accounts")

NAME_MAX = Group._meta.get_field("name").max_length
VALUE_MAX = IdpGroup._meta.get_field("claim_value").max_length


@dataclass(frozen=True)
class GroupSync:
    """What one login's sync did, by group name; `kept_because` is set when it changed nothing on purpose."""

    provider: str
    groups: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept_because: str = ""

    def as_details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"groups": list(self.groups), "added": list(self.added)}
        details["removed"] = list(self.removed)
        if self.kept_because:
            details["kept_because"] = self.kept_because
        return details


def claim_values(claims: Mapping[str, Any], claim: str) -> list[str] | None:
    """The claim's values as a clean list; None when the IdP said it left them out.

    A missing claim means "in no group" (Okta and Entra omit an empty one). Entra's
    overage, past about 200 groups, replaces the claim with a pointer in `_claim_names`:
    then the person's groups are unknown, not empty, and must not be wiped.
    """
    if claim not in claims:
        pointers = claims.get("_claim_names")
        if isinstance(pointers, Mapping) and claim in pointers:
            return None
        return []
    raw = claims[claim]
    if isinstance(raw, str | int):
        raw = [raw]
    if not isinstance(raw, list | tuple):
        logger.warning("claim %r is neither a list nor a string; treated as no groups", claim)
        return []
    values: list[str] = []
    for item in raw:
        if not isinstance(item, str | int) or isinstance(item, bool):
            continue
        value = str(item).strip()
        if not value:
            continue
        if len(value) > VALUE_MAX:
            # Cutting it short could merge two different groups into one.
            logger.warning("group claim value longer than %d characters ignored: %.60s…", VALUE_MAX, value)
            continue
        if value not in values:
            values.append(value)
    return values


def sync(user: Any, provider: str, values: Iterable[str] | None) -> GroupSync:
    """Make the person's groups managed by `provider` exactly those named by `values`.

    Groups of other providers and groups made by hand are left as they are. `values`
    None (the IdP withheld the list) leaves everything as it is.
    """
    if values is None:
        current = user.groups.filter(idp__provider=provider).order_by("name")
        return GroupSync(
            provider=provider,
            groups=tuple(g.name for g in current),
            kept_because="the IdP did not send the group list (too many groups)",
        )
    with transaction.atomic():
        wanted = {group_for(provider, value) for value in values}
        current = set(user.groups.filter(idp__provider=provider))
        to_add = wanted - current
        to_remove = current - wanted
        if to_add:
            user.groups.add(*to_add)
        if to_remove:
            user.groups.remove(*to_remove)
    return GroupSync(
        provider=provider,
        groups=tuple(sorted(g.name for g in wanted)),
        added=tuple(sorted(g.name for g in to_add)),
        removed=tuple(sorted(g.name for g in to_remove)),
    )


def group_for(provider: str, value: str) -> Group:
    """The console group that `provider`'s claim value stands for, made on first sight."""
    for _attempt in range(5):
        mark = IdpGroup.objects.select_related("group").filter(provider=provider, claim_value=value).first()
        if mark is not None:
            return mark.group
        try:
            # A savepoint, so a concurrent login that made the group (or took the name) first
            # only costs another look, not the surrounding transaction.
            with transaction.atomic():
                group = Group.objects.create(name=free_name(provider, value))
                IdpGroup.objects.create(group=group, provider=provider, claim_value=value)
                return group
        except IntegrityError:
            continue
    raise RuntimeError(f"could not create the console group for {provider} group {value!r}")


def free_name(provider: str, value: str) -> str:
    """The first unused name for a new group, following the naming rule in this module's docstring."""
    candidates = [value[:NAME_MAX]]
    for n in range(1, 100):
        suffix = f" ({provider})" if n == 1 else f" ({provider} {n})"
        candidates.append(value[: NAME_MAX - len(suffix)] + suffix)
    taken = set(Group.objects.filter(name__in=candidates).values_list("name", flat=True))
    for name in candidates:
        if name not in taken:
            return name
    raise RuntimeError(f"no free group name for {provider} group {value!r}")
