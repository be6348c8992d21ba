"""Per-person AWS identity: each terminal's Session Manager calls are signed by the person's own role session.

STS is botocore's Stubber on a real client, checking AssumeRole's parameters exactly. Session Manager's
control plane is answered on the wire instead: a `before-send` hook sees the request after botocore has
signed it, checks its SigV4 signature with this file's own verifier against the credentials STS handed
out, then answers with the agent emulator's session. The emulator checks the data channel's signed
upgrade against the same credentials, and runs a real shell behind it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from botocore.awsrequest import AWSResponse
from botocore.credentials import Credentials
from botocore.stub import Stubber
from moto import mock_aws

from accounts import posix
from accounts.models import User
from audit.models import AuditEvent
from clusterra_site.asgi import application
from clusters import aws, headnode
from clusters.models import Cluster
from terminal import transports
from terminal.models import TerminalSession
from terminal.transports.ssm import SessionManager
from tests.support.fake_headnode import FakeHeadNode
from tests.support.ssm_agent import REGION, TARGET, AgentBehaviour, AgentEmulator, AgentSession
from tests.support.terminal_support import (
    end_all_terminals,
    grant_terminal,
    open_page,
    session_cookie,
    ssm_cluster,
)

end_to_end = pytest.mark.django_db(transaction=True)

PERSON_ROLE = "arn:aws:iam::123456789012:role/clusterra-terminal"


# ---- Session Manager's control plane, answered after signing -----------------------------------


class _Raw(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


def sigv4_post_problem(request: Any, credentials: Credentials, service: str = "ssm") -> str | None:
    """Why this signed JSON POST is not signed by `credentials`, or None if it is (written from the spec)."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    auth = headers.get("authorization", "")
    if isinstance(auth, bytes):
        auth = auth.decode()
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 Authorization header"
    fields = dict(item.strip().split("=", 1) for item in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
    access_key, date, region, scope_service, _ = fields["Credential"].split("/")
    if access_key != credentials.access_key:
        return f"signed by {access_key}"
    token = headers.get("x-amz-security-token", "")
    token = token.decode() if isinstance(token, bytes) else token
    if token != credentials.token:
        return "missing or wrong X-Amz-Security-Token"
    parts = urlsplit(request.url)
    signed = fields["SignedHeaders"].split(";")
    if "x-amz-security-token" not in signed:
        return "the session token is not signed"

    def header(name: str) -> str:
        value = headers.get(name, parts.netloc if name == "host" else "")
        value = value.decode() if isinstance(value, bytes) else value
        return " ".join(value.split())

    body = request.body or b""
    body = body.encode() if isinstance(body, str) else body
    canonical = "\n".join(
        [
            request.method,
            parts.path or "/",
            parts.query,
            "".join(f"{name}:{header(name)}\n" for name in signed),
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{date}/{region}/{scope_service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", header("x-amz-date"), scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + credentials.secret_key).encode()
    for part in (date, region, scope_service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(
        hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), fields["Signature"]
    ):
        return "signature does not match"
    return None


class ControlPlane:
    """StartSession/ResumeSession/TerminateSession as Session Manager answers them, for signed requests only.

    Each person's credentials (as STS issued them) are registered; a call signed by anyone else is
    refused with AccessDeniedException, like IAM would for a principal without the policy.
    """

    def __init__(self, agent: AgentEmulator, loop: asyncio.AbstractEventLoop) -> None:
        self.agent = agent
        self.loop = loop
        self.people: dict[str, tuple[Credentials, str]] = {}  # access key -> (credentials, posix user)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (operation, access key, body)
        self.refused: list[str] = []
        self.sessions: dict[str, AgentSession] = {}

    def allow(self, credentials: Credentials, posix_user: str) -> None:
        self.people[credentials.access_key] = (credentials, posix_user)

    def answer(self, request: Any, **_: Any) -> AWSResponse:
        target = request.headers.get("X-Amz-Target", b"")
        operation = (target.decode() if isinstance(target, bytes) else target).rpartition(".")[2]
        body = json.loads(request.body or b"{}")
        auth = request.headers.get("Authorization", b"")
        auth = auth.decode() if isinstance(auth, bytes) else auth
        access_key = auth.partition("Credential=")[2].partition("/")[0]
        known = self.people.get(access_key)
        problem = "unknown access key" if known is None else sigv4_post_problem(request, known[0])
        self.calls.append((operation, access_key, body))
        if problem is not None:
            self.refused.append(f"{operation}: {problem}")
            return self._reply(400, {"__type": "AccessDeniedException", "message": problem})
        credentials, posix_user = known
        if operation == "StartSession":
            # Session Manager names a role session's sessions <role session name>-<random>.
            session = self._on_loop(
                lambda: self.agent.new_session(
                    AgentBehaviour(require_sigv4=credentials), prefix=f"clusterra-{posix_user}"
                )
            )
            self.sessions[session.session_id] = session
            return self._reply(
                200,
                {
                    "SessionId": session.session_id,
                    "TokenValue": session.new_token(),
                    "StreamUrl": self.agent.stream_url(session),
                },
            )
        session = self.sessions.get(body.get("SessionId", ""))
        if session is None or not session.session_id.startswith(f"clusterra-{posix_user}-"):
            # The role's policy: ResumeSession/TerminateSession only on session/clusterra-<own user>-*.
            self.refused.append(f"{operation}: not this person's session")
            return self._reply(400, {"__type": "AccessDeniedException", "message": "not your session"})
        if operation == "TerminateSession":
            self.loop.call_soon_threadsafe(session.terminate)
            return self._reply(200, {"SessionId": session.session_id})
        if operation == "ResumeSession":
            return self._reply(
                200,
                {
                    "SessionId": session.session_id,
                    "TokenValue": session.new_token(),
                    "StreamUrl": self.agent.stream_url(session),
                },
            )
        return self._reply(400, {"__type": "InvalidAction", "message": operation})

    def _on_loop(self, make: Any) -> AgentSession:
        # boto3 runs in a worker thread; the agent's sessions live on the event loop.
        async def made() -> AgentSession:
            return make()

        return asyncio.run_coroutine_threadsafe(made(), self.loop).result(5)

    def signed_by(self, operation: str) -> list[str]:
        return [key for op, key, _ in self.calls if op == operation]

    @staticmethod
    def _reply(status: int, body: dict[str, Any]) -> AWSResponse:
        raw = json.dumps(body).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": secrets.token_hex(8)}
        return AWSResponse("https://ssm.invalid/", status, headers, _Raw(raw))


# ---- STS, stubbed with its exact parameters ----------------------------------------------------


def issued() -> Credentials:
    return Credentials(
        "ASIA" + secrets.token_hex(8).upper(),
        secrets.token_urlsafe(30),
        "IQoJb3JpZ2luX2VjE" + secrets.token_hex(40),
    )


class StubbedSts:
    """A real STS client with Stubber answers for AssumeRole; every call checked parameter by parameter."""

    def __init__(self) -> None:
        self.client = boto3.client(
            "sts", region_name=REGION, aws_access_key_id="AKIDCONSOLE", aws_secret_access_key="console-secret"
        )
        self.stubber = Stubber(self.client)
        self.stubber.activate()

    def expect(
        self, person: User, posix_user: str, *, expires_in: dt.timedelta = dt.timedelta(hours=1)
    ) -> Credentials:
        credentials = issued()
        self.stubber.add_response(
            "assume_role",
            {
                "Credentials": {
                    "AccessKeyId": credentials.access_key,
                    "SecretAccessKey": credentials.secret_key,
                    "SessionToken": credentials.token,
                    "Expiration": aws._now() + expires_in,
                },
                "AssumedRoleUser": {
                    "AssumedRoleId": f"AROAEXAMPLE:clusterra-{posix_user}",
                    "Arn": f"arn:aws:sts::123456789012:assumed-role/terminal/clusterra-{posix_user}",
                },
                "SourceIdentity": person.email,
            },
            expected_params={
                "RoleArn": PERSON_ROLE,
                "RoleSessionName": f"clusterra-{posix_user}",
                "SourceIdentity": person.email,
                "Tags": [
                    {"Key": "clusterra:person", "Value": person.email},
                    {"Key": "clusterra:posix-user", "Value": posix_user},
                ],
                "DurationSeconds": 3600,
            },
        )
        return credentials


# ---- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def cluster(settings, monkeypatch, _no_connection_left_open):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60200, 60299
    monkeypatch.setattr(headnode, "run", FakeHeadNode())
    return ssm_cluster(instance_id=TARGET, region=REGION, ssm_person_role_arn=PERSON_ROLE)


def new_person(cluster: Cluster, name: str) -> tuple[User, str]:
    person = User.objects.create(username=name, email=f"{name}@corp.example")
    grant_terminal(person, cluster)
    return person, posix.ensure_account(person).username


@pytest.fixture
def people(cluster):
    return [new_person(cluster, "alice"), new_person(cluster, "bob")]


@pytest.fixture(autouse=True)
def preferences(monkeypatch):
    """The account's Session Manager preferences, read with the console's credentials: idle after 5 min."""
    client = boto3.client(
        "ssm", region_name=REGION, aws_access_key_id="AKIDCONSOLE", aws_secret_access_key="s"
    )
    stubber = Stubber(client)
    content = {
        "schemaVersion": "1.0",
        "sessionType": "Standard_Stream",
        "inputs": {"idleSessionTimeout": "5"},
    }
    stubber.add_response(
        "get_document",
        {"Name": "SSM-SessionManagerRunShell", "Content": json.dumps(content), "DocumentFormat": "JSON"},
        expected_params={"Name": "SSM-SessionManagerRunShell", "DocumentFormat": "JSON"},
    )
    stubber.activate()
    transports.forget()
    monkeypatch.setattr(transports, "ssm_manager", lambda cluster: SessionManager(client))
    yield stubber
    transports.forget()


@pytest.fixture
def sts(monkeypatch):
    stub = StubbedSts()
    aws.forget()
    monkeypatch.setattr(aws, "console_sts_client", lambda cluster: stub.client)
    yield stub
    aws.forget()


@pytest_asyncio.fixture
async def plane(monkeypatch):
    async with AgentEmulator() as agent:
        control = ControlPlane(agent, asyncio.get_running_loop())
        real = aws.boto3_session_with

        def with_control_plane(credentials: Any, region: str) -> boto3.Session:
            session = real(credentials, region)
            session.events.register("before-send.ssm", control.answer)
            return session

        monkeypatch.setattr(aws, "boto3_session_with", with_control_plane)
        yield control
        await end_all_terminals()


async def a_terminal(person: User, cluster: Cluster, marker: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Open the person's terminal page, run a command in the shell, close it; the status and the close."""
    cookie = await session_cookie(person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        status = await page.connected()
        await page.run(f"echo {marker}-$((6*7))", f"{marker}-42")
        await page.control({"type": "close"})
        return status, await page.until_control("closed")


async def until_terminated(session: AgentSession) -> None:
    async with asyncio.timeout(5):
        while not session.terminated:
            await asyncio.sleep(0.02)


# ---- tests ------------------------------------------------------------------------------------


@end_to_end
@pytest.mark.asyncio
async def test_a_terminal_runs_on_the_persons_own_role_session(cluster, people, sts, plane, caplog, capfd):
    (alice, alice_user), _ = people
    # Every logger at DEBUG, botocore's too: neither the secret key nor the session token may reach a log.
    for name in ["", *logging.root.manager.loggerDict]:
        caplog.set_level(logging.DEBUG, logger=name)
    credentials = sts.expect(alice, alice_user)
    plane.allow(credentials, alice_user)

    status, closed = await a_terminal(alice, cluster, "alice")

    assert closed["code"] == "closed"
    # Session Manager's preferences end an idle session after 5 minutes, before the console's 20.
    assert status["idle_minutes"] == 5
    (session,) = plane.sessions.values()
    await until_terminated(session)
    sts.stubber.assert_no_pending_responses()
    assert plane.refused == []
    assert session.refused == []  # the data channel's upgrade was signed with alice's keys too
    assert session.session_id.startswith(f"clusterra-{alice_user}-")
    assert plane.signed_by("StartSession") == [credentials.access_key]
    assert plane.signed_by("TerminateSession") == [credentials.access_key]
    (_, _, start) = plane.calls[0]
    assert start["Target"] == TARGET
    assert start["DocumentName"] == "AWS-StartInteractiveCommand"
    row = await sync_to_async(TerminalSession.objects.get)(person=alice)
    assert (row.transport_session_id, row.end_reason) == (session.session_id, "closed")

    out, err = capfd.readouterr()
    lines = [r.getMessage() for r in caplog.records] + [r.exc_text or "" for r in caplog.records]
    lines += (out + err).splitlines()
    audit = await sync_to_async(lambda: [f"{e.message} {e.details}" for e in AuditEvent.objects.all()])()
    leaks = [
        f"{label} in {where}"
        for label, secret in (("secret key", credentials.secret_key), ("session token", credentials.token))
        for where, text in [("log", "\n".join(lines)), ("audit", "\n".join(audit))]
        if secret in text
    ]
    assert leaks == []
    assert len(caplog.records) > 50, "DEBUG logging did not reach the capture"
    assert any(r.name.startswith("botocore") for r in caplog.records), "botocore's DEBUG lines were not seen"
    print(
        f"per-person AWS identity: StartSession and TerminateSession of {alice.email}'s terminal signed by "
        f"the role session clusterra-{alice_user} (SourceIdentity {alice.email}), data channel upgrade "
        f"signed by it too; 0 of 2 secrets in {len(lines)} DEBUG log lines"
    )


@end_to_end
@pytest.mark.asyncio
async def test_two_people_get_two_role_sessions_and_one_assume_role_each(cluster, people, sts, plane):
    (alice, alice_user), (bob, bob_user) = people
    alice_keys = sts.expect(alice, alice_user)
    plane.allow(alice_keys, alice_user)
    bob_keys = sts.expect(bob, bob_user)
    plane.allow(bob_keys, bob_user)

    await a_terminal(alice, cluster, "a1")
    await a_terminal(bob, cluster, "b1")
    # Alice's second terminal reuses her cached credentials: the stub holds no third AssumeRole.
    await a_terminal(alice, cluster, "a2")

    sts.stubber.assert_no_pending_responses()
    for session in plane.sessions.values():
        await until_terminated(session)
    assert plane.refused == []
    assert plane.signed_by("StartSession") == [
        alice_keys.access_key,
        bob_keys.access_key,
        alice_keys.access_key,
    ]
    owners = sorted(s.session_id.rsplit("-", 1)[0] for s in plane.sessions.values())
    assert owners == sorted([f"clusterra-{alice_user}", f"clusterra-{alice_user}", f"clusterra-{bob_user}"])
    print(
        "per-person AWS identity: 2 people, 3 terminals, 2 AssumeRole calls (one per person), "
        "each StartSession signed by its own person's role session"
    )


@end_to_end
@pytest.mark.asyncio
async def test_credentials_are_assumed_again_near_their_expiry(cluster, people, sts, plane, monkeypatch):
    (alice, alice_user), _ = people
    first = sts.expect(alice, alice_user)
    plane.allow(first, alice_user)
    await a_terminal(alice, cluster, "early")
    for session in plane.sessions.values():
        await until_terminated(session)

    # 56 minutes later 4 are left, under the 5 kept in reserve: the next terminal gets new credentials.
    start = aws._now()
    monkeypatch.setattr(aws, "_now", lambda: start + dt.timedelta(minutes=56))
    second = sts.expect(alice, alice_user, expires_in=dt.timedelta(minutes=60 + 56))
    plane.allow(second, alice_user)
    await a_terminal(alice, cluster, "late")

    sts.stubber.assert_no_pending_responses()
    assert plane.signed_by("StartSession") == [first.access_key, second.access_key]
    assert plane.refused == []


@end_to_end
@pytest.mark.asyncio
async def test_a_deactivated_person_gets_no_credentials_and_no_terminal(cluster, people, sts, plane):
    (alice, alice_user), _ = people
    credentials = sts.expect(alice, alice_user)
    plane.allow(credentials, alice_user)
    held = await asyncio.to_thread(aws.person_credentials, cluster, alice, alice_user)

    alice.is_active = False
    await sync_to_async(alice.save)(update_fields=["is_active"])

    # The save dropped her cached credentials, and the ones handed out are not renewed.
    assert aws._held == {}
    with pytest.raises(aws.PersonCredentialsError, match="offboarded"):
        await asyncio.to_thread(held._refresh_using)
    with pytest.raises(aws.PersonCredentialsError, match=r"alice@corp\.example is deactivated"):
        await asyncio.to_thread(aws.person_credentials, cluster, alice, alice_user)
    # The transport says so in a sentence, before anything reaches AWS.
    with pytest.raises(transports.TransportError, match="deactivated: no AWS credentials"):
        await asyncio.to_thread(
            transports.for_cluster, cluster, posix_user=alice_user, cwd="", reason="test", person=alice
        )
    # Her terminal page opens no shell.
    cookie = await session_cookie(alice)
    async with open_page(application, cluster.slug, cookie=cookie) as (connected, _, page):
        if connected:
            await page.until_closed()
    sts.stubber.assert_no_pending_responses()
    assert plane.calls == []
    assert not await sync_to_async(TerminalSession.objects.filter(person=alice).exists)()


@end_to_end
@pytest.mark.asyncio
async def test_sts_access_denied_is_told_in_a_sentence(cluster, people, sts, plane):
    (alice, _), _ = people
    sts.stubber.add_client_error(
        "assume_role",
        service_error_code="AccessDenied",
        service_message="User: arn:aws:sts::123456789012:assumed-role/console/c is not authorized to "
        "perform: sts:TagSession",
        http_status_code=403,
    )
    cookie = await session_cookie(alice)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        closed = await page.until_control("closed")

    assert closed["code"] == "transport"
    assert closed["reason"].startswith(
        "AWS refused to issue alice@corp.example's terminal credentials on AWS cluster (AccessDenied: "
    )
    assert f"sts:TagSession and sts:SetSourceIdentity on {PERSON_ROLE}" in closed["reason"]
    assert plane.calls == []
    row = await sync_to_async(TerminalSession.objects.get)(person=alice)
    assert (row.end_reason, row.end_message) == ("failed", closed["reason"])


def test_the_person_role_is_validated_and_only_for_ssm(db):
    from django.core.exceptions import ValidationError

    good = Cluster(
        slug="x",
        name="X",
        slurmrestd_url="http://127.0.0.1:9",
        jwt_key_ref="/k",
        transport="ssm",
        ssm_instance_id=TARGET,
        aws_region=REGION,
        ssm_person_role_arn="arn:aws:iam::123456789012:role/path/clusterra-terminal",
    )
    good.full_clean()
    with pytest.raises(ValidationError, match="not an IAM role ARN"):
        Cluster(
            **{**_fields(good), "ssm_person_role_arn": "arn:aws:iam::123456789012:user/alice"}
        ).full_clean()
    with pytest.raises(ValidationError, match="only applies to the SSM transport"):
        Cluster(**{**_fields(good), "transport": "local"}).full_clean()


def _fields(cluster: Cluster) -> dict[str, Any]:
    return {f.name: getattr(cluster, f.name) for f in Cluster._meta.fields if f.name != "id"}


def test_names_fit_what_sts_accepts():
    assert aws.person_session_name("ct1a2b") == "clusterra-ct1a2b"
    assert aws.source_identity("alice@corp.example", "ct1a2b") == "alice@corp.example"
    # Outside SourceIdentity's characters (or over 64 of them): the role session name stands in.
    assert aws.source_identity("o'brien@corp.example", "ct1a2b") == "clusterra-ct1a2b"
    assert aws.source_identity("a" * 60 + "@corp.example", "ct1a2b") == "clusterra-ct1a2b"
    assert aws.person_tags("o'brien@corp.example", "ct1a2b")[0] == {
        "Key": "clusterra:person",
        "Value": "o_brien@corp.example",
    }


def test_assume_role_is_made_with_the_consoles_role_for_the_cluster(tmp_path, monkeypatch):
    # moto's STS: the cluster's role through the console's web identity, then the person's role from it.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    token = tmp_path / "token"
    token.write_text("header.payload.signature\n")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    cluster = Cluster(
        pk=7,
        slug="pcs",
        name="PCS",
        transport="ssm",
        ssm_instance_id=TARGET,
        aws_region=REGION,
        ssm_role_arn="arn:aws:iam::123456789012:role/clusterra-console",
        ssm_person_role_arn=PERSON_ROLE,
    )
    alice = User(pk=9, username="alice", email="alice@corp.example", is_active=True)
    signed: dict[str, list[str]] = {}
    real = aws.boto3_session_with

    def recording(credentials: Any, region: str) -> boto3.Session:
        session = real(credentials, region)

        def keep(request: Any, event_name: str, **_: Any) -> None:
            auth = request.headers.get("Authorization", b"")
            auth = auth.decode() if isinstance(auth, bytes) else auth
            key = auth.partition("Credential=")[2].partition("/")[0]
            body = request.body or b""
            signed.setdefault(key, []).append(body.decode() if isinstance(body, bytes) else body)

        session.events.register("before-send.sts", keep)
        return session

    monkeypatch.setattr(aws, "boto3_session_with", recording)
    aws.forget()
    try:
        with mock_aws():
            person = aws.person_session(cluster, alice, "ct1a2b")
            who = person.client("sts", region_name=REGION).get_caller_identity()
            console = aws.console_sts_client(cluster).get_caller_identity()
    finally:
        aws.forget()

    assert who["Arn"] == "arn:aws:sts::123456789012:assumed-role/clusterra-terminal/clusterra-ct1a2b"
    assert console["Arn"] == "arn:aws:sts::123456789012:assumed-role/clusterra-console/clusterra-pcs"
    # The AssumeRole call and the console's own GetCallerIdentity were signed by the same (console role) key.
    (console_key,) = [key for key, bodies in signed.items() if any("Action=AssumeRole&" in b for b in bodies)]
    assert console_key != "testing"
    assert any("Action=GetCallerIdentity" in b for b in signed[console_key])
    assumed = next(b for b in signed[console_key] if "Action=AssumeRole&" in b)
    assert "SourceIdentity=alice%40corp.example" in assumed
    assert "RoleSessionName=clusterra-ct1a2b" in assumed
