"""AWS credentials: a cluster's role (assumed with the console's web identity), and one person's terminals.

Both ways to a head node through AWS (Run Command in clusters.headnode, the terminal's Session
Manager sessions) act with the cluster's role when it names one; without one they use boto3's
default chain (instance profile, environment).

A cluster with a per-person terminal role (`ssm_person_role_arn`) opens each terminal with that role
assumed *for the person*: the console's credentials call sts:AssumeRole with the session name
clusterra-<POSIX user>, the person's e-mail as SourceIdentity and session tags naming both, so
CloudTrail names the person on every call, and the role's policy can keep each person to the
sessions they started. This module is told who the person is; whether they may have a terminal at
all is decided above it. It only refuses a deactivated person, the last lock before AWS.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
import botocore.session
from botocore.credentials import CredentialProvider, Credentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError

ASSUMED_ROLE_SECONDS = 3600
# A person's credentials are used until this close to their expiry, then assumed again.
PERSON_RENEW_SECONDS = 300
PERSON_TAG = "clusterra:person"
POSIX_USER_TAG = "clusterra:posix-user"
# STS's own rules: a SourceIdentity of 2 to 64 of these characters; tag values of up to 256 of these.
_SOURCE_IDENTITY = re.compile(r"[\w+=,.@-]{2,64}")
_TAG_VALUE_REFUSED = re.compile(r"[^\w\s.:/=+@-]")

# At DEBUG these write what carries a secret: botocore its response bodies (STS and Secrets Manager
# answers), prepared and canonical requests (the session token header); websockets every header of
# the Session Manager data channel's signed upgrade. They drop DEBUG records here for good, so no log
# level set later (CLUSTERRA_LOG_LEVEL, a test, a shell) lets one out.
SECRET_BEARING_LOGGERS = (
    "botocore.parsers",
    "botocore.endpoint",
    "botocore.auth",
    "botocore.awsrequest",
    "websockets.client",
    "websockets.server",
)


class _NoDebug(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


for _name in SECRET_BEARING_LOGGERS:
    if not any(isinstance(f, _NoDebug) for f in logging.getLogger(_name).filters):
        logging.getLogger(_name).addFilter(_NoDebug())


class NoWebIdentity(Exception):
    """The role needs a web identity, but AWS_WEB_IDENTITY_TOKEN_FILE is not set."""


class _FixedCredentialProvider(CredentialProvider):
    METHOD = "clusterra-web-identity"

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def role_credentials(sts_client: Any, *, role_arn: str, cluster_slug: str) -> RefreshableCredentials:
    """The role's credentials through the web identity token the platform provides (EKS, ECS and the like).

    Raises NoWebIdentity without a token file, OSError when it cannot be read, and botocore's
    ClientError or BotoCoreError when STS refuses or does not answer.
    """
    token_file = os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE", "")
    if not token_file:
        raise NoWebIdentity("AWS_WEB_IDENTITY_TOKEN_FILE is not set")
    return web_identity_credentials(
        sts_client,
        role_arn=role_arn,
        role_session_name=f"clusterra-{cluster_slug}"[:64],
        # Read at every renewal: the platform rotates the token file.
        web_identity_token=lambda: Path(token_file).read_text().strip(),
    )


def web_identity_credentials(
    sts_client: Any,
    *,
    role_arn: str,
    role_session_name: str,
    web_identity_token: Callable[[], str],
    duration_seconds: int = ASSUMED_ROLE_SECONDS,
) -> RefreshableCredentials:
    """Role credentials from AssumeRoleWithWebIdentity that renew themselves before they expire.

    A fixed `role_session_name` keeps session ids (and so the IAM resource scope) predictable.
    """

    def fetch() -> dict[str, str]:
        answer = sts_client.assume_role_with_web_identity(
            RoleArn=role_arn,
            RoleSessionName=role_session_name,
            WebIdentityToken=web_identity_token(),
            DurationSeconds=duration_seconds,
        )
        return _metadata(answer["Credentials"])

    return RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method=_FixedCredentialProvider.METHOD
    )


def boto3_session_with(credentials: Credentials, region: str) -> boto3.Session:
    """A boto3 session whose clients use `credentials` (refreshable ones keep refreshing)."""
    core = botocore.session.get_session()
    core.get_component("credential_provider").insert_before("env", _FixedCredentialProvider(credentials))
    return boto3.Session(botocore_session=core, region_name=region)


# ---- one person's credentials ------------------------------------------------------------------


class PersonCredentialsError(Exception):
    """No AWS credentials for this person's terminal; the message is fit to show them."""


