"""AWS credentials for a cluster's role: assumed with the console's web identity, renewed before they expire.

Both ways to a head node through AWS (Run Command in clusters.headnode, the terminal's Session
Manager sessions) act with these when the cluster names a role; without one they use boto3's
default chain (instance profile, environment).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.session
from botocore.credentials import CredentialProvider, Credentials, RefreshableCredentials

ASSUMED_ROLE_SECONDS = 3600


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
        issued = answer["Credentials"]
        return {
            "access_key": issued["AccessKeyId"],
            "secret_key": issued["SecretAccessKey"],
            "token": issued["SessionToken"],
            "expiry_time": issued["Expiration"].isoformat(),
        }

    return RefreshableCredentials.create_from_metadata(
        metadata=fetch(), refresh_using=fetch, method=_FixedCredentialProvider.METHOD
    )


def boto3_session_with(credentials: Credentials, region: str) -> boto3.Session:
    """A boto3 session whose clients use `credentials` (refreshable ones keep refreshing)."""
    core = botocore.session.get_session()
    core.get_component("credential_provider").insert_before("env", _FixedCredentialProvider(credentials))
    return boto3.Session(botocore_session=core, region_name=region)
