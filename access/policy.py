"""The one place that decides what a person may do on a cluster, and says why in one sentence.

Pages, API routes, the terminal consumer and (through the API) the CLI ask here and
show the decision's sentence as it is. A decision writes nothing: looking at a page asks
the policy many times and is not worth an audit event. What happens because of a decision
is written by whoever acts on it, once: a submit or a cancel as its own event, an opened
terminal as `terminal.opened`, and a request refused at any door through access.refusals.

Checks run in a stable order and the first failure wins:

1. the person is signed in and active (`inactive`); the cluster is enabled
   (`cluster_disabled`; staff may still view a disabled cluster and its jobs);
2. for one job (`job.view`, `job.cancel` with `job_owner`): it is theirs (`not_your_job`);
3. a grant on the cluster (`no_grant`), then what the action needs from it:
   the terminal (`terminal_not_granted`) or the job's partition (`partition_not_granted`),
   then its Slurm account and QOS (`account_not_granted`);
4. for a submission, every applicable quota (the person's own first, then their
   groups' by name; see access.quota), limit by limit: nodes, CPUs, GPUs and memory per
   job, a time limit where one is needed (`walltime_required`), walltime, running jobs,
   queued jobs, GPU-hour budget, CPU-hour budget.

The grants are read through access.compiled, the form the head node's job_submit plugin
(access/slurm/job_submit.lua) gets too: the plugin applies these checks, in this order and
with these sentences, to every job Slurm is asked to queue, whoever asks.

Staff may view every cluster and every job, but cancel only their own jobs, like
anyone else: the console cancels with a Slurm token minted for the person acting, so
cancelling someone else's job would mean acting as them. Offboarding is the one
audited path that does that (accounts.offboarding); an operator cancels any other
job with scancel on the cluster.

A person's own jobs stay visible and cancellable after their grant is withdrawn:
looking after jobs already queued needs no grant, starting new ones does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.utils import timezone

from access.arrays import array_tasks, without_throttle
from access.compiled import Access
from access.held import held
from access.quota import QuotaStatus, locked_quotas, statuses_of
from clusters.models import Cluster

__all__ = [
    "ACTIONS",
    "ALL_PARTITIONS",
    "Decision",
    "QuotaStatus",
    "Resources",
    "array_tasks",
    "decide",
    "grant_problem",
    "granted_partitions",
    "may_submit",
    "quota_status",
]

ACTIONS = ("cluster.view", "job.view", "job.submit", "job.cancel", "terminal.open")
# What granted_partitions returns for a grant of every partition when the caller passes no list.
ALL_PARTITIONS = "*"
# Budgets are floats; a job that exactly fits must not be refused over a rounding error.
EPSILON = 1e-9


@dataclass(frozen=True)
class Resources:
    """What one job asks for, final (after the #SBATCH directives are merged with the form)."""

    partition: str
    nodes: int = 1
    cpus: int = 1  # total CPUs of the job (nodes x ntasks x cpus-per-task)
    gpus: int = 0  # total GPUs of the job
    time_limit: int = 0  # minutes of walltime; 0 = none given
    memory_mb: int = 0  # the job's whole memory; 0 = not given (Slurm's default applies)
    account: str = ""  # "" = the person's default account
    qos: str = ""  # "" = the default QOS
    # A job array: nodes, CPUs, GPUs, memory and walltime above are each task's; the hours are all tasks'.
    tasks: int = 1  # how many array tasks (1 for a plain job); "0-99%10" -> 100, "1,3,5-9:2" -> 5
    at_once: int = 1  # how many may run at once: min(tasks, the %throttle), tasks when no throttle
    # The --array expression as written, when known: given alone, tasks and at_once are read from it
    # (access.arrays), and a refusal can show the expression with the throttle it needs.
    array: str = ""

    def __post_init__(self) -> None:
        if self.array:
            tasks, at_once = array_tasks(self.array)
            if (self.tasks, self.at_once) not in ((1, 1), (tasks, at_once)):
                raise ValueError(
                    f"--array={self.array} has {tasks} tasks, {at_once} at once, "
                    f"not tasks={self.tasks} at_once={self.at_once}"
                )
            object.__setattr__(self, "tasks", tasks)
            object.__setattr__(self, "at_once", at_once)
        # A negative count would turn into negative hours and hand budget back.
        for name, least in (
            ("nodes", 1),
            ("cpus", 1),
            ("gpus", 0),
            ("time_limit", 0),
            ("memory_mb", 0),
            ("tasks", 1),
            ("at_once", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be a whole number of at least {least}, not {value!r}")
        if self.at_once > self.tasks:
            raise ValueError(f"at_once ({self.at_once}) cannot be more than tasks ({self.tasks})")

    @property
    def is_array(self) -> bool:
        return self.tasks > 1 or bool(self.array)

    @property
    def gpu_hours(self) -> float:
        """The whole job's: every task's walltime x GPUs, so the ledger reserves the whole array."""
        return self.tasks * self.time_limit / 60 * self.gpus

    @property
    def cpu_hours(self) -> float:
        return self.tasks * self.time_limit / 60 * self.cpus

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"gpu_hours": round(self.gpu_hours, 4), "cpu_hours": round(self.cpu_hours, 4)}


@dataclass(frozen=True)
class Decision:
    """Allowed or not, a stable code, one sentence with the numbers, and the numbers themselves."""

    allowed: bool
    code: str
    message: str
    facts: dict = field(default_factory=dict)
    reservation_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    person: Any,
    action: str,
    cluster: Cluster,
    request: Resources | None = None,
    *,
    job_owner: str | None = None,
    lock: bool = False,
) -> Decision:
    """Whether `person` may do `action` on `cluster`. Writes nothing.

    `request` is the job for job.submit. `job_owner` is the POSIX user name owning the
    job for job.view and job.cancel; job.view without it asks for the cluster's job
    list (the person's own jobs, or everyone's for staff). `lock` keeps the quota rows a
    submission is checked against locked until the caller's transaction ends, so what it
    reserves there (access.ledger.reserve) cannot race another submit.
    """
    return _decide(person, action, cluster, request, job_owner, lock=lock)


def may_submit(person: Any, cluster: Cluster) -> Decision:
    """Whether `person` may submit any job at all on `cluster`, before the job is known.

    The checks of job.submit that need no job: signed in and active, the cluster enabled,
    a grant there that names a partition. A submission asks this before a Linux account
    is made for the person or their script is read (staff pass "cluster.view" without a
    grant); the job's own checks (its partition, every quota) come with access.ledger.reserve.
    """
    return _decide(person, "job.submit", cluster, None, None, before_job=True)


def grant_problem(person: Any, cluster: Cluster, partition: str, account: str = "", qos: str = "") -> str:
    """Why a job already in Slurm may no longer be there under the person's grants; "" if it may.

    For the sync loop, which cancels what the policy stopped allowing (a grant withdrawn while the
    job waited, or a job that got past the plugin some other way). Not audited: the cancel is.
    Quotas are not re-checked: a job queued within its limits keeps its place when they shrink.
    """
    if not _is_active(person):
        return f"{person.get_username()} is deactivated."
    # The same rules decisions read (access.held): a grant withdrawn in another process counts within
    # its freshness bound, i.e. at the next round of the sync loop at the latest.
    rules = held.person(person, cluster)
    if not rules.grants:
        return f"You have no access to {cluster.name}; ask an administrator for a grant."
    granted = rules.access(cluster)
    for name in [p for p in partition.split(",") if p] or [""]:
        request = Resources(partition=name, account=account, qos=qos)
        problem = _partition_problem(granted, request, cluster) or _account_problem(granted, request, cluster)
        if problem:
            return problem
    return ""


def granted_partitions(person: Any, cluster: Cluster, known: list[str] | None = None) -> list[str]:
    """The partitions the person may submit to on the cluster, sorted.

    A grant of every partition is returned as [ALL_PARTITIONS] ("*"), unless the caller
    passes the cluster's partitions as `known`: then it is those, and named grants are
    narrowed to the ones that exist.
    """
    if not _is_active(person):
        return []
    granted = held.person(person, cluster).access(cluster)
    if granted.all_partitions:
        return sorted(known) if known is not None else [ALL_PARTITIONS]
    names = list(granted.partitions)
    return names if known is None else [n for n in names if n in set(known)]


def quota_status(person: Any, cluster: Cluster) -> list[QuotaStatus]:
    """Every quota that applies to the person on the cluster, in the order decisions check them.

    From what decisions read (access.held: the rules and the use held per process, as fresh as a
    decision's), so a page says exactly what the next submit would be checked against.
    """
    if not getattr(person, "is_authenticated", False):
        return []
    return held.statuses(cluster, held.person(person, cluster).quotas, timezone.now())


# --- the checks ---------------------------------------------------------------------------------


def _decide(
    person: Any,
    action: str,
    cluster: Cluster,
    request: Resources | None,
    job_owner: str | None,
    *,
    lock: bool = False,
    before_job: bool = False,
) -> Decision:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if action == "job.submit" and request is None and not before_job:
        raise ValueError("job.submit needs the job's Resources")
    if action == "job.cancel" and job_owner is None:
        raise ValueError("job.cancel needs the job's owner (job_owner)")

    facts: dict[str, Any] = {"action": action, "cluster": cluster.slug}
    if request is not None:
        facts["request"] = request.as_json()
    if job_owner is not None:
        facts["job_owner"] = job_owner

    if not getattr(person, "is_authenticated", False):
        return _deny("inactive", f"You are not signed in; sign in to use {cluster.name}.", facts)
    if not person.is_active:
        return _deny(
            "inactive",
            f"Your account {person.get_username()} is deactivated, so you cannot use {cluster.name}; "
            "ask an administrator if this is a mistake.",
            facts,
        )
    staff_view = person.is_staff and action in ("cluster.view", "job.view")
    if not cluster.enabled and not staff_view:
        return _deny(
            "cluster_disabled",
            f"{cluster.name} is turned off in the console; ask an administrator when it will be back.",
            facts,
        )

    if job_owner is not None:
        return _one_job(person, action, cluster, job_owner, facts)

    if action == "job.view" and person.is_staff:
        return _allow(f"Staff may view every job on {cluster.name}.", facts | {"as_staff": True})
    # From the rules held in memory (access.held); a reservation compares their version first.
    rules = held.person(person, cluster, exact=lock)
    granted = rules.access(cluster)
    if action in ("cluster.view", "job.view"):
        if granted.granted:
            words = "use" if action == "cluster.view" else "view your jobs on"
            return _allow(f"You may {words} {cluster.name}.", facts)
        if person.is_staff:
            return _allow(f"Staff may view {cluster.name}.", facts | {"as_staff": True})
    if not granted.granted:
        return _deny(
            "no_grant", f"You have no access to {cluster.name}; ask an administrator for a grant.", facts
        )

    if action == "terminal.open":
        if not granted.terminal:
            return _deny(
                "terminal_not_granted",
                f"Your access to {cluster.name} does not include the browser terminal; "
                "ask an administrator to allow it.",
                facts,
            )
        return _allow(f"You may open a terminal on {cluster.name}.", facts)

    if request is None:  # may_submit: what can be decided before the job is known
        if not granted.all_partitions and not granted.partitions:
            return _deny(
                "partition_not_granted",
                f"Your access to {cluster.name} includes no partition to submit jobs to; "
                "ask an administrator to grant one.",
                facts | {"granted_partitions": []},
            )
        return _allow(f"You may submit jobs on {cluster.name}.", facts | {"before_job": True})
    problem = _partition_problem(granted, request, cluster)
    if problem:
        return _deny(
            "partition_not_granted", problem, facts | {"granted_partitions": list(granted.partitions)}
        )
    problem = _account_problem(granted, request, cluster)
    if problem:
        return _deny(
            "account_not_granted",
            problem,
            facts | {"granted_accounts": list(granted.accounts), "granted_qos": list(granted.qos)},
        )
    now = timezone.now()
    if lock:
        # Exact under concurrency: the quota rows locked and read, and their use, from the database.
        statuses = statuses_of(locked_quotas([q.pk for q in rules.quotas]), now)
    else:
        statuses = held.statuses(cluster, rules.quotas, now)
    return _check_quotas(statuses, request, cluster, facts)


def _one_job(person: Any, action: str, cluster: Cluster, job_owner: str, facts: dict) -> Decision:
    if job_owner == _posix_name(person):
        verb = "view" if action == "job.view" else "cancel"
        return _allow(f"You may {verb} this job.", facts)
    if action == "job.view":
        if person.is_staff:
            return _allow(f"Staff may view every job on {cluster.name}.", facts | {"as_staff": True})
        return _deny("not_your_job", "This job is not yours; you can view only your own jobs.", facts)
    if person.is_staff:
        return _deny(
            "not_your_job",
            "This job is not yours; the console cancels only your own jobs, even for staff "
            "(an operator uses scancel on the cluster).",
            facts,
        )
    return _deny("not_your_job", "This job is not yours; you can cancel only your own jobs.", facts)


def _partition_problem(granted: Access, request: Resources, cluster: Cluster) -> str:
    if granted.all_partitions:
        return ""
    names = granted.partitions
    if request.partition in names:
        return ""
    allowed = f"your access allows {', '.join(names)}" if names else "your access allows no partition there"
    if not request.partition:
        # The cluster's default partition is not known here, so it cannot be checked.
        return f"This job names no partition; {allowed}, so name one of them."
    return f"You may not submit to partition {request.partition} on {cluster.name}; {allowed}."


def _account_problem(granted: Access, request: Resources, cluster: Cluster) -> str:
    if request.account and request.account not in granted.accounts:
        return (
            f"You may not charge Slurm account {request.account} on {cluster.name}; "
            f"your access allows {', '.join(granted.accounts)}."
        )
    if request.qos and request.qos not in granted.qos:
        allowed = (
            f"your access allows {', '.join(granted.qos)}"
            if granted.qos
            else "your access allows only the default QOS"
        )
        return f"You may not use QOS {request.qos} on {cluster.name}; {allowed}."
    return ""


# (code, quota field, request field, unit) for the limits of one job, in checking order.
PER_JOB = (
    ("max_nodes", "max_nodes_per_job", "nodes", "node"),
    ("max_cpus", "max_cpus_per_job", "cpus", "CPU"),
    ("max_gpus", "max_gpus_per_job", "gpus", "GPU"),
)


def _check_quotas(statuses: list[QuotaStatus], request: Resources, cluster: Cluster, facts: dict) -> Decision:
    where = f"on {cluster.name}"
    for code, limit_field, asked_field, unit in PER_JOB:
        for s in statuses:
            limit, asked = getattr(s, limit_field), getattr(request, asked_field)
            if limit is not None and asked > limit:
                return _deny(
                    code,
                    f"{_each(request)} asks for {_count(asked, unit)}; {_whose(s)} allows at most "
                    f"{_count(limit, unit)} per job {where}.",
                    facts | _quota_facts(s, limit=limit, asked=asked),
                )
    for s in statuses:
        limit = s.max_memory_per_job
        if limit is not None and request.memory_mb > limit:
            return _deny(
                "max_memory",
                f"{_each(request)} asks for {request.memory_mb} MB of memory; {_whose(s)} allows at most "
                f"{limit} MB per job {where}.",
                facts | _quota_facts(s, limit=limit, asked=request.memory_mb),
            )

    if request.time_limit == 0:
        for s in statuses:
            need = _needs_time_limit(s, request)
            if need:
                return _deny(
                    "walltime_required",
                    f"{_this(request)} sets no time limit, and {_whose(s)} {where} needs one to {need}; "
                    "give the job a time limit.",
                    facts | _quota_facts(s),
                )
    for s in statuses:
        if s.max_walltime is not None and request.time_limit > s.max_walltime:
            return _deny(
                "max_walltime",
                f"{_each(request)} asks for {_minutes(request.time_limit)} of walltime; "
                f"{_whose(s)} allows at most {_minutes(s.max_walltime)} per job {where}.",
                facts | _quota_facts(s, limit=s.max_walltime, asked=request.time_limit),
            )

    for s in statuses:
        if s.max_running_jobs is not None and s.running_jobs >= s.max_running_jobs:
            return _deny(
                "max_running_jobs",
                f"{_holder(s)} already {_has(s)} {s.running_jobs} of {s.max_running_jobs} allowed jobs "
                f"running {where}; wait for one to finish.",
                facts | _quota_facts(s, limit=s.max_running_jobs, running_jobs=s.running_jobs),
            )
    # An array runs up to at_once tasks together, each a running job: a throttle above the limit
    # itself could never be honoured, whatever else is running.
    for s in statuses:
        if s.max_running_jobs is not None and request.at_once > s.max_running_jobs:
            return _deny(
                "max_running_jobs",
                f"This array would run up to {request.at_once} tasks at once; {_whose(s)} allows "
                f"{_count(s.max_running_jobs, 'running job')} {where}; add a throttle such as "
                f"{_throttled(request, s.max_running_jobs)}.",
                facts | _quota_facts(s, limit=s.max_running_jobs, at_once=request.at_once),
            )
    for s in statuses:
        if s.max_queued_jobs is not None and s.queued_jobs + request.tasks > s.max_queued_jobs:
            if request.is_array:
                message = (
                    f"{_holder(s)} already {_has(s)} {s.queued_jobs} of {s.max_queued_jobs} allowed jobs "
                    f"queued {where}, and this array adds {request.tasks}; submit fewer tasks or wait "
                    "for some to start."
                )
            else:
                message = (
                    f"{_holder(s)} already {_has(s)} {s.queued_jobs} of {s.max_queued_jobs} allowed jobs "
                    f"queued {where}; wait for one to start."
                )
            return _deny(
                "max_queued_jobs",
                message,
                facts
                | _quota_facts(s, limit=s.max_queued_jobs, queued_jobs=s.queued_jobs, tasks=request.tasks),
            )

    for code, kind, asked in (
        ("gpu_budget", "gpu", request.gpu_hours),
        ("cpu_budget", "cpu", request.cpu_hours),
    ):
        for s in statuses:
            limit, left = getattr(s, f"{kind}_hours_limit"), getattr(s, f"{kind}_hours_left")
            if limit is not None and asked > left + EPSILON:
                return _deny(
                    code,
                    f"{_subject(request)} asks for {_hours_up(asked)} {kind.upper()}-hours; "
                    f"{s.scope} {_has(s)} {_hours_down(left)} of {_hours(limit)} left {s.period_words}, "
                    f"renewing on {s.renews_words}.",
                    facts | _budget_facts(s, kind, asked),
                )

    return _allow(
        _allowed_sentence(statuses, request, cluster),
        facts | {"quotas": [_quota_summary(s) for s in statuses]},
    )


def _needs_time_limit(s: QuotaStatus, request: Resources) -> str:
    if s.max_walltime is not None:
        return "check its walltime limit"
    if s.gpu_hours_limit is not None and request.gpus:
        return "reserve GPU-hours"
    if s.cpu_hours_limit is not None:
        return "reserve CPU-hours"
    return ""


def _allowed_sentence(statuses: list[QuotaStatus], request: Resources, cluster: Cluster) -> str:
    where = f"partition {request.partition} of {cluster.name}" if request.partition else cluster.name
    sentence = f"{_subject(request)} may run on {where}"
    # Name the tightest budget the job draws on: GPU-hours if it asks for GPUs, else CPU-hours.
    for kind, asked in (("gpu", request.gpu_hours), ("cpu", request.cpu_hours)):
        budgets = [s for s in statuses if getattr(s, f"{kind}_hours_limit") is not None]
        if asked > 0 and budgets:
            s = min(budgets, key=lambda b: getattr(b, f"{kind}_hours_left"))
            return (
                f"{sentence}; it asks for {_hours_up(asked)} {kind.upper()}-hours and {s.scope} {_has(s)} "
                f"{_hours_down(getattr(s, f'{kind}_hours_left'))} of "
                f"{_hours(getattr(s, f'{kind}_hours_limit'))} left {s.period_words}."
            )
    return f"{sentence}."


# --- helpers ------------------------------------------------------------------------------------


def _allow(message: str, facts: dict) -> Decision:
    return Decision(allowed=True, code="ok", message=message, facts=facts)


def _deny(code: str, message: str, facts: dict) -> Decision:
    return Decision(allowed=False, code=code, message=message, facts=facts)


def _is_active(person: Any) -> bool:
    return bool(getattr(person, "is_authenticated", False) and person.is_active)


def _posix_name(person: Any) -> str | None:
    try:
        return person.posix_account.username
    except ObjectDoesNotExist:
        return None


def _subject(request: Resources) -> str:
    """Who asks for the hours: the job, or the array with its task count."""
    return f"This array of {_count(request.tasks, 'task')}" if request.is_array else "This job"


def _this(request: Resources) -> str:
    return "This array" if request.is_array else "This job"


def _each(request: Resources) -> str:
    """Who asks for a per-job limit's resources: each task of an array is a job of its own in Slurm."""
    return "Each task of this array" if request.is_array else "This job"


def _throttled(request: Resources, limit: int) -> str:
    if request.array:
        return f"--array={without_throttle(request.array)}%{limit}"
    return f"%{limit} at the end of its --array"


def _whose(s: QuotaStatus) -> str:
    return "your quota" if s.scope == "you" else f"{s.scope}'s quota"


def _holder(s: QuotaStatus) -> str:
    return s.scope[0].upper() + s.scope[1:]


def _has(s: QuotaStatus) -> str:
    return "have" if s.scope == "you" else "has"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _minutes(n: int) -> str:
    if n and n % 60 == 0:
        return _count(n // 60, "hour")
    return _count(n, "minute")


def _hours(x: float) -> str:
    return f"{x:.1f}"


def _hours_up(x: float) -> str:
    # What a job asks for is rounded up and what is left rounded down, so the printed
    # numbers never contradict the decision ("asks for 3.5; 3.5 left" yet refused).
    return f"{math.ceil(x * 10 - 1e-6) / 10:.1f}"


def _hours_down(x: float | None) -> str:
    return f"{math.floor((x or 0.0) * 10 + 1e-6) / 10:.1f}"


def _quota_facts(s: QuotaStatus, **numbers: Any) -> dict[str, Any]:
    return {"scope": s.scope, "quota_id": s.quota_id, **numbers}


def _budget_facts(s: QuotaStatus, kind: str, asked: float) -> dict[str, Any]:
    return _quota_facts(
        s,
        limit=getattr(s, f"{kind}_hours_limit"),
        asked=round(asked, 4),
        used=round(getattr(s, f"{kind}_hours_used"), 4),
        reserved=round(getattr(s, f"{kind}_hours_reserved"), 4),
        left=round(getattr(s, f"{kind}_hours_left"), 4),
        period=s.period,
        period_start=s.period_start.isoformat(),
        renews=s.renews.isoformat(),
    )


def _quota_summary(s: QuotaStatus) -> dict[str, Any]:
    return {
        "scope": s.scope,
        "quota_id": s.quota_id,
        "gpu_hours_left": s.gpu_hours_left,
        "cpu_hours_left": s.cpu_hours_left,
        "running_jobs": s.running_jobs,
        "queued_jobs": s.queued_jobs,
        "renews": s.renews.isoformat(),
    }
