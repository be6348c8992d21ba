"""Submitting a job by script path: validate, read as the person, merge directives, decide, queue, record.

The flow (DESIGN.md, "How a job submission flows"), the same for the form, the API and the CLI:

1. the request is checked (types, script path under the cluster's roots);
2. `access.policy.may_submit` must let the person submit there at all (a grant with a
   partition; staff who may only look are refused here), before a Linux account is set
   up for them or a file is read;
3. the script is read as the person on the head node, its `#SBATCH` lines parsed and
   merged with the request (the request wins), and the final job resolved: partition,
   time limit, nodes, CPUs, GPUs, working directory (default: the script's folder) — jobs.plan;
4. `access.ledger.reserve` decides and reserves the budget in one locked transaction;
5. a JobRecord claim is written, the job submitted as the person (`slurm_for`) with the
   claim's `submit_tag` as its Slurm comment, then the record completed,
   `access.ledger.attach` called and the submit audited (a refusal too, once, with the decision's facts).

If Slurm refuses, or the request provably never reached it (connection refused), the
reservation is released, the claim row deleted and the audit says why: nothing is
half-written. If the request may have reached Slurm but no usable answer came back
(a timeout, a dropped connection, a gateway's 5xx), the job may be queued: releasing
then would let the person overrun their limits and leave a job the console only
adopts as an outside one. So the claim stays, marked unconfirmed, with its
reservation, and the sync loop settles it: the job carrying the tag becomes the
claim's record, and a claim whose job Slurm does not list once the confirmation
window has passed is released and removed (jobs.claims). With an Idempotency-Key the
claim row is unique per person, cluster and key, so a retry (even a concurrent one)
returns the first job instead of queueing another.
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
from accounts.models import User
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

log = logging.getLogger("clusterra.jobs")

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


def posix_name(person: User, cluster: Cluster) -> str:
    """The person's POSIX user on the cluster, provisioned just in time; SubmitError when it cannot be."""
    try:
        return provisioning.ready_account(person, cluster).username
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
    posix_user = posix_name(person, cluster)
    plan = prepare(cluster, parsed, posix_user)

    if dry_run:
        decision = ledger.reserve(person, cluster, plan.resources, dry_run=True)
        if not decision.allowed:
            _audit_denied(person, cluster, parsed, decision, request, plan=plan, dry_run=True)
            raise SubmitError(decision.message, code=decision.code, status=403, decision=decision, plan=plan)
        return Outcome(decision, plan, None, dry_run=True)

    tag = new_submit_tag()
    claim = _claim(person, cluster, plan, key, digest, tag)
    if claim is None:
        # A concurrent request with the same key got there first.
        replay = _replay(person, cluster, key, digest)
        if replay is not None:
            return replay
        raise SubmitError(
            "A submit with this Idempotency-Key was just abandoned; try again.", code="conflict", status=409
        )

    try:
        decision = ledger.reserve(person, cluster, plan.resources)
    except Exception:
        claim.delete()
        raise
    if not decision.allowed:
        claim.delete()
        _audit_denied(person, cluster, parsed, decision, request, plan=plan)
        raise SubmitError(decision.message, code=decision.code, status=403, decision=decision, plan=plan)
    reservation_id = decision.reservation_id
    if reservation_id is not None:
        # On the claim from now on, so a claim whose worker dies mid-submit still gives its budget back.
        claim.reservation_id, claim.ledger = reservation_id, JobRecord.Ledger.RESERVED
        claim.save(update_fields=["reservation_id", "ledger"])

    sent_at = time.time()
    try:
        client = slurm_for(person, cluster, request=request)
        result = client.submit(dataclasses.replace(plan.spec, tag=tag))
    except SlurmAccessRefused as e:
        _abandon(claim, reservation_id, person, cluster, plan, request, "token_refused", e.message)
        raise SubmitError(e.message, code=e.reason, status=403, decision=decision) from None
    except ProvisioningError as e:
        _abandon(claim, reservation_id, person, cluster, plan, request, f"account_{e.code}", e.message)
        raise SubmitError(e.message, code=f"account_{e.code}", status=502, decision=decision) from None
    except SlurmError as e:
        # For a missing answer Slurm's own summary says nothing the sentence does not; the detail does.
        why = e.message if isinstance(e, SlurmUnavailable) else str(e)
        if e.outcome_unknown:
            message = (
                f"{cluster.name} did not confirm the submit ({why}), so the console cannot tell yet "
                "whether Slurm queued the job. Your budget stays reserved for it until the console "
                f"finds out, within {_window_words()}: if it was queued it appears in your job list, "
                "if not the reservation is released. Check your job list before submitting it again."
            )
            _unconfirmed(claim, reservation_id, person, cluster, plan, request, message)
            raise SubmitError(message, code="submit_unconfirmed", status=502, decision=decision) from None
        refusal = _plugin_refusal(cluster, person, sent_at) if isinstance(e, SlurmRejected) else None
        if refusal is not None:
            # The head node's policy saw what the console's did not yet (a job queued from a shell a
            # moment ago): its sentence, as sbatch would have printed it.
            message = f"{refusal['message']} Nothing was queued and no budget was used."
            code = str(refusal.get("code") or "slurm_rejected")
            _abandon(claim, reservation_id, person, cluster, plan, request, code, message)
            raise SubmitError(message, code=code, status=403, decision=decision) from None
        if isinstance(e, (SlurmRejected, SlurmPermissionDenied, SlurmNotFound)):
            message = f"Slurm refused the job: {e.message}. Nothing was queued and no budget was used."
            _abandon(claim, reservation_id, person, cluster, plan, request, "slurm_rejected", message)
            status = 403 if isinstance(e, SlurmPermissionDenied) else 400
            raise SubmitError(message, code="slurm_rejected", status=status, decision=decision) from None
        message = (
            f"{cluster.name} did not answer the submit ({why}). Nothing was queued and your budget "
            "reservation was released; try again in a few minutes."
        )
        _abandon(claim, reservation_id, person, cluster, plan, request, "cluster_unavailable", message)
        raise SubmitError(message, code="cluster_unavailable", status=502, decision=decision) from None
    except (tokens.TokenRefused, tokens.KeyUnavailable) as e:
        message = f"The console cannot act on {cluster.name} right now ({e}). Nothing was queued."
        _abandon(claim, reservation_id, person, cluster, plan, request, "cluster_unavailable", message)
        raise SubmitError(message, code="cluster_unavailable", status=502, decision=decision) from None
    except BaseException:
        # The request may have gone out before whatever this is: only the sync loop can tell.
        _unconfirmed(claim, reservation_id, person, cluster, plan, request, "unexpected error")
        raise

    _complete(claim, plan, result.job_id, reservation_id)
    if reservation_id is not None:
        try:
            ledger.attach(reservation_id, result.job_id)
        except Exception:
            # The job is queued and must stay recorded; the reservation stays open and sync settles it.
            log.exception("ledger.attach(%s, %s) failed", reservation_id, result.job_id)
    audit(
        "job.submit",
        actor=person,
        cluster=cluster,
        target=f"job {result.job_id}",
        message=f"Job {result.job_id} ({plan.spec.name}) queued on {plan.spec.partition} as {posix_user}.",
        request=request,
        details={
            "job_id": result.job_id,
            "script_path": plan.script.path,
            "partition": plan.spec.partition,
            "time_limit": plan.spec.time_limit,
            "nodes": plan.spec.nodes,
            "cpus": plan.cpus,
            "gpus": plan.gpus,
            "array": plan.spec.array,
            "reservation_id": reservation_id,
            "decision": decision.code,
            # What each budget the job draws on had left when it was reserved.
            "quotas": decision.facts.get("quotas", []),
            "warnings": list(result.warnings),
        },
    )
    return Outcome(decision, plan, claim, warnings=result.warnings)


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


