"""The one way above `clusters` to act in Slurm as a person: checks who they are, then mints their token.

Decisions:

- A person who has never used the cluster is provisioned here, just in time
  (`provisioning.ready_account`): the first job submission or terminal should simply
  work. Once the account is ready this costs one query and no head-node call.
- Refusals (deactivated person, locked account, disabled cluster, a name Slurm must
  never get a token for) raise SlurmAccessRefused and are audited. Successful mints
  are not: the action the token is for (a submission, a cancel) is audited by the
  app that does it, and a job list refreshed every few seconds would drown the log.
- Offboarding is the single caller allowed to bypass this (to cancel a departed
  person's jobs as them); see accounts.offboarding.
"""

from __future__ import annotations

from typing import Any, NoReturn

from accounts import provisioning
from accounts.models import ClusterAccount, PosixAccount, User
from accounts.provisioning import ProvisioningError
from audit.log import record
from clusters import tokens
from clusters.models import Cluster
from clusters.refusal import Refusal
from clusters.slurm import SlurmClient

__all__ = ["ProvisioningError", "SlurmAccessRefused", "slurm_for"]


class SlurmAccessRefused(Refusal):
    """No Slurm token is minted for this person on this cluster; `code` says why (also the audit's reason)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code, status=403)


def slurm_for(
    user: User,
    cluster: Cluster,
    *,
    request: Any = None,
    provision: bool = True,
    ready: PosixAccount | None = None,
) -> SlurmClient:
    """A slurmrestd client acting as `user`'s POSIX account on `cluster`.

    With `provision` (the default) a missing or unfinished account is provisioned
    first, which may raise ProvisioningError; without it such an account is refused.
    `ready` is the person's account as `provisioning.ready_account` returned it earlier in the
    same request (so found READY, not locked or suspended, a moment ago): it is not looked up again.
    """
    if not user.is_active:
        _refuse(user, cluster, request, "inactive", f"{user.get_username()} is deactivated.")
    if not cluster.enabled:
        _refuse(user, cluster, request, "cluster_disabled", f"{cluster.name} is disabled in the console.")
    if ready is not None:
        if ready.user_id != user.pk:
            raise ValueError("ready must be the person's own account")
        return _client(user, cluster, request, ready)
    row = ClusterAccount.objects.select_related("account").filter(account__user=user, cluster=cluster).first()
    if row is not None and row.state == ClusterAccount.State.LOCKED:
        _refuse(
            user,
            cluster,
            request,
            "locked",
            f"The account {row.account.username} on {cluster.name} is locked; ask an administrator.",
        )
    if row is not None and row.state == ClusterAccount.State.SUSPENDED:
        _refuse(
            user,
            cluster,
            request,
            "suspended",
            f"Your access to {cluster.name} ended, so the account {row.account.username} there is locked "
            "until an administrator grants it again.",
        )
    if row is None or row.state != ClusterAccount.State.READY:
        if not provision:
            _refuse(
                user,
                cluster,
                request,
                "not_ready",
                f"{user.get_username()} has no ready account on {cluster.name} yet.",
            )
        account = provisioning.ready_account(user, cluster)
    else:
        account = row.account
    return _client(user, cluster, request, account)


def _client(user: User, cluster: Cluster, request: Any, account: PosixAccount) -> SlurmClient:
    try:
        return cluster.slurm(account.username, uid=account.uid, gid=account.gid)
    except tokens.TokenRefused as e:
        _refuse(user, cluster, request, "token_refused", str(e))


def _refuse(user: User, cluster: Cluster, request: Any, reason: str, message: str) -> NoReturn:
    record(
        "slurm.token_refused",
        actor=user,
        cluster=cluster,
        target=user.get_username(),
        outcome="denied",
        reason=reason,
        message=message,
        request=request,
    )
    raise SlurmAccessRefused(message, code=reason)
