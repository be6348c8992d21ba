"""The SSM control plane: the login command, the signed upgrade, web-identity credentials, API errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pwd
import shlex
import subprocess

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.stub import Stubber
from websockets.datastructures import Headers

from clusters.aws import boto3_session_with, web_identity_credentials
from terminal.transports.base import TransportError
from terminal.transports.ssm import SessionManager, SsmTransport, login_command
from terminal.transports.ssm.channel import INITIAL_RTO, MAX_RTO, RttEstimator
from tests.support.ssm_agent import (
    REGION,
    TARGET,
    TEST_CREDENTIALS,
    AgentBehaviour,
    OutputReader,
    StubbedSsm,
    go_canonical_query,
    sigv4_problem,
)

STREAM_URL = (
    "wss://ssmmessages.eu-west-1.amazonaws.com/v1/data-channel/clusterra-0a1b2c3d4e5f"
    "?role=publish_subscribe&cell-number=AAEAAcl+uSt/eRRa%2Bx=="
)
ROLE_ARN = "arn:aws:iam::123456789012:role/clusterra-console"


def ssm_client():
    return boto3.client(
        "ssm",
        region_name=REGION,
        aws_access_key_id=TEST_CREDENTIALS.access_key,
        aws_secret_access_key=TEST_CREDENTIALS.secret_key,
    )


def request_path(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def upgrade_request(url: str, signed: dict[str, str]) -> Headers:
    """The headers the upgrade GET carries, case-insensitive as HTTP headers are."""
    return Headers({"Host": url.split("/")[2], **signed})


# ---- the command AWS-StartInteractiveCommand runs ------------------------------------------------


@pytest.mark.parametrize("cwd", ["/home/alice/project", "/srv/a b/it's $HOME;rm -rf ~", '/data/`id`/"x"'])
def test_the_login_command_passes_the_directory_as_one_untouched_argument(cwd):
    argv = shlex.split(login_command("alice", cwd))

    assert argv[:6] == ["sudo", "-n", "-H", "-u", "alice", "--"]
    assert argv[-1] == cwd
    assert argv[6:8] == ["/bin/sh", "-c"]


def test_the_login_command_normalises_the_directory_and_allows_none():
    assert shlex.split(login_command("alice", "/home/alice/../alice/./x"))[-1] == "/home/alice/x"
    assert shlex.split(login_command("alice"))[-1] == ""


@pytest.mark.parametrize("user", ["", "alice; rm -rf /", "-u", "root\n", "a" * 33, "al ice"])
def test_the_login_command_refuses_an_odd_user_name(user):
    with pytest.raises(ValueError, match="POSIX user name"):
        login_command(user, "/tmp")


@pytest.mark.parametrize("cwd", ["relative/dir", "/tmp/a\nb", "/tmp/\x00"])
def test_the_login_command_refuses_an_odd_directory(cwd):
    with pytest.raises(ValueError, match="working directory"):
        login_command("alice", cwd)


def _runnable_login_shell() -> bool:
    shell = pwd.getpwuid(os.getuid()).pw_shell
    return os.access(shell, os.X_OK) and not shell.endswith(("nologin", "false"))


@pytest.mark.skipif(not _runnable_login_shell(), reason="this account has no login shell to run")
@pytest.mark.parametrize("exists", [True, False])
def test_the_login_command_starts_the_login_shell_in_the_directory(tmp_path, exists):
    wanted = tmp_path / "a b" / "it's"
    if exists:
        wanted.mkdir(parents=True)
    argv = shlex.split(login_command(pwd.getpwuid(os.getuid()).pw_name, str(wanted)))
    # Everything after sudo's "--" is what the mapped user runs; run it as ourselves.
    as_user = argv[argv.index("--") + 1 :]

    done = subprocess.run(as_user, input=b"pwd\n", capture_output=True, timeout=10, check=False)

    last_line = done.stdout.decode().strip().splitlines()[-1]
    if exists:
        assert last_line == str(wanted)
    else:
        assert last_line == pwd.getpwuid(os.getuid()).pw_dir
        assert b"cannot enter" in done.stderr


# ---- the signed WebSocket upgrade ------------------------------------------------------------------


def test_the_upgrade_is_signed_the_way_the_service_canonicalises_the_query():
    headers = SessionManager(ssm_client(), credentials=TEST_CREDENTIALS).upgrade_headers(STREAM_URL)

    assert set(headers) == {"Authorization", "X-Amz-Date", "X-Amz-Security-Token"}
    assert "/eu-west-1/ssmmessages/aws4_request" in headers["Authorization"]
    request = upgrade_request(STREAM_URL, headers)
    assert sigv4_problem(request_path(STREAM_URL), request, TEST_CREDENTIALS, REGION) is None


def test_signing_the_raw_query_would_not_match():
    # botocore left to itself keeps '+' and '/' raw in the canonical query; the service decodes them first.
    raw = AWSRequest(method="GET", url=STREAM_URL.replace("wss://", "https://"))
    SigV4Auth(TEST_CREDENTIALS, "ssmmessages", REGION).add_auth(raw)
    signed = {name: raw.headers[name] for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")}
    request = upgrade_request(STREAM_URL, signed)

    assert (
        sigv4_problem(request_path(STREAM_URL), request, TEST_CREDENTIALS, REGION)
        == "signature does not match"
    )


def test_the_canonical_query_form_decodes_then_percent_encodes():
    assert go_canonical_query("role=publish_subscribe&cell-number=AB+c/d%2B==") == (
        "cell-number=AB%20c%2Fd%2B%3D%3D&role=publish_subscribe"
    )


def test_a_presigned_url_or_missing_credentials_means_no_headers():
    presigned = STREAM_URL + "&X-Amz-Signature=abc"

    assert SessionManager(ssm_client(), credentials=TEST_CREDENTIALS).upgrade_headers(presigned) == {}
    assert SessionManager(ssm_client(), credentials=None).upgrade_headers(STREAM_URL) == {}


# ---- credentials from AssumeRoleWithWebIdentity ---------------------------------------------------


def sts_answer(key_id: str, expires_in: dt.timedelta) -> dict:
    return {
        "Credentials": {
            "AccessKeyId": key_id,
            "SecretAccessKey": f"secret-for-{key_id}",
            "SessionToken": f"token-for-{key_id}",
            "Expiration": dt.datetime.now(dt.UTC) + expires_in,
        }
    }


def stubbed_sts(*answers: dict) -> tuple[object, Stubber]:
    sts = boto3.client("sts", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(sts)
    for answer in answers:
        stubber.add_response(
            "assume_role_with_web_identity",
            answer,
            expected_params={
                "RoleArn": ROLE_ARN,
                "RoleSessionName": "clusterra-console",
                "WebIdentityToken": "the-oidc-token",
                "DurationSeconds": 3600,
            },
        )
    stubber.activate()
    return sts, stubber


def test_web_identity_credentials_renew_before_they_expire():
    sts, stubber = stubbed_sts(
        sts_answer("ASIAFIRSTFIRSTFIRST", dt.timedelta(minutes=5)),
        sts_answer("ASIASECONDSECONDSEC", dt.timedelta(hours=1)),
    )

    credentials = web_identity_credentials(
        sts,
        role_arn=ROLE_ARN,
        role_session_name="clusterra-console",
        web_identity_token=lambda: "the-oidc-token",
    )
    session = boto3_session_with(credentials, REGION)

    # Five minutes left is inside botocore's mandatory refresh window, so the next use renews.
    assert session.get_credentials().get_frozen_credentials().access_key == "ASIASECONDSECONDSEC"
    stubber.assert_no_pending_responses()


@pytest.mark.asyncio
async def test_web_identity_credentials_sign_a_working_terminal(agent):
    sts, _ = stubbed_sts(sts_answer("ASIAWEBIDENTITYKEY1", dt.timedelta(hours=1)))
    credentials = web_identity_credentials(
        sts,
        role_arn=ROLE_ARN,
        role_session_name="clusterra-console",
        web_identity_token=lambda: "the-oidc-token",
    )
    expected = Credentials(
        "ASIAWEBIDENTITYKEY1", "secret-for-ASIAWEBIDENTITYKEY1", "token-for-ASIAWEBIDENTITYKEY1"
    )
    session = agent.new_session(AgentBehaviour(require_sigv4=expected))
    command = login_command("alice", "/home/alice")
    stub = StubbedSsm(agent, session, command=command, reason="terminal for alice@example.com")
    manager = SessionManager(stub.client, credentials=credentials)
    transport = SsmTransport(
        manager, target=TARGET, command=command, reason="terminal for alice@example.com", proxy=None
    )

    await asyncio.wait_for(transport.start(80, 24), 5)
    try:
        await transport.send(b"echo signed\r")
        await OutputReader(transport.output()).until(b"\r\nsigned\r\n")
    finally:
        await transport.close("test finished")

    assert session.refused == []
    stub.stubber.assert_no_pending_responses()


# ---- control-plane answers --------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("code", "says"),
    [
        ("TargetNotConnected", "is not connected to Session Manager right now"),
        ("AccessDeniedException", "not allowed to open a Session Manager session"),
        ("ThrottlingException", "could not open a shell"),
    ],
)
async def test_a_refused_start_is_a_transport_error_a_person_can_read(code, says):
    client = ssm_client()
    stubber = Stubber(client)
    stubber.add_client_error("start_session", service_error_code=code, service_message="nope")
    stubber.activate()
    transport = SsmTransport(SessionManager(client), target=TARGET, command=login_command("alice"))

    with pytest.raises(TransportError, match=says):
        await transport.start(80, 24)

    assert says in transport.ended_reason
    assert TARGET in transport.ended_reason


@pytest.mark.asyncio
async def test_resume_reports_an_ended_session_as_none():
    client = ssm_client()
    stubber = Stubber(client)
    stubber.add_client_error("resume_session", service_error_code="DoesNotExistException")
    stubber.add_response("resume_session", {"SessionId": "s-1", "TokenValue": "", "StreamUrl": ""})
    stubber.add_client_error("resume_session", service_error_code="InternalServerError", http_status_code=500)
    stubber.activate()
    manager = SessionManager(client)

    assert await manager.resume("s-1") is None
    assert await manager.resume("s-1") is None
    with pytest.raises(client.exceptions.InternalServerError):
        await manager.resume("s-1")


@pytest.mark.asyncio
async def test_terminate_tolerates_an_already_ended_session():
    client = ssm_client()
    stubber = Stubber(client)
    stubber.add_client_error(
        "terminate_session", service_error_code="InternalServerError", http_status_code=500
    )
    stubber.activate()

    await SessionManager(client).terminate("s-1")

    stubber.assert_no_pending_responses()


# ---- retransmission timing --------------------------------------------------------------------------


def test_the_resend_timeout_follows_the_documented_formula():
    rtt = RttEstimator()
    assert (rtt.srtt, rtt.rttvar, rtt.rto) == (0.1, 0.0, INITIAL_RTO)

    rtt.observe(0.1)
    assert rtt.rto == pytest.approx(0.1 + 0.01)  # variance floor of 10 ms

    rtt.observe(0.5)
    assert rtt.rttvar == pytest.approx(0.1)
    assert rtt.srtt == pytest.approx(0.15)
    assert rtt.rto == pytest.approx(0.15 + 0.4)

    for _ in range(5):
        rtt.observe(30.0)
    assert rtt.rto == MAX_RTO
