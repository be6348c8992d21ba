"""Run one fixed command on a cluster's head node (locally or through AWS SSM), values only as arguments."""

from __future__ import annotations

import base64
import contextlib
import math
import os
import pwd
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from clusters.turns import waiting_elsewhere

DEFAULT_TIMEOUT = 60.0
# The console's own environment holds secrets (database URL, keys); a head-node
# command gets a fixed one instead, and the C locale so its messages read the same everywhere.
LOCAL_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
SSM_DOCUMENT = "AWS-RunShellScript"
# SendCommand refuses a delivery timeout below this many seconds.
SSM_MIN_DELIVERY_TIMEOUT = 30
# The whole command line travels as one document parameter; stay well below its limit.
SSM_MAX_COMMAND_BYTES = 48_000
# Quick first polls because most commands finish in about a second; then a calm pace.
SSM_POLL_INTERVALS = (0.25, 0.25, 0.5, 0.5, 1.0)

# Statuses after which an invocation never changes again.
SSM_TERMINAL = frozenset({"Success", "Failed", "Cancelled", "TimedOut"})

_sleep: Callable[[float], None] = time.sleep
_clock: Callable[[], float] = time.monotonic
_credentials_cache: dict[tuple[str, str], Any] = {}
_clients: dict[tuple, Any] = {}
_lock = threading.Lock()


class HeadNode(Protocol):
    slug: str
    name: str
    transport: str
    ssm_instance_id: str
    aws_region: str
    ssm_role_arn: str


@dataclass(frozen=True)
class Result:
    """What the command did. A non-zero exit code is an answer, not an error: the caller decides."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def output(self) -> str:
        """The command's own words for a message: stderr first, since that is where tools explain."""
        return (self.stderr.strip() or self.stdout.strip())[-500:]


class HeadNodeError(Exception):
    """The head node could not be reached or did not run the command; the message says which and why."""

    def __init__(self, cluster: HeadNode, detail: str) -> None:
        self.cluster_slug = cluster.slug
        self.detail = detail
        super().__init__(
            f"The head node of {cluster.name or cluster.slug} could not run the command: {detail}."
        )


class HeadNodeTimeout(HeadNodeError):
    """The command was started (or sent) but had not finished when the time was up."""


class UnknownUser(LookupError):
    """The person's POSIX user does not exist on this host, so a command cannot run as them."""

    def __init__(self, username: str) -> None:
        self.username = username
        super().__init__(f"The account {username} is missing on the head node (no such user).")


def run(
    cluster: HeadNode,
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input: bytes | None = None,
) -> Result:
    """Run `argv` on the cluster's head node as the transport's user (root, for provisioning).

    `argv[0]` is the program and every other item one argument: nothing is ever
    pasted into shell text unquoted, whatever a value contains.
    """
    argv = _with_slurm_bin(cluster, _checked(argv))
    if cluster.transport not in ("local", "ssm"):
        raise HeadNodeError(cluster, f"unknown transport {cluster.transport!r}")
    with waiting_elsewhere():
        if cluster.transport == "local":
            return _run_local(cluster, argv, timeout, input)
        return _run_ssm(cluster, argv, timeout, input)


def as_user(cluster: HeadNode, username: str, argv: Sequence[str]) -> list[str]:
    """`argv` as run by `username` on the cluster's head node, so the kernel checks their permissions.

    A remote head node (SSM) is asked through runuser: only it knows the person's ids. On this
    host (the local transport) setpriv takes the uid, the primary gid and every supplementary
    group from the system's user and group databases, as runuser would (ACLs and group
    permissions hold alike), but skips runuser's PAM session, which cost ~2 ms of every submit
    and has nothing to add to reading a file. The ids are switched by setpriv rather than by
    subprocess's user=/group=/extra_groups=: those stop Python from using vfork, and a full fork
    of the console's process costs more (~10 ms at a web worker's size) than the session saved.
    UnknownUser when the local host has no such user.
    """
    if cluster.transport != "local":
        return ["runuser", "-u", username, "--", *argv]
    uid, gid, groups = local_ids(username)
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        f"--groups={','.join(str(g) for g in groups)}",
        # Nothing the command runs may gain privileges back (a setuid program on the path).
        "--no-new-privs",
        "--",
        *argv,
    ]


def local_ids(username: str) -> tuple[int, int, list[int]]:
    """`username`'s uid, primary gid and every group (supplementary ones included) on this host.

    From the system's user and group databases, as runuser and login take them; UnknownUser without them.
    """
    try:
        account = pwd.getpwnam(username)
    except KeyError:
        raise UnknownUser(username) from None
    return account.pw_uid, account.pw_gid, os.getgrouplist(username, account.pw_gid)


