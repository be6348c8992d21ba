"""The compiled policy each console process holds in memory, and how it learns of changes.

A decision (access.policy) reads the person's grants and quotas from here and the quota use
from here too, so deciding costs no query at all most of the time; reading them from the
database cost five queries and ~11 ms with 10,000 grants and quotas.

What is held, per cluster:
- the rules: access.compiled.Rules, the same compiler input the head node's snapshot is made
  from (grants, quotas and who holds them: three bulk queries, then added up per person on first
  use). Tagged with the cluster's PolicyVersion, read before the rules are;
- each quota's status (use, reservations, job counts) in its current period, read in one query
  for all the quotas of a person that are missing, and kept until its period renews.

How fresh it is — the decision and its reason:
- A change made in this process is seen by the next decision at once: access.receivers tells
  `rules_changed`/`use_changed` at every save, which forget what is held when the transaction
  commits (at once outside one). Inside the transaction that made a change, the decisions read
  the database directly, as before (see `_changing_here`): its own uncommitted change must
  count, and must never reach what the other threads share, since it may still roll back. A
  rolled-back change (a dry run, a reservation that failed) therefore costs the others nothing.
- A change made by another process is seen within FRESHNESS seconds (setting
  CLUSTERRA_POLICY_FRESHNESS_SECONDS, default 1): when the rules were checked longer ago than
  that, the next decision reads the cluster's version (one primary-key read) and loads the
  rules again only if it moved; every rule change bumps it in its own transaction
  (`bump_version`), so a process that sees the new number reads the rows it committed. Use
  is re-read per quota once it is older than that. One query a second per busy cluster and
  process is nothing beside the decisions; checking at every decision would be a query each.
  A ledger write does not bump the version: every submit would then queue on one row.
- A reservation (`ledger.reserve`, decide with lock=True) stays exact: it reads the version
  inside its transaction (so the rules are current), locks the quota rows the rules name and
  reads them and their use from the database, as before, in three queries instead of five.
- Deactivation is read from the person object at every decision, never from here.

A rebuild is made whole, then swapped in with one assignment: a thread sees the old rules or
the new, never half of them. One rebuild per cluster at a time; the others wait for it. Its
three reads are separate statements: a change that commits between them is in some and not
others, but it moved the version (and, if made here, this process's count of changes) after
the rebuild read it, so the rules are read again within the same bound.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from access.compiled import PersonRules, QuotaRule, Rules
from access.models import PolicyVersion
from access.quota import QuotaStatus, statuses_of
from clusters.models import Cluster
from prepared import Prepared

FRESHNESS_SECONDS = 1.0
# `rules_changed(None)`: every cluster (a person joined or left a group, a group was renamed).
EVERY_CLUSTER = None


def freshness() -> float:
    """How old, at most, what another process changed may be when a decision is made here (seconds)."""
    return float(getattr(settings, "CLUSTERRA_POLICY_FRESHNESS_SECONDS", FRESHNESS_SECONDS))


@dataclass
class _HeldRules:
    rules: Rules
    version: int
    generation: int  # this process's count of changes to the cluster when the rules were read
    checked: float  # time.monotonic() when `version` was last compared with the database's


@dataclass(frozen=True)
class _HeldStatus:
    status: QuotaStatus
    # The rule it was read for: rules read again (a quota's holder, period or limits may have
    # changed) are new objects, so a status read under the old ones is never served with them.
    rule: QuotaRule
    generation: int
    read: float  # time.monotonic() when it was read


class Holder:
    """The policy of every cluster this process has decided on. One per process: `held`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._building: dict[int, threading.Lock] = {}
        self._rules: dict[int, _HeldRules] = {}
        self._statuses: dict[int, _HeldStatus] = {}  # by quota id
        # Changes made in this process: per cluster, plus those that touch every cluster.
        self._rule_changes: dict[int, int] = defaultdict(int)
        self._every_rule_change = 0
        self._use_changes: dict[int, int] = defaultdict(int)

    # --- what decisions read --------------------------------------------------------------------

    def person(self, person: Any, cluster: Cluster, *, exact: bool = False) -> PersonRules:
        """The person's grants and quotas on the cluster. `exact`: compare the version first, whatever
        its age (ledger.reserve, inside its transaction)."""
        if _changing_here(cluster.pk):
            return Rules.load(cluster, person).of(person.pk)
        return self.rules(cluster, exact=exact).of(person.pk)

    def rules(self, cluster: Cluster, *, exact: bool = False) -> Rules:
        held = self._rules.get(cluster.pk)
        generation = self._rule_generation(cluster.pk)
        if held is not None and held.generation == generation:
            if not exact and time.monotonic() - held.checked < freshness():
                return held.rules
            version = read_version(cluster.pk)
            if version == held.version:
                held.checked = time.monotonic()
                return held.rules
        return self._rebuild(cluster, held)

    def statuses(self, cluster: Cluster, quotas: Iterable[QuotaRule], now: datetime) -> list[QuotaStatus]:
        """The quotas' statuses in this period, from memory where they are fresh enough."""
        quotas = list(quotas)
        if not quotas:
            return []
        if _changing_here(cluster.pk):
            return statuses_of(quotas, now)
        generation = self._use_changes[cluster.pk]
        limit = time.monotonic() - freshness()
        found: dict[int, QuotaStatus] = {}
        for q in quotas:
            held = self._statuses.get(q.pk)
            if held is None or held.rule is not q or held.generation != generation:
                continue
            if held.read > limit and held.status.period_start <= now < held.status.renews:
                found[q.pk] = held.status
        missing = [q for q in quotas if q.pk not in found]
        if missing:
            read = time.monotonic()
            for q, status in zip(missing, statuses_of(missing, now), strict=True):
                found[q.pk] = status
                self._statuses[q.pk] = _HeldStatus(status, q, generation, read)
        return [found[q.pk] for q in quotas]

    def use_generation(self, cluster_id: int) -> int:
        """How many ledger writes this process has committed on the cluster (what is drawn from use can
        be kept until it moves)."""
        return self._use_changes[cluster_id]

    # --- what changes tell it -------------------------------------------------------------------

    def rules_changed(self, cluster_ids: Iterable[int] | None) -> None:
        """Grants, quotas or membership changed here: decide from them afresh once it commits (at once
        outside a transaction); until then this transaction's own decisions read the database."""
        ids = None if cluster_ids is None else frozenset(cluster_ids)

        def forget() -> None:
            with self._lock:
                if ids is None:
                    self._every_rule_change += 1
                else:
                    for cluster_id in ids:
                        self._rule_changes[cluster_id] += 1

        _after_commit(forget, ids)

    def use_changed(self, cluster_ids: Iterable[int] | None) -> None:
        """A ledger entry was written here: read the use afresh once it commits (as rules_changed)."""
        ids = None if cluster_ids is None else frozenset(cluster_ids)

        def forget() -> None:
            with self._lock:
                for cluster_id in ids if ids is not None else list(self._use_changes):
                    self._use_changes[cluster_id] += 1

        _after_commit(forget, ids)

    def forget_everything(self) -> None:
        """Drop all that is held (tests; a process that must start from the database)."""
        with self._lock:
            self._rules.clear()
            self._statuses.clear()

    # --- inside ---------------------------------------------------------------------------------

    def _rule_generation(self, cluster_id: int) -> int:
        return self._every_rule_change + self._rule_changes[cluster_id]

    def _rebuild(self, cluster: Cluster, seen: _HeldRules | None) -> Rules:
        with self._lock:
            building = self._building.setdefault(cluster.pk, threading.Lock())
        with building:
            held = self._rules.get(cluster.pk)
            if held is not None and held is not seen and held.generation == self._rule_generation(cluster.pk):
                return held.rules  # another thread rebuilt it while this one waited
            # Both before the rows: a change committed meanwhile leaves the rules tagged older than
            # they are, and the next decision reads them again; never the other way round.
            generation = self._rule_generation(cluster.pk)
            version = read_version(cluster.pk)
            rules = Rules.load(cluster)
            self._rules[cluster.pk] = _HeldRules(rules, version, generation, time.monotonic())
            return rules


