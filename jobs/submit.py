"""Submitting a job by script path: validate, read as the person, merge directives, decide, queue, record.

The flow (DESIGN.md, "How a job submission flows"), the same for the form, the API and the CLI:

1. the request is checked (types, script path under the cluster's roots);
2. `access.policy.may_submit` must let the person submit there at all (a grant with a
   partition; staff who may only look are refused here), before a Linux account is set
   up for them or a file is read;
3. the script is read as the person on the head node, its `#SBATCH` lines parsed and
   merged with the request (the request wins), and the final job resolved: partition,
   time limit, nodes, CPUs, GPUs, working directory (default: the script's folder) — jobs.plan;
4. the person's Slurm client is made (their token minted; a refusal is audited and nothing else is written);
5. then ONE transaction: with an Idempotency-Key its JobRecord claim first, `access.ledger.hold`
   (decide under the quota locks), the job submitted with the submit's tag in its `extra` (or
   comment), the reservation written with the job id (`Hold.write`: the locks are still held, so
   no other submit drew on the budget meanwhile), the JobRecord, and one audit row. A successful
   submit commits once (tests/jobs/test_submit_cost.py counts it).

Every outcome that can be described is written in that same transaction and committed before it
is raised. If Slurm refuses, or the request provably never reached it (connection refused), the
reservation is written released (the ledger keeps it RELEASED, with why), a claim row deleted and the
audit says why: nothing is half-written. If the request may have reached Slurm but no usable
answer came back (a timeout, a dropped connection, a gateway's 5xx), the job may be queued:
releasing then would let the person overrun their limits and leave a job the console only adopts
as an outside one. So a claim is written, marked unconfirmed, with its reservation, and the sync
loop settles it: the job carrying the tag becomes the claim's record, and a claim whose job Slurm
does not list once the confirmation window has passed is released and removed (jobs.claims). With
an Idempotency-Key the claim row is unique per person, cluster and key and inserted first, so a
concurrent retry waits on it until the first commits and then returns that job instead of
queueing another.

Held for the slurmrestd call: the quota rows' locks, so another submit drawing on the same budget
waits for this one's answer (a few ms; at worst the call's timeouts). That is what makes the
budget check and the queueing one step.

A crash (or a lost database connection) between Slurm's answer and the commit rolls everything
back: no reservation, no record, no audit row, but a queued job. The sync loop finds it in the
person's queue; while it is younger than `claims.commit_window()` it is left alone (its submit
may still be committing), after that it is adopted like a job from a shell and charged when it
ends (`ledger.record_outside_use`). Until then the console's budget does not count it, but where
the policy is enforced the job_submit plugin on the head node does (it counts the live jobs in
slurmctld), so the person still cannot queue past their limits. Before this, a claim was
committed before the call and such a job was confirmed by its tag instead; that cost several
commits on every submit to cover a crash in a window of a few milliseconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction
from django.utils import timezone

from access import ledger, policy, refusals, snapshot
from accounts import provisioning
from accounts.models import PosixAccount, User
from accounts.provisioning import ProvisioningError
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from audit.log import record as audit
from clusters import tokens
from clusters.models import Cluster
from clusters.slurm import (
    SlurmError,
    SlurmNotFound,
    SlurmPermissionDenied,
    SlurmRejected,
    SlurmUnavailable,
)
from jobs import claims, output, scripts
from jobs.models import JobRecord
from jobs.plan import Plan, SubmitError, prepare
from jobs.submit_request import SubmitRequest

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class Outcome:
    """What a submit did: the decision, the final job, the record (None for a dry run)."""

    decision: Any
    plan: Plan | None
    record: JobRecord | None
    dry_run: bool = False
    replayed: bool = False
    warnings: tuple[str, ...] = ()


def decision_dict(decision: Any) -> dict[str, Any]:
    return {
        "allowed": decision.allowed,
        "code": decision.code,
        "message": decision.message,
        "facts": json.loads(json.dumps(decision.facts or {}, default=str)),
    }


# --- the steps ---------------------------------------------------------------------------------


def posix_account(person: User, cluster: Cluster) -> PosixAccount:
    """The person's POSIX account on the cluster, provisioned just in time; SubmitError when it cannot be."""
    try:
        return provisioning.ready_account(person, cluster)
    except ProvisioningError as e:
        status = 403 if e.code in ("inactive", "locked", "cluster_disabled") else 502
        raise SubmitError(e.message, code=f"account_{e.code}", status=status) from None


