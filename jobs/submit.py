"""Submitting a job by script path: validate, read as the person, merge directives, decide, queue, record.

The flow (DESIGN.md, "How a job submission flows"), the same for the form, the API and the CLI:

1. the request is checked (types, script path under the cluster's roots);
2. `access.policy.may_submit` must let the person submit there at all (a grant with a
   partition; staff who may only look are refused here), before a Linux account is set
   up for them or a file is read;
3. the script is read as the person on the head node, its `#SBATCH` lines parsed and
   merged with the request (the request wins), and the final job resolved: partition,
   time limit, nodes, CPUs, GPUs, working directory (default: the script's folder);
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
import posixpath
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import IntegrityError, transaction
from django.utils import timezone

from access import ledger, policy, refusals, snapshot
from accounts import provisioning
from accounts.models import User
from accounts.provisioning import ProvisioningError
from accounts.slurm_access import SlurmAccessRefused, slurm_for
from audit.log import record as audit
from clusters import partitions, tokens
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import (
    JobSpec,
    Partition,
    SlurmError,
    SlurmNotFound,
    SlurmPermissionDenied,
    SlurmRejected,
    SlurmUnavailable,
)
from jobs import claims, output, scripts
from jobs import directives as sbatch
from jobs.models import JobRecord
from jobs.submit_request import SubmitRequest

log = logging.getLogger("clusterra.jobs")

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


class SubmitError(Refusal):
    """The job was not queued; `decision` and `plan` are what was decided and resolved before it stopped."""

    def __init__(
        self, message: str, *, code: str, status: int = 400, decision: Any = None, plan: Plan | None = None
    ) -> None:
        super().__init__(message, code=code, status=status)
        self.decision = decision
        # The final job when it got that far, so a preview can show what was refused.
        self.plan = plan


@dataclass(frozen=True)
class Plan:
    """The final job: what will be submitted, where each value came from, and what it costs."""

    cluster: Cluster
    posix_user: str
    script: scripts.Script
    directives: sbatch.Directives
    spec: JobSpec
    resources: policy.Resources
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def cpus(self) -> int:
        return self.resources.cpus

    @property
    def gpus(self) -> int:
        return self.resources.gpus

    @property
    def gpu_hours(self) -> float:
        return round(self.resources.gpus * self.resources.time_limit / 60, 2)

    @property
    def cpu_hours(self) -> float:
        return round(self.resources.cpus * self.resources.time_limit / 60, 2)

    def job_dict(self) -> dict[str, Any]:
        """The final job in the same field names the API uses for a job."""
        spec = self.spec
        return {
            "script_path": self.script.path,
            "name": spec.name,
            "partition": spec.partition,
            "time_limit": spec.time_limit,
            "nodes": spec.nodes,
            "ntasks": spec.ntasks,
            "cpus_per_task": spec.cpus_per_task,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "memory_mb": spec.memory_per_node,
            "working_directory": spec.working_directory,
            "standard_output": spec.standard_output,
            "standard_error": spec.standard_error,
            "account": spec.account,
            "qos": spec.qos,
            "user": self.posix_user,
            "sources": dict(self.sources),
        }

    def cost_dict(self) -> dict[str, float]:
        return {"gpu_hours": self.gpu_hours, "cpu_hours": self.cpu_hours}

    def directive_list(self) -> list[dict[str, Any]]:
        return [{"line": d.line, "option": d.option, "value": d.value} for d in self.directives.lines]


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


def _partition(cluster: Cluster, name: str | None) -> Partition:
    try:
        if name is None:
            found = partitions.default(cluster)
            if found is None:
                raise SubmitError(f"{cluster.name} has no partition.", code="invalid_partition")
            return found
        found = partitions.find(cluster, name)
    except SlurmError as e:
        raise SubmitError(_unavailable_words(cluster, e), code="cluster_unavailable", status=502) from None
    except (tokens.TokenRefused, tokens.KeyUnavailable) as e:
        raise SubmitError(str(e), code="cluster_unavailable", status=502) from None
    if found is None:
        names = ", ".join(p.name for p in partitions.partitions(cluster))
        raise SubmitError(
            f"{cluster.name} has no partition named {name!r} (its partitions: {names}).",
            code="invalid_partition",
        )
    return found


def _unavailable_words(cluster: Cluster, error: Exception) -> str:
    return f"{cluster.name} did not answer: {error} Nothing was queued."


def prepare(cluster: Cluster, request: SubmitRequest, posix_user: str) -> Plan:
    """Read the script as the person, parse it, and merge it with the request into the final job."""
    path = scripts.validate(cluster, request.script_path)
    script = scripts.read_as(cluster, posix_user, path)
    try:
        found = sbatch.parse(script.text)
    except sbatch.DirectiveError as e:
        raise SubmitError(f"{path}, {e.message}.", code="invalid_directive") from None
    if found.array:
        line = found.line_of("array")
        raise SubmitError(
            f"{path}, line {line}: job arrays (--array={found.array}) are not submitted through the console, "
            "because the budget check cannot count their tasks; submit it with sbatch from a terminal "
            "(its use is counted when it ends).",
            code="array_unsupported",
        )
    sources: dict[str, str] = {}

    def pick(attribute: str, requested: Any, scripted: Any) -> Any:
        if requested is not None:
            sources[attribute] = "request"
            return requested
        if scripted is not None:
            sources[attribute] = f"script line {found.line_of(attribute)}"
            return scripted
        return None

    partition = _partition(cluster, pick("partition", request.partition, found.partition))
    sources.setdefault("partition", "cluster default")
    time_limit = pick("time_limit", request.time_limit, found.time_limit)
    if time_limit is None:
        time_limit = partition.default_time_limit or _capped_default(partition)
        sources["time_limit"] = "partition default" if partition.default_time_limit else "console default"
    if partition.max_time_limit is not None and time_limit > partition.max_time_limit:
        raise SubmitError(
            f"Partition {partition.name} allows at most {partition.max_time_limit} minutes; "
            f"this job asks for {time_limit}.",
            code="time_limit_too_long",
        )
    nodes = pick("nodes", request.nodes, found.nodes) or 1
    sources.setdefault("nodes", "default")
    ntasks = found.ntasks
    if ntasks is not None:
        sources["ntasks"] = f"script line {found.line_of('ntasks')}"
    cpus_per_task = pick("cpus_per_task", request.cpus_per_task, found.cpus_per_task) or 1
    sources.setdefault("cpus_per_task", "default")
    gpus = request.gpus
    if gpus is not None:
        sources["gpus"] = "request"
    elif found.gpus is not None:
        gpus, sources["gpus"] = found.gpus, f"script line {found.line_of('gpus')}"
    elif found.gpus_per_node is not None:
        gpus, sources["gpus"] = found.gpus_per_node * nodes, f"script line {found.line_of('gpus_per_node')}"
    gpus = gpus or 0
    name = pick("name", request.name, found.name) or posixpath.basename(path)
    sources.setdefault("name", "script file name")
    workdir = _working_directory(cluster, posix_user, script, request, found, sources)
    # Slurm starts one task per node when no task count is given, each with cpus_per_task CPUs.
    cpus = max(ntasks or nodes, nodes) * cpus_per_task
    try:
        spec = JobSpec(
            script=script.text,
            working_directory=workdir,
            name=name,
            partition=partition.name,
            time_limit=time_limit,
            nodes=nodes,
            ntasks=ntasks,
            cpus_per_task=cpus_per_task,
            gpus=gpus or None,
            memory_per_node=found.memory_mb,
            standard_output=found.output,
            standard_error=found.error,
            account=found.account,
            qos=found.qos,
            # The person's login environment, as sbatch from their shell would have it.
            get_user_environment=True,
            # Priced for one run: a job Slurm started over after a node failure would be charged twice.
            requeue=False,
        )
    except ValueError as e:
        raise SubmitError(str(e), code="invalid_request") from None
    resources = policy.Resources(
        partition=partition.name,
        nodes=nodes,
        cpus=cpus,
        gpus=gpus,
        time_limit=time_limit,
        # --mem is per node; the policy (and the job_submit plugin) price the whole job.
        memory_mb=(found.memory_mb or 0) * nodes,
        account=found.account or "",
        qos=found.qos or "",
    )
    return Plan(cluster, posix_user, script, found, spec, resources, sources)


def _capped_default(partition: Partition) -> int:
    """The console's default walltime, but never more than the partition allows."""
    limit = settings.CLUSTERRA_DEFAULT_TIME_LIMIT
    return min(limit, partition.max_time_limit) if partition.max_time_limit else limit


def _working_directory(
    cluster: Cluster,
    posix_user: str,
    script: scripts.Script,
    request: SubmitRequest,
    found: sbatch.Directives,
    sources: dict[str, str],
) -> str:
    if request.working_directory:
        workdir, sources["working_directory"] = request.working_directory, "request"
    elif found.chdir:
        # sbatch reads a relative --chdir against where it runs; for the console that is the script's folder.
        workdir = posixpath.normpath(posixpath.join(script.folder, found.chdir))
        sources["working_directory"] = f"script line {found.line_of('chdir')}"
    else:
        return _default_workdir(script, sources)
    scripts.check_path(workdir, what="working_directory")
    if workdir != script.folder:
        scripts.check_directory(cluster, posix_user, workdir)
    return workdir


def _default_workdir(script: scripts.Script, sources: dict[str, str]) -> str:
    sources["working_directory"] = "script folder"
    return script.folder


# --- the whole flow ----------------------------------------------------------------------------


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
        result = client.submit(dataclasses.replace(plan.spec, comment=tag))
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
        target=plan.script.path,
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
        target=plan.script.path,
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
        target=parsed.script_path,
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