# Slurm's client commands: where the cluster keeps them elsewhere (`slurm_bin`), they are called by path.
SLURM_COMMANDS = frozenset(
    [
        "sacct",
        "sacctmgr",
        "salloc",
        "sbatch",
        "scancel",
        "scontrol",
        "sinfo",
        "sprio",
        "squeue",
        "srun",
        "sshare",
    ]
)


def _with_slurm_bin(cluster: HeadNode, argv: list[str]) -> list[str]:
    """`argv` with each Slurm command (the program, or the one after `--` of runuser) as its full path."""
    folder = getattr(cluster, "slurm_bin", "")
    if not folder:
        return argv
    return [
        f"{folder.rstrip('/')}/{item}" if item in SLURM_COMMANDS and (i == 0 or argv[i - 1] == "--") else item
        for i, item in enumerate(argv)
    ]


def forget() -> None:
    """Drop cached AWS clients and assumed-role credentials (tests; after a role change)."""
    with _lock:
        _credentials_cache.clear()
        _clients.clear()


def _checked(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes) or not argv:
        raise ValueError("argv must be a non-empty list of strings, program first")
    items = list(argv)
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"argv items must be strings, not {type(item).__name__}")
        if "\x00" in item:
            raise ValueError("argv items cannot contain NUL bytes")
    return items


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


# --- local: a child process on this host, no shell --------------------------------------------


def _run_local(cluster: HeadNode, argv: list[str], timeout: float, input: bytes | None) -> Result:
    try:
        child = subprocess.Popen(  # noqa: S603 - argv is a list and no shell is involved
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=LOCAL_ENVIRONMENT,
            cwd="/",
            # Its own process group, so a timeout stops whatever it started too.
            start_new_session=True,
        )
    except FileNotFoundError:
        # The same answer a shell gives on a remote head node, so callers see one behaviour.
        return Result(127, "", f"{argv[0]}: command not found")
    except PermissionError:
        return Result(126, "", f"{argv[0]}: permission denied")
    except OSError as e:
        raise HeadNodeError(cluster, f"{argv[0]} could not be started ({e.strerror})") from None
    try:
        stdout, stderr = child.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise HeadNodeTimeout(cluster, f"{argv[0]} did not finish within {timeout:g} s") from None
    return Result(child.returncode, _text(stdout), _text(stderr))


# --- ssm: AWS-RunShellScript on the head node's instance ---------------------------------------


def ssm_command_line(argv: list[str], input: bytes | None = None) -> str:
    """The one line of shell the document runs: every value quoted by shlex.join.

    Run Command has no stdin, so input travels base64-encoded (an alphabet that
    needs no quoting, quoted anyway) and is decoded into the command's stdin.
    """
    line = shlex.join(argv)
    if input is not None:
        encoded = base64.b64encode(input).decode("ascii")
        line = f"printf %s {shlex.quote(encoded)} | base64 -d | {line}"
    return line


def _run_ssm(cluster: HeadNode, argv: list[str], timeout: float, input: bytes | None) -> Result:
    from botocore.exceptions import BotoCoreError, ClientError

    if not cluster.ssm_instance_id or not cluster.aws_region:
        raise HeadNodeError(cluster, "the SSM transport needs an instance id and a region")
    line = ssm_command_line(argv, input)
    if len(line.encode()) > SSM_MAX_COMMAND_BYTES:
        raise HeadNodeError(cluster, "the command is too long to send through SSM Run Command")
    seconds = max(1, math.ceil(timeout))
    client = _client("ssm", cluster.aws_region, _credentials(cluster))
    try:
        sent = client.send_command(
            InstanceIds=[cluster.ssm_instance_id],
            DocumentName=SSM_DOCUMENT,
            # Only the program's name: the comment is shown in the AWS console and CloudTrail.
            Comment=f"clusterra: {Path(argv[0]).name}"[:100],
            TimeoutSeconds=max(SSM_MIN_DELIVERY_TIMEOUT, seconds),
            Parameters={"commands": [line], "executionTimeout": [str(seconds)]},
        )
    except ClientError as e:
        raise HeadNodeError(cluster, f"AWS SSM refused the command ({_aws_error(e)})") from None
    except BotoCoreError as e:
        raise HeadNodeError(cluster, f"AWS SSM could not be reached ({e})") from None
    command_id = sent["Command"]["CommandId"]

    # Delivery may take up to the delivery timeout before the command even starts.
    deadline = _clock() + max(SSM_MIN_DELIVERY_TIMEOUT, seconds) + seconds
    polls = 0
    while True:
        _sleep(SSM_POLL_INTERVALS[min(polls, len(SSM_POLL_INTERVALS) - 1)])
        polls += 1
        try:
            answer = client.get_command_invocation(CommandId=command_id, InstanceId=cluster.ssm_instance_id)
        except ClientError as e:
            # The invocation appears a moment after SendCommand returns: not there yet is "not yet".
            if _aws_code(e) != "InvocationDoesNotExist":
                raise HeadNodeError(
                    cluster, f"AWS SSM did not report on the command ({_aws_error(e)})"
                ) from None
            answer = {"Status": "Pending"}
        except BotoCoreError as e:
            raise HeadNodeError(cluster, f"AWS SSM could not be reached ({e})") from None
        status = answer.get("Status", "")
        if status in SSM_TERMINAL:
            return _finished(cluster, answer, seconds)
        if _clock() > deadline:
            _cancel(client, command_id, cluster.ssm_instance_id)
            raise HeadNodeTimeout(cluster, f"{argv[0]} was still {status or 'pending'} after {seconds} s")


