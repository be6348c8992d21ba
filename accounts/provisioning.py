"""Just-in-time provisioning: the ordered, resumable steps that make a POSIX account usable on a cluster.

Steps, each through `clusters.headnode.run`, each audited, the row saved after each:
reserve the UID (posix.ensure_account) → group and Linux user with a home under the
cluster's home_root → the Slurm user association (clusters with accounting) → ready.
The home is made 0700 (accounts.repairs closes homes made before, through reconcile_accounts).
Every step first looks at the head node, so a step found already done counts as
done, and a step found done *differently* (same name, other UID) stops with a
sentence saying so. A failed row keeps how far it got; the next call resumes there.

Concurrency: the row lock (SELECT … FOR UPDATE) is held only to claim the row
(`busy_until`), not across the head-node commands. Holding a transaction open for
seconds of SSM round trips would, on SQLite, stall every writer of the console,
and a crash would roll back both the saved progress and the audit of what was
already done on the cluster. A second caller waits for the claim to clear and
then finds the row ready (or failed, and resumes it); a crashed worker's claim
simply expires.
"""

from __future__ import annotations

import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts import posix
from accounts.models import ClusterAccount, PosixAccount, User
from audit.log import record
from clusters import headnode
from clusters.models import Cluster
from clusters.refusal import Refusal
from prepared import Prepared, fields_of, instance

State = ClusterAccount.State
# Longer than all steps can take together (each is bounded by STEP_TIMEOUT).
CLAIM_LIFETIME = timedelta(minutes=10)
STEP_TIMEOUT = 60.0
# How long a caller waits for another worker that is provisioning the same row.
DEFAULT_WAIT = 60.0
_sleep: Callable[[float], None] = time.sleep
# What sacctmgr accepts as an account name without it being split or reinterpreted.
_SLURM_ACCOUNT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CLUSTER_NAME = re.compile(r"^ClusterName\s*=\s*(\S+)\s*$", re.MULTILINE)
# A user of slurmctld's association cache, `scontrol show assoc_mgr flags=users`: UserName=ada(60123) …
_SLURM_USER_UID = re.compile(r"^UserName=(\S+?)\((\d+)\)", re.MULTILINE)


class ProvisioningError(Refusal):
    """The account could not be made ready on that cluster; the message is for the person and the admin.

    `code` is a stable reason (also in the audit log), `step` where it stopped. Mostly the head node
    did not do its part, hence 502; submit and cancel answer it as `account_<code>`.
    """

    def __init__(self, message: str, *, code: str, step: str = "", cluster: Cluster | None = None) -> None:
        super().__init__(message, code=code, status=502)
        self.step = step
        self.cluster_slug = cluster.slug if cluster is not None else ""


class ProvisioningBusy(ProvisioningError):
    """Another request is setting up the same account right now and did not finish in time."""


@dataclass
class _Context:
    row: ClusterAccount
    user: User | None
    actor: Any

    @property
    def cluster(self) -> Cluster:
        return self.row.cluster

    @property
    def account(self) -> PosixAccount:
        return self.row.account

    def audit(
        self, action: str, message: str, *, outcome: str = "allowed", reason: str = "", **details
    ) -> None:
        record(
            f"provisioning.{action}",
            actor=self.actor,
            cluster=self.cluster,
            target=self.account.username,
            outcome=outcome,
            reason=reason,
            message=message,
            details=details,
        )