def submit(
    person: User,
    cluster: Cluster,
    parsed: SubmitRequest,
    *,
    dry_run: bool = False,
    idempotency_key: str = "",
    request: Any = None,
) -> Outcome:
    """Submit (or, with `dry_run`, only decide) a job; a Refusal (most often SubmitError) if not queued."""
    key = (idempotency_key or "").strip()
    if key and not _IDEMPOTENCY_KEY.match(key):
        raise SubmitError(
            "Idempotency-Key must be 1 to 255 visible ASCII characters (a UUID is a good choice).",
            code="invalid_idempotency_key",
        )
    digest = parsed.digest()
    # Checked as text first: a path that can never be used costs no account and no head-node call.
    if parsed.script_path is not None:
        scripts.validate(cluster, parsed.script_path)
    if key and not dry_run:
        replay = _replay(person, cluster, key, digest)
        if replay is not None:
            return replay

    gate = policy.may_submit(person, cluster)
    if not gate.allowed:
        _audit_denied(person, cluster, parsed, gate, request, dry_run=dry_run)
        raise SubmitError(gate.message, code=gate.code, status=403, decision=gate)
    account = posix_account(person, cluster)
    plan = prepare(cluster, parsed, account.username)

    if dry_run:
        decision = ledger.reserve(person, cluster, plan.resources, dry_run=True)
        if not decision.allowed:
            _audit_denied(person, cluster, parsed, decision, request, plan=plan, dry_run=True)
            raise SubmitError(decision.message, code=decision.code, status=403, decision=decision, plan=plan)
        return Outcome(decision, plan, None, dry_run=True)

    # Minted before the transaction opens: a refusal here is audited on its own and holds no lock.
    try:
        client = slurm_for(person, cluster, request=request, ready=account)
    except SlurmAccessRefused as e:
        _audit_failed(person, cluster, plan, request, e.reason, e.message, None)
        raise SubmitError(e.message, code=e.reason, status=403) from None
    except ProvisioningError as e:
        message = e.message
        _audit_failed(person, cluster, plan, request, f"account_{e.code}", message, None)
        raise SubmitError(message, code=f"account_{e.code}", status=502) from None
    except (tokens.TokenRefused, tokens.KeyUnavailable) as e:
        message = f"The console cannot act on {cluster.name} right now ({e}). Nothing was queued."
        _audit_failed(person, cluster, plan, request, "cluster_unavailable", message, None)
        raise SubmitError(message, code="cluster_unavailable", status=502) from None

    attempt = _Attempt(person, cluster, parsed, plan, key, digest, new_submit_tag(), request)
    try:
        with transaction.atomic():
            attempt.run(client)
    except _KeyTaken:
        # A concurrent request with the same key committed first (its claim held ours until then).
        replay = _replay(person, cluster, key, digest)
        if replay is not None:
            return replay
        raise SubmitError(
            "A submit with this Idempotency-Key was just abandoned; try again.", code="conflict", status=409
        ) from None
    # Committed: what the attempt wrote is durable, whatever it has to say now.
    if attempt.unexpected is not None:
        raise attempt.unexpected
    if attempt.error is not None:
        raise attempt.error
    return attempt.outcome


class _KeyTaken(Exception):
    """The Idempotency-Key's claim belongs to another request: roll back, then replay that one."""


