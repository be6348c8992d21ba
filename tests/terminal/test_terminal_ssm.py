"""The terminal socket through the SSM transport: a Stubber control plane, the agent emulator over a PTY."""

from __future__ import annotations

import asyncio

import boto3
import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async
from botocore.stub import Stubber
from moto import mock_aws

from accounts import posix
from accounts.models import User
from audit.models import AuditEvent
from clusterra_site.asgi import application
from clusters import headnode
from clusters.models import Cluster
from terminal import transports
from terminal.models import TerminalSession
from terminal.transports.ssm import SessionManager, login_command
from tests.support.fake_headnode import FakeHeadNode
from tests.support.ssm_agent import (
    REGION,
    TARGET,
    TEST_CREDENTIALS,
    AgentBehaviour,
    AgentEmulator,
    StubbedSsm,
)
from tests.support.terminal_support import (
    end_all_terminals,
    grant_terminal,
    open_page,
    session_cookie,
)

# The end-to-end tests are async and reach the database from worker threads, hence transaction=True.
end_to_end = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cluster(settings, monkeypatch, _no_connection_left_open):
    settings.CLUSTERRA_UID_MIN, settings.CLUSTERRA_UID_MAX = 60100, 60199
    # Provisioning on an SSM head node runs through SendCommand; a pretend head node answers here.
    monkeypatch.setattr(headnode, "run", FakeHeadNode())
    return Cluster.objects.create(
        slug="aws",
        name="AWS cluster",
        slurmrestd_url="http://127.0.0.1:9",
        has_accounting=False,
        transport=Cluster.Transport.SSM,
        ssm_instance_id=TARGET,
        aws_region=REGION,
    )


@pytest.fixture
def person(cluster):
    person = User.objects.create(username="alice", email="alice@corp.example")
    grant_terminal(person, cluster)
    return person


@pytest_asyncio.fixture
async def agent():
    async with AgentEmulator() as emulator:
        yield emulator
        await end_all_terminals()


@end_to_end
@pytest.mark.asyncio
async def test_a_shell_through_session_manager_end_to_end(agent, cluster, person, monkeypatch):
    name = await sync_to_async(lambda: posix.ensure_account(person).username)()
    cwd = f"/home/{name}/project"
    session = agent.new_session(AgentBehaviour(require_sigv4=TEST_CREDENTIALS))
    # Stubber checks StartSession exactly: the document, the login command as the person, the reason.
    stub = StubbedSsm(
        agent,
        session,
        command=login_command(name, cwd),
        reason=f"Clusterra terminal of alice as {name}",
    )
    monkeypatch.setattr(
        transports, "ssm_manager", lambda _: SessionManager(stub.client, credentials=TEST_CREDENTIALS)
    )
    cookie = await session_cookie(person)
    async with open_page(application, cluster.slug, cookie=cookie, cwd=cwd, cols=100, rows=30) as (
        _,
        _,
        page,
    ):
        status = await page.connected()
        assert status["message"] == f"Connected as {name} on AWS cluster."
        await page.run("echo ssm-$((6*7))", "ssm-42")
        await page.run("stty size", "30 100")
        await page.control({"type": "resize", "cols": 120, "rows": 40})
        await page.run("stty size", "40 120")
        await page.control({"type": "close"})
        closed = await page.until_control("closed")

    assert closed["code"] == "closed"
    async with asyncio.timeout(5):
        while not session.terminated:
            await asyncio.sleep(0.02)
    stub.stubber.assert_no_pending_responses()
    assert session.refused == []
    assert session.sizes == [(100, 30), (120, 40)]
    row = await sync_to_async(TerminalSession.objects.get)(person=person)
    assert (row.transport, row.transport_session_id, row.cwd) == ("ssm", session.session_id, cwd)
    assert row.end_reason == "closed"
    assert row.bytes_out == page.received_bytes
    opened = await sync_to_async(AuditEvent.objects.get)(action="terminal.opened")
    assert opened.details["transport_session_id"] == session.session_id


@end_to_end
@pytest.mark.asyncio
async def test_the_service_ending_the_session_is_shown_with_its_words(agent, cluster, person, monkeypatch):
    name = await sync_to_async(lambda: posix.ensure_account(person).username)()
    session = agent.new_session()
    stub = StubbedSsm(
        agent, session, command=login_command(name), reason=f"Clusterra terminal of alice as {name}"
    )
    monkeypatch.setattr(transports, "ssm_manager", lambda _: SessionManager(stub.client))
    cookie = await session_cookie(person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        await page.connected()
        await page.until_screen(b"$ ")
        await session.close_channel("Your session timed out due to inactivity and has been terminated.")
        closed = await page.until_control("closed")

    assert closed == {
        "type": "closed",
        "code": "shell_exited",
        "reason": "Your session timed out due to inactivity and has been terminated.",
        "exit_status": None,  # Session Manager does not say; the page shows it as any other end
    }


@end_to_end
@pytest.mark.asyncio
async def test_a_refused_start_session_is_explained(cluster, person, monkeypatch):
    client = boto3.client("ssm", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(client)
    stubber.add_client_error("start_session", service_error_code="TargetNotConnected", http_status_code=400)
    stubber.activate()
    monkeypatch.setattr(transports, "ssm_manager", lambda _: SessionManager(client))
    cookie = await session_cookie(person)
    async with open_page(application, cluster.slug, cookie=cookie) as (_, _, page):
        closed = await page.until_control("closed")

    assert closed["code"] == "transport"
    assert closed["reason"].startswith(
        f"The head node ({TARGET}) is not connected to Session Manager right now."
    )
    row = await sync_to_async(TerminalSession.objects.get)(person=person)
    assert (row.end_reason, row.end_message) == ("failed", closed["reason"])


def test_the_clusters_role_is_assumed_with_the_consoles_web_identity(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    token = tmp_path / "token"
    token.write_text("header.payload.signature\n")
    cluster = Cluster(
        slug="pcs", name="PCS", aws_region=REGION, ssm_role_arn="arn:aws:iam::123456789012:role/t"
    )
    transports.forget()
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    with pytest.raises(transports.TransportError, match="AWS_WEB_IDENTITY_TOKEN_FILE is not set"):
        transports.ssm_manager(cluster)

    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    with mock_aws():
        manager = transports.ssm_manager(cluster)
        assert transports.ssm_manager(cluster) is manager  # made once per region and role
    transports.forget()

    assert manager.region == REGION
    assert manager.credentials.method == "clusterra-web-identity"
    assert manager.credentials.get_frozen_credentials().token
