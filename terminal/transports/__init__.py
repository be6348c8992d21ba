"""Ways to reach a shell for the terminal page: the SSM data channel, or a local PTY."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .base import Transport, TransportError

if TYPE_CHECKING:
    from clusters.models import Cluster

    from .ssm import SessionManager

__all__ = ["Transport", "TransportError", "for_cluster", "ssm_manager"]

_managers: dict[tuple[str, str], SessionManager] = {}
_lock = threading.Lock()


def for_cluster(cluster: Cluster, *, posix_user: str, cwd: str, reason: str) -> Transport:
    """A transport, not yet started, for `posix_user`'s login shell on the cluster's head node.

    Blocking (it may assume an AWS role): call it off the event loop.
    """
    if cluster.transport == "local":
        from ..confine import Limits
        from .local import LocalPtyTransport

        limits = Limits(
            processes=cluster.shell_max_processes,
            memory_mb=cluster.shell_max_memory_mb,
            cpus=cluster.shell_max_cpus,
        )
        return LocalPtyTransport(posix_user, cwd or None, limits, slurm_bin=cluster.slurm_bin)
    if cluster.transport == "ssm":
        from .ssm import SsmTransport, login_command

        if not cluster.ssm_instance_id:
            raise TransportError(f"{cluster.name} has no SSM instance id; an administrator must set one.")
        return SsmTransport(
            ssm_manager(cluster),
            target=cluster.ssm_instance_id,
            command=login_command(posix_user, cwd or None),
            reason=reason,
        )
    raise TransportError(f"{cluster.name} has an unknown terminal transport {cluster.transport!r}.")


def ssm_manager(cluster: Cluster) -> SessionManager:
    """The Session Manager client for the cluster's region and role, made once per process (blocking)."""
    key = (cluster.aws_region, cluster.ssm_role_arn)
    with _lock:
        manager = _managers.get(key)
    if manager is None:
        manager = _new_manager(cluster)
        with _lock:
            manager = _managers.setdefault(key, manager)
    return manager


def forget() -> None:
    """Drop cached Session Manager clients (tests; after a role change)."""
    with _lock:
        _managers.clear()


def _new_manager(cluster: Cluster) -> SessionManager:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from clusters import aws

    from .ssm import SessionManager

    region = cluster.aws_region
    if not cluster.ssm_role_arn:
        # The console's own credentials (instance profile, environment): boto3's default chain.
        return SessionManager.from_boto3_session(boto3.session.Session(region_name=region), region)
    try:
        credentials = aws.role_credentials(
            boto3.session.Session().client("sts", region_name=region),
            role_arn=cluster.ssm_role_arn,
            cluster_slug=cluster.slug,
        )
    except aws.NoWebIdentity:
        raise TransportError(
            f"{cluster.name}'s role needs a web identity, but AWS_WEB_IDENTITY_TOKEN_FILE is not set; "
            "an administrator must configure it."
        ) from None
    except (ClientError, BotoCoreError, OSError) as exc:
        raise TransportError(
            f"The console could not assume the role {cluster.ssm_role_arn} for {cluster.name}: {exc}"
        ) from exc
    return SessionManager.from_boto3_session(aws.boto3_session_with(credentials, region), region)