class _Attempt:
    """One submit's single transaction: claim (with a key), reserve, queue, record, attach, audit.

    `run` is called inside `transaction.atomic()` and never raises for an outcome it can describe:
    a refusal or failure is written (released reservation, audit row) and kept in `error`, raised only
    after the commit, so the audit of a failed submit is committed with it. Only `_KeyTaken` and
    database errors leave `run` and roll everything back.
    """

    def __init__(
        self,
        person: User,
        cluster: Cluster,
        parsed: SubmitRequest,
        plan: Plan,
        key: str,
        digest: str,
        tag: str,
        request: Any,
    ) -> None:
        self.person, self.cluster, self.parsed, self.plan = person, cluster, parsed, plan
        self.key, self.digest, self.tag, self.request = key, digest, tag, request
        self.outcome: Outcome | None = None
        self.error: SubmitError | None = None
        self.unexpected: BaseException | None = None
        self.record: JobRecord | None = None
        self.hold: ledger.Hold | None = None
        self.decision: Any = None

    def run(self, client: Any) -> None:
        person, cluster, plan = self.person, self.cluster, self.plan
        if self.key:
            # First, so a concurrent request with the same key waits on this row's unique index
            # until we commit, then replays our job instead of queueing a second one.
            try:
                self.record = _new_record(person, cluster, plan, self.key, self.digest, self.tag)
            except IntegrityError:
                raise _KeyTaken from None
        self.hold = ledger.hold(person, cluster, plan.resources)
        decision = self.hold.decision
        if not decision.allowed:
            if self.record is not None:
                self.record.delete()
            _audit_denied(person, cluster, self.parsed, decision, self.request, plan=plan)
            self.error = SubmitError(
                decision.message, code=decision.code, status=403, decision=decision, plan=plan
            )
            return
        self.decision = decision
        sent_at = time.time()
        try:
            result = client.submit(dataclasses.replace(plan.spec, tag=self.tag))
        except SlurmError as e:
            self._slurm_failed(e, sent_at)
            return
        except (tokens.TokenRefused, tokens.KeyUnavailable) as e:
            message = f"The console cannot act on {cluster.name} right now ({e}). Nothing was queued."
            self._abandon("cluster_unavailable", message, 502)
            return
        except BaseException as e:
            # The request may have gone out before whatever this is: only the sync loop can tell.
            self._unconfirmed("unexpected error")
            self.unexpected = e
            return
        self._queued(result)

    def _queued(self, result: Any) -> None:
        person, cluster, plan = self.person, self.cluster, self.plan
        rid = self._write_reservation(job_id=result.job_id)
        spec = plan.spec
        record = self.record or _new_record(person, cluster, plan, "", self.digest, self.tag, save=False)
        record.slurm_job_id = result.job_id
        record.state = "PENDING"
        record.submit_time = timezone.now()
        record.reservation_id = rid
        record.ledger = JobRecord.Ledger.RESERVED
        record.stdout_path, record.stderr_path = output.paths_for(
            record, plan.spec.standard_output or "", plan.spec.standard_error or ""
        )
        record.save()
        decision = self.decision
        audit(
            "job.submit",
            actor=person,
            cluster=cluster,
            target=f"job {result.job_id}",
            message=f"Job {result.job_id} ({spec.name}) queued on {spec.partition} as {plan.posix_user}.",
            request=self.request,
            details={
                "job_id": result.job_id,
                "script_path": plan.script.path,
                "partition": plan.spec.partition,
                "time_limit": plan.spec.time_limit,
                "nodes": plan.spec.nodes,
                "cpus": plan.cpus,
                "gpus": plan.gpus,
                "array": plan.spec.array,
                "reservation_id": rid,
                "decision": decision.code,
                # What each budget the job draws on had left when it was reserved.
                "quotas": decision.facts.get("quotas", []),
                "warnings": list(result.warnings),
            },
        )
        self.outcome = Outcome(decision, plan, record, warnings=result.warnings)

    def _slurm_failed(self, e: SlurmError, sent_at: float) -> None:
        cluster = self.cluster
        # For a missing answer Slurm's own summary says nothing the sentence does not; the detail does.
        why = e.message if isinstance(e, SlurmUnavailable) else str(e)
        if e.outcome_unknown:
            message = (
                f"{cluster.name} did not confirm the submit ({why}), so the console cannot tell yet "
                "whether Slurm queued the job. Your budget stays reserved for it until the console "
                f"finds out, within {_window_words()}: if it was queued it appears in your job list, "
                "if not the reservation is released. Check your job list before submitting it again."
            )
            self._unconfirmed(message)
            self.error = SubmitError(message, code="submit_unconfirmed", status=502, decision=self.decision)
            return
        refusal = _plugin_refusal(cluster, self.person, sent_at) if isinstance(e, SlurmRejected) else None
        if refusal is not None:
            # The head node's policy saw what the console's did not yet (a job queued from a shell a
            # moment ago): its sentence, as sbatch would have printed it.
            message = f"{refusal['message']} Nothing was queued and no budget was used."
            self._abandon(str(refusal.get("code") or "slurm_rejected"), message, 403)
        elif isinstance(e, (SlurmRejected, SlurmPermissionDenied, SlurmNotFound)):
            message = f"Slurm refused the job: {e.message}. Nothing was queued and no budget was used."
            self._abandon("slurm_rejected", message, 403 if isinstance(e, SlurmPermissionDenied) else 400)
        else:
            message = (
                f"{cluster.name} did not answer the submit ({why}). Nothing was queued and your budget "
                "reservation was released; try again in a few minutes."
            )
            self._abandon("cluster_unavailable", message, 502)

    def _write_reservation(self, **how: Any) -> int:
        """The held reservation, written now that Slurm has answered (or failed to), under the same locks."""
        if self.hold is None:
            raise RuntimeError("no reservation is held: the policy was not asked")
        rid = self.hold.write(**how)
        self.decision = dataclasses.replace(self.decision, reservation_id=rid)
        return rid

    def _abandon(self, code: str, message: str, status: int) -> None:
        """The submit did not queue: no budget used, the claim dropped, and the audit log says why."""
        # The entry is written RELEASED with the reason, so the audit's reservation_id points somewhere.
        rid = self._write_reservation(released=f"submit failed: {code}")
        if self.record is not None:
            self.record.delete()
        _audit_failed(self.person, self.cluster, self.plan, self.request, code, message, rid)
        self.error = SubmitError(message, code=code, status=status, decision=self.decision)

    def _unconfirmed(self, message: str) -> None:
        """Keep a claim and its reservation for the sync loop: the job may be queued under its tag."""
        record = self.record or _new_record(
            self.person, self.cluster, self.plan, "", self.digest, self.tag, save=False
        )
        # Open and unattached: the sync loop attaches it to the job carrying the tag, or releases it.
        record.reservation_id = self._write_reservation()
        record.ledger = JobRecord.Ledger.RESERVED
        record.unconfirmed_since = timezone.now()
        record.save()
        self.record = record
        audit(
            "job.submit",
            actor=self.person,
            cluster=self.cluster,
            target=self.plan.script.label,
            outcome="error",
            reason="submit_unconfirmed",
            message=message,
            request=self.request,
            details={
                "script_path": self.plan.script.path,
                "reservation_id": record.reservation_id,
                "submit_tag": self.tag,
                **self.plan.cost_dict(),
            },
        )