class _StepFailed(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def ensure_ready(
    user: User, cluster: Cluster, *, actor: Any = None, wait: float = DEFAULT_WAIT
) -> ClusterAccount:
    """The person's ClusterAccount on `cluster`, provisioned first if needed (idempotent, resumable).

    Raises ProvisioningError (ProvisioningBusy after `wait` seconds of another
    worker holding the row) with a sentence a person can read.
    """
    actor = actor if actor is not None else user
    if not user.is_active:
        record(
            "provisioning.refused",
            actor=actor,
            cluster=cluster,
            target=user.get_username(),
            outcome="denied",
            reason="inactive",
            message="No account is set up for a deactivated person.",
        )
        raise ProvisioningError(
            f"{user.get_username()} is deactivated; no account is set up for them on {cluster.name}.",
            code="inactive",
            cluster=cluster,
        )
    if not cluster.enabled:
        raise ProvisioningError(
            f"{cluster.name} is disabled in the console; ask an administrator.",
            code="cluster_disabled",
            cluster=cluster,
        )
    try:
        account = posix.ensure_account(user)
    except posix.UidRangeExhausted as e:
        raise ProvisioningError(str(e), code="uid_range_full", cluster=cluster) from None
    row = _row(account, cluster)
    if row.state == State.READY:
        return row
    return _provision(row, user, actor, wait)


def ready_account(user: User, cluster: Cluster) -> PosixAccount:
    """The POSIX account shells and jobs run as, made ready on `cluster` just in time (blocking).

    Raises ProvisioningError, as ensure_ready does. An account already ready costs one query (the row
    with its account, found together), which is every submit after a person's first.
    """
    if user.is_active and cluster.enabled:
        found = _READY.rows(user.pk, cluster.pk)
        if found:
            return instance(
                PosixAccount, {name: found[0][f"account__{name}"] for name in fields_of(PosixAccount)}
            )
    return ensure_ready(user, cluster).account


# Asked by every submit, dry run and live job page: compiled once.
_READY = Prepared(
    lambda user_id, cluster_id: (
        ClusterAccount.objects.filter(account__user_id=user_id, cluster_id=cluster_id, state=State.READY)
        .order_by("pk")
        .values(*(f"account__{name}" for name in fields_of(PosixAccount)))[:1]
    ),
    int,
    int,
)


def resume(row: ClusterAccount, *, actor: Any = None, wait: float = 0) -> ClusterAccount:
    """Finish one row's provisioning (for reconcile and the admin's retry), whatever state it stopped in."""
    user = row.account.user
    if user is None:
        raise ProvisioningError(
            f"{row.account.username} belongs to no one any more; it is not provisioned.", code="no_person"
        )
    return ensure_ready(user, row.cluster, actor=actor, wait=wait)


def _row(account: PosixAccount, cluster: Cluster) -> ClusterAccount:
    try:
        with transaction.atomic():
            row, _ = ClusterAccount.objects.get_or_create(account=account, cluster=cluster)
    except IntegrityError:
        # Another first request made the row between our look and our insert.
        row = ClusterAccount.objects.get(account=account, cluster=cluster)
    return row


def _provision(row: ClusterAccount, user: User, actor: Any, wait: float) -> ClusterAccount:
    claimed = _claim(row.pk, wait)
    if claimed.state == State.READY:
        return claimed
    if claimed.state == State.LOCKED:
        raise ProvisioningError(
            f"The account {claimed.account.username} on {claimed.cluster.name} is locked (offboarded); "
            "an administrator must unlock it.",
            code="locked",
            cluster=claimed.cluster,
        )
    if claimed.state == State.SUSPENDED:
        _release(claimed)
        raise ProvisioningError(
            f"The account {claimed.account.username} on {claimed.cluster.name} is locked: your access there "
            "ended. It is unlocked when an administrator grants it again.",
            code="suspended",
            cluster=claimed.cluster,
        )
    ctx = _Context(claimed, user, actor)
    ctx.audit(
        "started",
        f"Setting up {claimed.account.username} on {claimed.cluster.slug} (attempt {claimed.attempts}).",
        resumed_from=claimed.state,
    )
    step = "user"
    try:
        if claimed.user_created_at is None:
            _ensure_group(ctx)
            _ensure_user(ctx)
            _join_people_group(ctx)
            _advance(claimed, State.USER_CREATED, user_created_at=timezone.now())
        step = "association"
        if claimed.cluster.has_accounting and claimed.associated_at is None:
            _ensure_association(ctx)
            _advance(claimed, State.ASSOCIATED, associated_at=timezone.now())
        step = "ready"
        claimed.last_error = ""
        _advance(claimed, State.READY)
        ctx.audit("ready", f"{claimed.account.username} is ready on {claimed.cluster.slug}.")
        return claimed
    except _StepFailed as e:
        raise _failed(ctx, step, e.code, e.detail) from None
    except headnode.HeadNodeError as e:
        raise _failed(ctx, step, "head_node_unreachable", f"{e} Nothing was lost; try again later.") from None
    except Exception as e:
        _failed(
            ctx, step, "internal_error", f"An unexpected error stopped provisioning ({type(e).__name__})."
        )
        raise
    finally:
        _release(claimed)


def _claim(pk: int, wait: float) -> ClusterAccount:
    """The row, claimed for this worker; or as another worker left it (ready, locked) once it let go."""
    deadline = time.monotonic() + wait
    while True:
        with transaction.atomic():
            # of=self: lock this row only, not the cluster's (every claim on the cluster would queue).
            row = (
                ClusterAccount.objects.select_for_update(of=("self",))
                .select_related("account", "cluster")
                .get(pk=pk)
            )
            now = timezone.now()
            if row.state in (State.READY, State.LOCKED):
                return row
            if row.busy_until is None or row.busy_until <= now:
                row.busy_until = now + CLAIM_LIFETIME
                row.attempts += 1
                row.save(update_fields=["busy_until", "attempts", "updated"])
                return row
        if time.monotonic() >= deadline:
            raise ProvisioningBusy(
                f"The account {row.account.username} is being set up on {row.cluster.name} right now; "
                "try again in a minute.",
                code="busy",
                cluster=row.cluster,
            )
        _sleep(0.2)


def unsuspend(row: ClusterAccount, *, actor: Any = None) -> ClusterAccount:
    """A grant is back for someone locked for having none: unlock the account (password and expiry).

    Only access (which knows the grants) calls this; a SUSPENDED row is otherwise refused like a locked one.
    """
    claimed = _claim(row.pk, DEFAULT_WAIT)
    if claimed.state != State.SUSPENDED:
        _release(claimed)
        return claimed
    return _unsuspend(_Context(claimed, claimed.account.user, actor))


def _unsuspend(ctx: _Context) -> ClusterAccount:
    row, name = ctx.row, ctx.account.username
    try:
        result = _run(ctx, ["usermod", "-U", "-e", "", name])
    except headnode.HeadNodeError as e:
        _release(row)
        raise ProvisioningError(
            f"{name} on {ctx.cluster.name} could not be unlocked: {e}", code="head_node", cluster=ctx.cluster
        ) from None
    if not result.ok:
        _release(row)
        raise ProvisioningError(
            f"{name} on {ctx.cluster.name} could not be unlocked: {result.output()}",
            code="usermod_failed",
            cluster=ctx.cluster,
        )
    _advance(row, State.READY, busy_until=None)
    ctx.audit("ready", f"{name} unlocked on {ctx.cluster.slug}: a grant there is back.", unsuspended=True)
    return row


def _release(row: ClusterAccount) -> None:
    # Only our own claim: if it expired and another worker took over, theirs stays.
    ClusterAccount.objects.filter(pk=row.pk, busy_until=row.busy_until).update(busy_until=None)


def _advance(row: ClusterAccount, state: str, **fields) -> None:
    row.state = state
    for name, value in fields.items():
        setattr(row, name, value)
    row.save(update_fields=["state", "last_error", "updated", *fields])


def _failed(ctx: _Context, step: str, code: str, detail: str) -> ProvisioningError:
    row = ctx.row
    message = f"{row.account.username} could not be set up on {row.cluster.name} ({step} step): {detail}"
    row.state = State.FAILED
    row.last_error = message
    row.save(update_fields=["state", "last_error", "updated"])
    ctx.audit(step, message, outcome="error", reason=code)
    return ProvisioningError(message, code=code, step=step, cluster=row.cluster)


def _run(ctx: _Context, argv: list[str]) -> headnode.Result:
    return headnode.run(ctx.cluster, argv, timeout=STEP_TIMEOUT)


def _entries(result: headnode.Result) -> list[list[str]]:
    """getent's lines as fields; exit 2 means "not (all) found", which is an answer too."""
    if result.exit_code not in (0, 2):
        raise _StepFailed(
            "getent_failed", f"getent failed on the head node: {result.output() or result.exit_code}"
        )
    return [line.split(":") for line in result.stdout.splitlines() if line.count(":") >= 2]


def _ensure_group(ctx: _Context) -> None:
    name, gid = ctx.account.username, ctx.account.gid

    def look() -> str:
        # One call for both keys: the name (held with which GID?) and the GID (held by whom?).
        for fields in _entries(_run(ctx, ["getent", "group", name, str(gid)])):
            if fields[0] == name:
                if fields[2] != str(gid):
                    raise _StepFailed(
                        "group_name_taken",
                        f"a group named {name} already exists there with GID {fields[2]}, not {gid}. "
                        "An administrator has to rename this account or remove that group.",
                    )
                return "ours"
            if fields[2] == str(gid):
                raise _StepFailed(
                    "gid_taken",
                    f"GID {gid} is already used there by the group {fields[0]}. "
                    "An administrator has to resolve the clash "
                    "(the console's UID range overlaps the cluster's).",
                )
        return "free"

    if look() == "ours":
        ctx.audit("group", f"Group {name} (GID {gid}) was already there.", created=False, gid=gid)
        return
    result = _run(ctx, ["groupadd", "-g", str(gid), name])
    # On failure look again: a concurrent creator (or a retried command) may have made it after all.
    if not result.ok and look() != "ours":
        raise _StepFailed("groupadd_failed", f"groupadd failed: {result.output() or result.exit_code}")
    ctx.audit("group", f"Created group {name} (GID {gid}).", created=True, gid=gid)


def _ensure_user(ctx: _Context) -> None:
    name, uid, gid = ctx.account.username, ctx.account.uid, ctx.account.gid
    home = posixpath.join(ctx.cluster.home_root, name)

    def look() -> str:
        for fields in _entries(_run(ctx, ["getent", "passwd", name, str(uid)])):
            if fields[0] == name:
                if fields[2] != str(uid):
                    raise _StepFailed(
                        "user_name_taken",
                        f"a user named {name} already exists there with UID {fields[2]}, but this account's "
                        f"UID is {uid}. An administrator has to rename this account or remove that user.",
                    )
                return "ours"
            if fields[2] == str(uid):
                raise _StepFailed(
                    "uid_taken",
                    f"UID {uid} is already used there by {fields[0]}. "
                    "An administrator has to resolve the clash "
                    "(the console's UID range overlaps the cluster's).",
                )
        return "free"

    if look() == "ours":
        ctx.audit("user", f"Linux user {name} (UID {uid}) was already there.", created=False, uid=uid)
        return
    if ctx.cluster.has_accounting:
        # Before the Linux user exists: a Slurm user of this name is someone else's, with their
        # associations (on every cluster of the slurmdbd), job history and perhaps rights.
        known = _slurm_user(ctx, name)
        if known is not None:
            raise _StepFailed(
                "slurm_user_taken",
                f"Slurm already has a user named {name} that the console did not make; this account would "
                "inherit its associations and history. An administrator has to rename this account or "
                "remove that Slurm user.",
            )
    # --no-log-init: high UIDs would otherwise grow lastlog/faillog into huge sparse files.
    # UMASK=0077: the home is made 0700 from its first moment (HOME_MODE would say it directly, but the
    # shadow of older head nodes, RHEL 8's, refuses that key and with it the whole useradd).
    argv = [
        "useradd",
        "--no-log-init",
        "-K",
        "UMASK=0077",
        "-u",
        str(uid),
        "-g",
        str(gid),
        "-m",
        "-d",
        home,
        "-s",
        "/bin/bash",
        name,
    ]
    result = _run(ctx, argv)
    if not result.ok and look() != "ours":
        raise _StepFailed("useradd_failed", f"useradd failed: {result.output() or result.exit_code}")
    # Also when the home was already there (useradd leaves its mode alone) or login.defs sets HOME_MODE.
    private = _run(ctx, ["chmod", "0700", "--", home])
    if not private.ok:
        raise _StepFailed(
            "chmod_failed",
            f"the home {home} could not be made private: {private.output() or private.exit_code}",
        )
    ctx.audit(
        "user", f"Created Linux user {name} (UID {uid}) with home {home}.", created=True, uid=uid, home=home
    )


def _join_people_group(ctx: _Context) -> None:
    """On the console's own host, the account joins the group its services refuse (posix.PEOPLE_GROUP)."""
    if ctx.cluster.transport != Cluster.Transport.LOCAL:
        return  # an SSM head node serves none of the console's databases
    name = ctx.account.username
    # -f: succeeds when the group is there already (the first account on this host makes it).
    made = _run(ctx, ["groupadd", "--system", "-f", posix.PEOPLE_GROUP])
    joined = _run(ctx, ["usermod", "-a", "-G", posix.PEOPLE_GROUP, name]) if made.ok else made
    if not joined.ok:
        raise _StepFailed(
            "people_group_failed",
            f"{name} could not join {posix.PEOPLE_GROUP}: {joined.output() or joined.exit_code}",
        )


def _ensure_association(ctx: _Context) -> None:
    name, slurm_account = ctx.account.username, ctx.cluster.slurm_account
    if not _SLURM_ACCOUNT.match(slurm_account or ""):
        raise _StepFailed(
            "bad_slurm_account",
            f"the cluster's Slurm account {slurm_account!r} is not a valid account name; "
            "fix it in the cluster registry.",
        )

    # A name Slurm knows as an administrator or coordinator is never a person's, even their own Linux user's.
    known = _slurm_user(ctx, name)
    if known is not None and known != ("None", ""):
        admin, coordinated = known
        rights = f"AdminLevel {admin}" if admin != "None" else f"coordinator rights over {coordinated}"
        raise _StepFailed(
            "slurm_admin_name",
            f"the Slurm user {name} has {rights}; the console never gives such a name to a person. "
            "An administrator has to rename this account.",
        )

    # Without cluster= sacctmgr adds the user on every cluster of the account in a shared slurmdbd:
    # someone granted one cluster would be able to run on all of them. The head node knows its own name.
    slurm_cluster = _slurm_cluster_name(ctx)

    def present() -> bool:
        shown = _run(
            ctx,
            [
                "sacctmgr",
                "-n",
                "-P",
                "show",
                "assoc",
                f"cluster={slurm_cluster}",
                f"user={name}",
                f"account={slurm_account}",
                "format=user",
            ],
        )
        if not shown.ok:
            raise _StepFailed("sacctmgr_failed", f"sacctmgr could not list associations: {shown.output()}")
        return name in (line.strip() for line in shown.stdout.splitlines())

    if present():
        ctx.audit(
            "association",
            f"Slurm association {name} → {slurm_account} on Slurm cluster {slurm_cluster} was already there.",
            created=False,
            account=slurm_account,
            slurm_cluster=slurm_cluster,
        )
        return
    # sacctmgr exits 1 with "Nothing new added" when it exists, so look again before calling it a failure.
    result = _run(
        ctx, ["sacctmgr", "-i", "add", "user", name, f"account={slurm_account}", f"cluster={slurm_cluster}"]
    )
    if not result.ok and not present():
        holder = _slurm_user_with_uid(ctx, ctx.account.uid, name)
        if holder:
            raise _StepFailed(
                "slurm_uid_taken",
                f"Slurm already has a user {holder} with UID {ctx.account.uid} and takes no second name for "
                f"that UID. If {holder} left (its Linux user may be gone), an administrator can remove it "
                f"from Slurm with `sacctmgr delete user {holder}`; then try again.",
            )
        raise _StepFailed("sacctmgr_failed", f"sacctmgr could not add the association: {result.output()}")
    ctx.audit(
        "association",
        f"Created Slurm association {name} → {slurm_account} on Slurm cluster {slurm_cluster}.",
        created=True,
        account=slurm_account,
        slurm_cluster=slurm_cluster,
    )


def _slurm_user(ctx: _Context, name: str) -> tuple[str, str] | None:
    """(AdminLevel, accounts coordinated) of the Slurm user `name`, or None if Slurm has no such user."""
    fields = "format=user,adminlevel,coordinators"
    shown = _run(ctx, ["sacctmgr", "-n", "-P", "show", "user", f"name={name}", "withcoord", fields])
    if not shown.ok:
        raise _StepFailed("sacctmgr_failed", f"sacctmgr could not list Slurm users: {shown.output()}")
    for line in shown.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 3 and fields[0] == name:
            return fields[1] or "None", fields[2]
    return None


def _slurm_user_with_uid(ctx: _Context, uid: int, name: str) -> str | None:
    """Another Slurm user holding `uid`, which is why Slurm 24.11 and later refuse `name` an association.

    They keep the UID a user had when it was added even after its Linux user is gone, and answer a new
    name with that UID only "Nothing added. Make sure the accounts requested here have been added to the
    system/cluster" (seen on 24.11.5 and 26.05.5; 22.05 adds it). slurmctld's cache lists each user's UID.
    """
    shown = _run(ctx, ["scontrol", "show", "assoc_mgr", "flags=users"])
    if not shown.ok:
        return None
    holders = [user for user, number in _SLURM_USER_UID.findall(shown.stdout) if int(number) == uid]
    return next((user for user in holders if user != name), None)


def _slurm_cluster_name(ctx: _Context) -> str:
    try:
        return slurm_cluster_name(ctx.cluster)
    except ProvisioningError as e:
        raise _StepFailed(e.code, e.message) from None


def slurm_cluster_name(cluster: Cluster) -> str:
    """ClusterName from the head node's own slurm.conf, as `scontrol show config` prints it.

    sacctmgr needs it with every association it adds: without cluster= the user is added on every
    cluster of a shared slurmdbd. Raises ProvisioningError (code scontrol_failed) if it cannot be read.
    """
    shown = headnode.run(cluster, ["scontrol", "show", "config"], timeout=STEP_TIMEOUT)
    found = _CLUSTER_NAME.search(shown.stdout) if shown.ok else None
    if found is None or not _SLURM_ACCOUNT.match(found.group(1)):
        raise ProvisioningError(
            f"could not read the Slurm cluster's name with scontrol: {shown.output() or shown.exit_code}",
            code="scontrol_failed",
            cluster=cluster,
        )
    return found.group(1)