class Person(Protocol):
    """What this module needs to know of a person (accounts' User has it)."""

    pk: Any
    email: str
    is_active: bool


@dataclass
class _Held:
    credentials: RefreshableCredentials
    session: boto3.Session
    person_pk: Any
    dropped: bool = False


_held: dict[tuple[Any, ...], _Held] = {}
# One lock per (cluster, person): two terminals opening at once make one AssumeRole, not two.
_opening: dict[tuple[Any, ...], threading.Lock] = {}
_console_sts: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def person_session_name(posix_user: str) -> str:
    """The role session name: Session Manager starts the ids of this person's sessions with it."""
    return f"clusterra-{posix_user}"[:64]


def source_identity(email: str, posix_user: str) -> str:
    """The person's e-mail when STS accepts it as a SourceIdentity, else their role session name."""
    return email if _SOURCE_IDENTITY.fullmatch(email) else person_session_name(posix_user)


def person_tags(email: str, posix_user: str) -> list[dict[str, str]]:
    return [
        {"Key": PERSON_TAG, "Value": _TAG_VALUE_REFUSED.sub("_", email)[:256] or "-"},
        {"Key": POSIX_USER_TAG, "Value": posix_user},
    ]


def console_sts_client(cluster: Any) -> Any:
    """STS with the console's credentials for `cluster`: its role (web identity), else boto3's chain.

    Made once per region and role, like the terminal's cluster-wide Session Manager client.
    """
    key = (cluster.aws_region, cluster.ssm_role_arn)
    with _lock:
        client = _console_sts.get(key)
    if client is not None:
        return client
    region = cluster.aws_region or None
    session = boto3.session.Session(region_name=region)
    if cluster.ssm_role_arn:
        renewing = role_credentials(
            session.client("sts", region_name=region),
            role_arn=cluster.ssm_role_arn,
            cluster_slug=cluster.slug,
        )
        session = boto3_session_with(renewing, cluster.aws_region)
    client = session.client("sts", region_name=region)
    with _lock:
        return _console_sts.setdefault(key, client)


def person_credentials(cluster: Any, person: Person, posix_user: str) -> RefreshableCredentials:
    """The cluster's terminal role assumed for `person` as `posix_user`; renewed 5 minutes before expiry.

    Cached in this process per cluster, role, person and POSIX user. Raises PersonCredentialsError
    (with the sentence to show) for a deactivated person and when STS refuses or cannot be reached.
    """
    return _held_for(cluster, person, posix_user).credentials


def person_session(cluster: Any, person: Person, posix_user: str) -> boto3.Session:
    """A boto3 session whose clients act with person_credentials (and keep renewing them)."""
    return _held_for(cluster, person, posix_user).session


def forget_person(person_pk: Any) -> int:
    """Drop a person's cached credentials (offboarding); ones already handed out are not renewed."""
    with _lock:
        keys = [key for key, held in _held.items() if held.person_pk == person_pk]
        for key in keys:
            _held.pop(key).dropped = True
    return len(keys)


def forget() -> None:
    """Drop every cached person credential and console STS client (tests; after a role change)."""
    with _lock:
        for held in _held.values():
            held.dropped = True
        _held.clear()
        _console_sts.clear()