def _claim(person: User, cluster: Cluster, plan: Plan, key: str, digest: str, tag: str) -> JobRecord | None:
    spec = plan.spec
    try:
        with transaction.atomic():
            return JobRecord.objects.create(
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
    except IntegrityError:
        return None


def _complete(claim: JobRecord, plan: Plan, job_id: int, reservation_id: int | None) -> None:
    claim.slurm_job_id = job_id
    claim.state = "PENDING"
    claim.submit_time = timezone.now()
    claim.reservation_id = reservation_id
    claim.ledger = JobRecord.Ledger.RESERVED if reservation_id is not None else JobRecord.Ledger.NONE
    claim.stdout_path, claim.stderr_path = output.paths_for(
        claim, plan.spec.standard_output or "", plan.spec.standard_error or ""
    )
    claim.save()


def _abandon(
    claim: JobRecord,
    reservation_id: int | None,
    person: User,
    cluster: Cluster,
    plan: Plan,
    request: Any,
    code: str,
    message: str,
) -> None:
    """Undo a submit that did not queue: release the budget, drop the claim, say so in the audit log."""
    if reservation_id is not None:
        try:
            ledger.release(reservation_id, f"submit failed: {code}")
        except Exception:
            log.exception("ledger.release(%s) failed after a failed submit", reservation_id)
    claim.delete()
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


def _unconfirmed(
    claim: JobRecord,
    reservation_id: int | None,
    person: User,
    cluster: Cluster,
    plan: Plan,
    request: Any,
    message: str,
) -> None:
    """Keep the claim and its reservation for the sync loop: the job may be queued under its tag."""
    claim.unconfirmed_since = timezone.now()
    claim.save(update_fields=["unconfirmed_since", "updated"])
    audit(
        "job.submit",
        actor=person,
        cluster=cluster,
        target=plan.script.label,
        outcome="error",
        reason="submit_unconfirmed",
        message=message,
        request=request,
        details={
            "script_path": plan.script.path,
            "reservation_id": reservation_id,
            "submit_tag": claim.submit_tag,
            **plan.cost_dict(),
        },
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