def _plugin_refusal(cluster: Cluster, person: User, since: float) -> dict | None:
    """The job_submit plugin's own words for a refusal slurmrestd passed on as a bare error code."""
    if not cluster.enforce_policy:
        return None
    try:
        uid = person.posix_account.uid
    except ObjectDoesNotExist:
        return None
    return snapshot.refusal_for(cluster, uid, since)


def new_submit_tag() -> str:
    """A tag no other submit has, short enough for Slurm's comment and telling whose it is."""
    return f"clusterra:{uuid.uuid4().hex}"


def _window_words() -> str:
    minutes = max(1, math.ceil(claims.confirm_window().total_seconds() / 60))
    return "a minute" if minutes == 1 else f"{minutes} minutes"


def _new_record(
    person: User, cluster: Cluster, plan: Plan, key: str, digest: str, tag: str, *, save: bool = True
) -> JobRecord:
    """The submit's JobRecord: inserted now (a claim on an Idempotency-Key), or built to be saved once."""
    spec = plan.spec
    record = JobRecord(
        cluster=cluster,
        person=person,
        posix_user=plan.posix_user,
        origin=JobRecord.Origin.CONSOLE,
        name=spec.name or "",
        partition=spec.partition or "",
        account=spec.account or "",
        qos=spec.qos or "",
        # An array's record is the whole array; jobs.tracking adds its tasks as Slurm lists them.
        array=(spec.array or "")[:100],
        time_limit=spec.time_limit,
        node_count=spec.nodes or 1,
        cpus=plan.cpus,
        gpus=plan.gpus,
        memory_mb=spec.memory_per_node,
        script_path=plan.script.path,
        working_directory=spec.working_directory,
        idempotency_key=key,
        request_digest=digest,
        submit_tag=tag,
        submitted={
            "job": plan.job_dict(),
            "directives": plan.directive_list(),
            "cost": plan.cost_dict(),
        },
    )
    if save:
        record.save(force_insert=True)
    return record


