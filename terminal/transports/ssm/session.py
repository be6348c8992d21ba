"""Session Manager control plane: start, resume and terminate sessions, and sign the data-channel upgrade."""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from clusters.aws import PersonCredentialsError

from ..base import check_cwd

log = logging.getLogger(__name__)

DOCUMENT_NAME = "AWS-StartInteractiveCommand"
# Where an account keeps its Session Manager preferences (idle timeout, KMS key, logging) for a region.
PREFERENCES_DOCUMENT = "SSM-SessionManagerRunShell"
# Session Manager's idle timeout when the account never saved preferences (its documented default).
DEFAULT_IDLE_MINUTES = 20
SIGNING_SERVICE = "ssmmessages"
# Headers that carry a SigV4 signature; anything else the signer adds stays out of the upgrade request.
SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")

# A login name as useradd accepts it; anything else is refused before it reaches a shell command.
_POSIX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")

# Runs as the mapped user: enter the requested directory if possible, else home (the agent's own working
# directory is no place to start), then become that user's login shell.
# The directory arrives as $1, never inside the script text, so no quoting of it can go wrong.
_SHELL_SCRIPT = (
    'if [ -z "$1" ]; then cd; elif ! cd -- "$1" 2>/dev/null; then '
    'printf "clusterra: cannot enter %s; starting in your home directory\\n" "$1" >&2; cd; fi; '
    'shell=$(getent passwd "$(id -un)" | cut -d: -f7); exec "${shell:-/bin/sh}" -l'
)


class SessionError(Exception):
    """The control plane refused or failed; the message is fit to show the person."""


@dataclass(frozen=True)
class SessionGrant:
    """What StartSession/ResumeSession hand back: the data channel to open, and the token to open it with."""

    session_id: str
    token_value: str
    stream_url: str


@dataclass(frozen=True)
class Preferences:
    """The account's Session Manager preferences, as far as the console has to respect them."""

    idle_minutes: int | None
    max_minutes: int | None
    kms_key_id: str = ""
    log_group: str = ""
    s3_bucket: str = ""


def _minutes(value: Any) -> int | None:
    try:
        minutes = int(str(value).strip())
    except ValueError:
        return None
    return minutes if minutes > 0 else None


def login_command(user: str, cwd: str | None = None) -> str:
    """The AWS-StartInteractiveCommand command line: `user`'s login shell, started in `cwd` when possible."""
    if not _POSIX_NAME.fullmatch(user):
        raise ValueError(f"not a POSIX user name: {user!r}")
    # `.` and `..` are resolved as text first, as this command always did; the rest of the rule holds.
    directory = check_cwd(posixpath.normpath(cwd)) if cwd else ""
    # sudo -n fails instead of prompting: a password prompt would hang a shell no one can answer.
    argv = [
        "sudo",
        "-n",
        "-H",
        "-u",
        user,
        "--",
        "/bin/sh",
        "-c",
        _SHELL_SCRIPT,
        "clusterra-shell",
        directory,
    ]
    return shlex.join(argv)