def _held_for(cluster: Any, person: Person, posix_user: str) -> _Held:
    if not cluster.ssm_person_role_arn:
        raise PersonCredentialsError(f"{cluster.name} has no per-person terminal role.")
    if not person.is_active:
        raise PersonCredentialsError(
            f"{person.email or 'This account'} is deactivated: no AWS credentials are issued for it."
        )
    key = (cluster.pk, cluster.ssm_person_role_arn, person.pk, posix_user)
    with _lock:
        opening = _opening.setdefault(key, threading.Lock())
    with opening:
        with _lock:
            held = _held.get(key)
        if held is not None:
            return held
        held = _assume_for(cluster, person, posix_user)
        with _lock:
            _held[key] = held
        return held


def _assume_for(cluster: Any, person: Person, posix_user: str) -> _Held:
    role_arn = cluster.ssm_person_role_arn
    request = {
        "RoleArn": role_arn,
        "RoleSessionName": person_session_name(posix_user),
        "SourceIdentity": source_identity(person.email, posix_user),
        "Tags": person_tags(person.email, posix_user),
        # Also the most a chained role session may last (the console's own role is often assumed).
        "DurationSeconds": ASSUMED_ROLE_SECONDS,
    }
    who = person.email or posix_user
    held: _Held | None = None

    def fetch() -> dict[str, Any]:
        if held is not None and held.dropped:
            raise PersonCredentialsError(f"{who} was offboarded: their AWS credentials are not renewed.")
        try:
            answer = console_sts_client(cluster).assume_role(**request)
        except NoWebIdentity:
            raise PersonCredentialsError(
                f"{cluster.name}'s role needs a web identity, but AWS_WEB_IDENTITY_TOKEN_FILE is not set; "
                "an administrator must configure it."
            ) from None
        except ClientError as exc:
            raise PersonCredentialsError(_refusal(cluster, role_arn, who, exc)) from None
        except (BotoCoreError, OSError) as exc:
            raise PersonCredentialsError(
                f"The console could not reach AWS STS to get {who}'s terminal credentials ({exc}); "
                "try again in a minute."
            ) from None
        return _metadata(answer["Credentials"])

    first = fetch()
    credentials = RefreshableCredentials(
        first["access_key"],
        first["secret_key"],
        first["token"],
        dt.datetime.fromisoformat(first["expiry_time"]),
        fetch,
        "clusterra-person-role",
        # Looked up at each check, so a test can move the clock.
        time_fetcher=lambda: _now(),
    )
    # botocore renews 15 minutes ahead by default; these live an hour, so use them until 5 minutes are left.
    credentials._advisory_refresh_timeout = PERSON_RENEW_SECONDS
    credentials._mandatory_refresh_timeout = PERSON_RENEW_SECONDS
    held = _Held(credentials, boto3_session_with(credentials, cluster.aws_region), person.pk)
    return held


def _refusal(cluster: Any, role_arn: str, who: str, exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "") or "error")
    detail = f"{code}: {error.get('Message')}" if error.get("Message") else code
    if code in ("AccessDenied", "AccessDeniedException"):
        return (
            f"AWS refused to issue {who}'s terminal credentials on {cluster.name} ({detail}). "
            "An administrator should check that the console's role may call sts:AssumeRole, "
            f"sts:TagSession and sts:SetSourceIdentity on {role_arn} (the role's trust policy)."
        )
    return f"AWS STS could not issue {who}'s terminal credentials on {cluster.name} ({detail})."


def _metadata(issued: dict[str, Any]) -> dict[str, str]:
    """STS's Credentials as botocore's RefreshableCredentials take them."""
    return {
        "access_key": issued["AccessKeyId"],
        "secret_key": issued["SecretAccessKey"],
        "token": issued["SessionToken"],
        "expiry_time": issued["Expiration"].isoformat(),
    }