def _audit_failed(
    person: User,
    cluster: Cluster,
    plan: Plan,
    request: Any,
    code: str,
    message: str,
    reservation_id: int | None,
) -> None:
    audit(
        "job.submit",
        actor=person,
        cluster=cluster,
        target=plan.script.label,
        outcome="error",
        reason=code,
        message=message,
        request=request,
        details={"script_path": plan.script.path, "reservation_id": reservation_id, **plan.cost_dict()},
    )


def _audit_denied(
    person: User,
    cluster: Cluster,
    parsed: SubmitRequest,
    decision: Any,
    request: Any,
    plan: Plan | None = None,
    *,
    dry_run: bool = False,
) -> None:
    refusals.record(
        person,
        cluster,
        decision,
        request=request,
        target=parsed.script_path or "the inline script",
        details={
            "script_path": parsed.script_path,
            "dry_run": dry_run,
            **(plan.cost_dict() if plan else {}),
        },
    )


def _replay(person: User, cluster: Cluster, key: str, digest: str) -> Outcome | None:
    """The job a first request with this key queued, or a 409 when the key is reused differently."""
    found = JobRecord.objects.filter(person=person, cluster=cluster, idempotency_key=key).first()
    if found is None:
        return None
    if found.request_digest != digest:
        raise SubmitError(
            "This Idempotency-Key was already used for a different request; use a new key for a new job.",
            code="idempotency_key_reused",
            status=409,
        )
    if found.slurm_job_id is None and found.unconfirmed_since is not None:
        raise SubmitError(
            f"The submit with this Idempotency-Key got no answer from {cluster.name}; the console is "
            f"finding out whether Slurm queued it (within {_window_words()}). Ask again then; "
            "nothing new was queued.",
            code="submit_unconfirmed",
            status=409,
        )
    if found.slurm_job_id is None:
        raise SubmitError(
            "A submit with this Idempotency-Key is still in progress; ask again in a moment.",
            code="submit_in_progress",
            status=409,
        )
    replayed = policy.Decision(
        allowed=True,
        code="replayed",
        message=f"This request was already submitted as job {found.slurm_job_id}; nothing new was queued.",
        facts={"job_id": found.slurm_job_id},
        reservation_id=found.reservation_id,
    )
    return Outcome(replayed, None, found, replayed=True)
