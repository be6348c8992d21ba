"""Ways to reach a shell for the terminal page: the SSM data channel, or a local PTY."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from .base import Transport, TransportError

if TYPE_CHECKING:
    from clusters.models import Cluster

    from .ssm import SessionManager

__all__ = ["Transport", "TransportError", "for_cluster", "idle_minutes", "person_ssm_manager", "ssm_manager"]

_managers: dict[tuple[str, str], SessionManager] = {}
_lock = threading.Lock()
# Session Manager preferences change rarely; read again after this many seconds (failures included).
PREFERENCES_SECONDS = 600.0
_preferences: dict[tuple[str, str], tuple[float, Any]] = {}


def for_cluster(cluster: Cluster, *, posix_user: str, cwd: str, reason: str, person: Any = None) -> Transport:
    """A transport, not yet started, for `posix_user`'s login shell on the cluster's head node.

    `person` (the one who asked) is needed where the cluster has a per-person terminal role.
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
        if cluster.ssm_person_role_arn:
            manager = person_ssm_manager(cluster, person, posix_user)
        else:
            manager = ssm_manager(cluster)
        return SsmTransport(
            manager,
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


def person_ssm_manager(cluster: Cluster, person: Any, posix_user: str) -> SessionManager:
    """A Session Manager client acting as `person` through the cluster's terminal role (blocking).

    Made per terminal from the person's cached credentials, so everything this terminal asks of
    Session Manager (start, resume, terminate, the signed upgrade) is signed by that person.
    """
    from clusters import aws

    from .ssm import SessionManager

    if person is None:
        # Never fall back to the cluster's role: that would open a session nobody is named on.
        raise TransportError(f"{cluster.name} opens terminals only for a named person.")
    try:
        session = aws.person_session(cluster, person, posix_user)
        # Renewed here if they are about to expire, so a refusal is told now, not inside StartSession.
        session.get_credentials().get_frozen_credentials()
    except aws.PersonCredentialsError as exc:
        raise TransportError(str(exc)) from None
    who = person.email or posix_user
    return SessionManager.from_boto3_session(session, cluster.aws_region, acting_for=who)


def idle_minutes(cluster: Cluster) -> int:
    """The idle limit a terminal on `cluster` really has (blocking).

    The console's own, unless the account's Session Manager preferences end an idle session sooner:
    then theirs, so the console's warning comes before Session Manager's cut, not after it. Read with
    the console's credentials for the cluster (ssm:GetDocument on SSM-SessionManagerRunShell); when
    they cannot be read, the console's limit stands.
    """
    own = cluster.terminal_idle_timeout
    if cluster.transport != "ssm":
        return own
    key = (cluster.aws_region, cluster.ssm_role_arn)
    with _lock:
        read_at, preferences = _preferences.get(key, (0.0, None))
    if time.monotonic() - read_at > PREFERENCES_SECONDS or key not in _preferences:
        try:
            preferences = ssm_manager(cluster).preferences()
        except TransportError:
            preferences = None
        with _lock:
            _preferences[key] = (time.monotonic(), preferences)
    theirs = preferences.idle_minutes if preferences is not None else None
    return min(own, theirs) if theirs else own


def forget() -> None:
    """Drop cached Session Manager clients and person credentials (tests; after a role change)."""
    from clusters import aws

    with _lock:
        _managers.clear()
        _preferences.clear()
    aws.forget()


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