def _finished(cluster: HeadNode, answer: dict[str, Any], seconds: int) -> Result:
    status = answer.get("Status", "")
    details = answer.get("StatusDetails", "") or status
    code = answer.get("ResponseCode", -1)
    stdout = answer.get("StandardOutputContent", "")
    stderr = answer.get("StandardErrorContent", "")
    if status == "Success":
        return Result(code if code >= 0 else 0, stdout, stderr)
    if status == "Failed" and details == "Failed" and code >= 0:
        # The command ran and exited non-zero: that is its answer.
        return Result(code, stdout, stderr)
    if details == "ExecutionTimedOut":
        raise HeadNodeTimeout(cluster, f"the command did not finish within {seconds} s")
    explanation = {
        "DeliveryTimedOut": "the SSM agent did not pick the command up in time (is the instance running?)",
        "Undeliverable": "the instance is not managed by SSM or does not exist",
        "Terminated": "the command was stopped on the instance",
        "InvalidPlatform": "the instance cannot run shell scripts",
        "AccessDenied": "the instance's role may not run the command",
        "Cancelled": "the command was cancelled",
    }.get(details, f"SSM reported {details}")
    raise HeadNodeError(cluster, explanation)


def _cancel(client: Any, command_id: str, instance_id: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    # Best effort: the execution timeout sent with the command stops it on the instance anyway.
    with contextlib.suppress(BotoCoreError, ClientError):
        client.cancel_command(CommandId=command_id, InstanceIds=[instance_id])


def _aws_code(e: Any) -> str:
    return e.response.get("Error", {}).get("Code", "") or "error"


def _aws_error(e: Any) -> str:
    message = e.response.get("Error", {}).get("Message", "")
    return f"{_aws_code(e)}: {message}" if message else _aws_code(e)


def _credentials(cluster: HeadNode) -> dict[str, Any] | None:
    """Keys of the cluster's role through the console's web identity; None for the default chain."""
    from botocore.exceptions import BotoCoreError, ClientError

    from clusters import aws

    if not cluster.ssm_role_arn:
        return None
    key = (cluster.ssm_role_arn, cluster.aws_region)
    try:
        with _lock:
            renewing = _credentials_cache.get(key)
        if renewing is None:
            renewing = aws.role_credentials(
                _client("sts", cluster.aws_region, None),
                role_arn=cluster.ssm_role_arn,
                cluster_slug=cluster.slug,
            )
            with _lock:
                renewing = _credentials_cache.setdefault(key, renewing)
        # Renewed here when they are about to expire; new keys then get new clients (_client).
        keys = renewing.get_frozen_credentials()
    except aws.NoWebIdentity:
        raise HeadNodeError(
            cluster, "its role needs a web identity, but AWS_WEB_IDENTITY_TOKEN_FILE is not set"
        ) from None
    except ClientError as e:
        raise HeadNodeError(
            cluster, f"AWS STS refused the role {cluster.ssm_role_arn} ({_aws_error(e)})"
        ) from None
    except BotoCoreError as e:
        raise HeadNodeError(cluster, f"AWS STS could not be reached ({e})") from None
    except OSError as e:
        raise HeadNodeError(
            cluster, f"the web identity token {e.filename} cannot be read ({e.strerror})"
        ) from None
    return {"AccessKeyId": keys.access_key, "SecretAccessKey": keys.secret_key, "SessionToken": keys.token}


def _client(service: str, region: str, credentials: dict[str, Any] | None) -> Any:
    import boto3

    key = (service, region, credentials["AccessKeyId"] if credentials else None)
    with _lock:
        client = _clients.get(key)
    if client is not None:
        return client
    extra = {}
    if credentials:
        extra = {
            "aws_access_key_id": credentials["AccessKeyId"],
            "aws_secret_access_key": credentials["SecretAccessKey"],
            "aws_session_token": credentials["SessionToken"],
        }
    # A fresh session per client: boto3's default session is not thread-safe.
    client = boto3.session.Session().client(service, region_name=region, **extra)
    with _lock:
        # Clients of expired credentials for the same service and region are never used again.
        for stale in [k for k in _clients if k[:2] == key[:2]]:
            del _clients[stale]
        _clients[key] = client
    return client