held = Holder()


# Read by every reservation, inside the submit's transaction: compiled once.
_VERSION = Prepared(
    lambda cluster_id: PolicyVersion.objects.filter(cluster_id=cluster_id).values("rules"), int
)


def read_version(cluster_id: int) -> int:
    """The cluster's rules version in the database (0 before the first change)."""
    found = _VERSION.rows(cluster_id)
    return found[0]["rules"] if found else 0


def bump_version(cluster_ids: Iterable[int] | None) -> None:
    """Move the rules version of these clusters (None: every cluster), in the caller's transaction.

    One UPDATE once the rows exist. A cluster's first change makes its row: inserted (or left as
    another transaction inserted it, after waiting for that one), then incremented again; a
    version that moves by two is as good as one.
    """
    rows = (
        PolicyVersion.objects.all()
        if cluster_ids is None
        else PolicyVersion.objects.filter(cluster_id__in=set(cluster_ids))
    )
    moved = rows.update(rules=F("rules") + 1)
    ids = set(Cluster.objects.values_list("pk", flat=True)) if cluster_ids is None else set(cluster_ids)
    if moved < len(ids):
        PolicyVersion.objects.bulk_create(
            [PolicyVersion(cluster_id=i) for i in sorted(ids)], ignore_conflicts=True
        )
        PolicyVersion.objects.filter(cluster_id__in=ids).update(rules=F("rules") + 1)


def _after_commit(forget: Callable[[], None], cluster_ids: frozenset[int] | None) -> None:
    # The hook also marks the open transaction as one that changed the policy (_changing_here).
    def committed() -> None:
        forget()

    committed.policy_clusters = cluster_ids  # type: ignore[attr-defined]
    transaction.on_commit(committed)


def _changing_here(cluster_id: int) -> bool:
    """Whether this thread's open transaction changed the cluster's rules or use (not yet committed).

    Told by the hooks rules_changed/use_changed left to run at its commit: Django drops them at a
    rollback (or the rollback of the savepoint that queued them), so this ends with the transaction.
    """
    if not connection.in_atomic_block:
        return False
    for _savepoints, hook, _robust in connection.run_on_commit:
        ids = getattr(hook, "policy_clusters", False)
        if ids is None or (ids and cluster_id in ids):
            return True
    return False