class SessionManager:
    """StartSession/ResumeSession/TerminateSession for one AWS principal, off the event loop.

    The principal is the cluster's (one manager for every terminal), or one person's terminal role
    (`acting_for` names them): then a manager serves that person's terminals only, so resuming and
    ending a session are done by the person who started it, as the role's policy requires.
    """

    def __init__(
        self,
        ssm_client: Any,
        *,
        credentials: Credentials | None = None,
        region: str | None = None,
        acting_for: str = "",
    ):
        self.ssm = ssm_client
        self.region = region or ssm_client.meta.region_name
        # Without credentials the upgrade goes unsigned, which the service accepted at the time of writing.
        self.credentials = credentials
        self.acting_for = acting_for

    @classmethod
    def from_boto3_session(
        cls, session: boto3.Session, region: str | None = None, *, acting_for: str = ""
    ) -> SessionManager:
        region = region or session.region_name
        return cls(
            session.client("ssm", region_name=region),
            credentials=session.get_credentials(),
            region=region,
            acting_for=acting_for,
        )

    async def start(self, *, target: str, command: str, reason: str | None = None) -> SessionGrant:
        request: dict[str, Any] = {
            "Target": target,
            "DocumentName": DOCUMENT_NAME,
            "Parameters": {"command": [command]},
        }
        if reason:
            request["Reason"] = reason[:256]
        try:
            answer = await asyncio.to_thread(self.ssm.start_session, **request)
        except PersonCredentialsError as exc:
            # Renewing the person's credentials was refused (offboarded, or STS said no).
            raise SessionError(str(exc)) from exc
        except ClientError as exc:
            raise SessionError(_start_failure(target, exc, self.acting_for)) from exc
        except BotoCoreError as exc:
            raise SessionError(
                f"Could not reach AWS Systems Manager to open a shell on {target}: {exc}"
            ) from exc
        return SessionGrant(
            answer["SessionId"], answer.get("TokenValue") or "", answer.get("StreamUrl") or ""
        )

    async def resume(self, session_id: str) -> SessionGrant | None:
        """A fresh token (and perhaps a new URL) for a disconnected session; None if it is over."""
        try:
            answer = await asyncio.to_thread(self.ssm.resume_session, SessionId=session_id)
        except PersonCredentialsError as exc:
            # An offboarded person's session is not picked up again.
            log.warning("ssm session %s: not resumed: %s", session_id, exc)
            return None
        except ClientError as exc:
            if _error_code(exc) == "DoesNotExistException":
                return None
            raise
        if not answer.get("TokenValue"):
            return None
        return SessionGrant(
            answer.get("SessionId") or session_id, answer["TokenValue"], answer.get("StreamUrl") or ""
        )

    async def terminate(self, session_id: str) -> None:
        """End the session for good; an already-ended session is not an error worth raising."""
        try:
            await asyncio.to_thread(self.ssm.terminate_session, SessionId=session_id)
        except (ClientError, BotoCoreError, PersonCredentialsError) as exc:
            log.warning("ssm session %s: terminate failed: %s", session_id, exc)

    def preferences(self) -> Preferences | None:
        """The account's Session Manager preferences for this region (blocking); None if they cannot be read.

        Nothing the console sends overrides them (StartSession names no preferences document), so
        they hold for its sessions; this only lets the console say so instead of being cut by surprise.
        """
        try:
            answer = self.ssm.get_document(Name=PREFERENCES_DOCUMENT, DocumentFormat="JSON")
        except ClientError as exc:
            if _error_code(exc) == "InvalidDocument":
                # Never saved: Session Manager's defaults apply.
                return Preferences(idle_minutes=DEFAULT_IDLE_MINUTES, max_minutes=None)
            log.info("session manager preferences not readable: %s", exc)
            return None
        except BotoCoreError as exc:
            log.info("session manager preferences not readable: %s", exc)
            return None
        try:
            inputs = json.loads(answer.get("Content") or "{}").get("inputs") or {}
        except (ValueError, AttributeError):
            return None
        return Preferences(
            idle_minutes=_minutes(inputs.get("idleSessionTimeout", DEFAULT_IDLE_MINUTES)),
            max_minutes=_minutes(inputs.get("maxSessionDuration", "")),
            kms_key_id=str(inputs.get("kmsKeyId") or ""),
            log_group=str(inputs.get("cloudWatchLogGroupName") or ""),
            s3_bucket=str(inputs.get("s3BucketName") or ""),
        )

    def upgrade_headers(self, stream_url: str) -> dict[str, str]:
        """SigV4 headers for the WebSocket upgrade GET of `stream_url` (docs/ssm-data-channel.md §2)."""
        if self.credentials is None:
            return {}
        parts = urlsplit(stream_url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if any(name.lower().startswith("x-amz-") for name, _ in query):
            return {}  # presigned already
        # The service canonicalises like Go's signer: form-decode the query ('+' is a space), then
        # percent-encode it again. Handing the decoded pairs to botocore as params reproduces that,
        # while the socket still requests the URL exactly as AWS returned it.
        scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
        request = AWSRequest(
            method="GET", url=urlunsplit((scheme, parts.netloc, parts.path, "", "")), params=query
        )
        SigV4Auth(self.credentials.get_frozen_credentials(), SIGNING_SERVICE, self.region).add_auth(request)
        return {name: request.headers[name] for name in SIGNATURE_HEADERS if name in request.headers}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _start_failure(target: str, exc: ClientError, acting_for: str = "") -> str:
    code = _error_code(exc)
    if code == "TargetNotConnected":
        return (
            f"The head node ({target}) is not connected to Session Manager right now. Try again in a minute; "
            "if it persists, an administrator should check the node's SSM agent."
        )
    if code in ("AccessDeniedException", "AccessDenied") and acting_for:
        return (
            f"AWS did not let {acting_for}'s terminal role open a Session Manager session on {target}. An "
            "administrator should allow ssm:StartSession on the node and on the AWS-StartInteractiveCommand "
            "document in the cluster's per-person terminal role."
        )
    if code in ("AccessDeniedException", "AccessDenied"):
        return (
            f"The console is not allowed to open a Session Manager session on {target}. An administrator "
            "should grant ssm:StartSession on the node and on the AWS-StartInteractiveCommand document."
        )
    if code == "InvalidDocument":
        return f"Session Manager rejected the {DOCUMENT_NAME} document for {target}: {exc}"
    return f"Session Manager could not open a shell on {target} ({code or 'error'}): {exc}"
