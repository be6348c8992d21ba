"""SsmTransport end to end: a stubbed control plane and the data channel to an agent emulator over a PTY."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from moto import mock_aws
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from terminal.transports.base import TransportError
from terminal.transports.ssm import SessionManager, SsmTransport, login_command
from tests.support.ssm_agent import (
    TARGET,
    TEST_CREDENTIALS,
    AgentBehaviour,
    AgentEmulator,
    AgentSession,
    OutputReader,
    StubbedSsm,
)

COMMAND = login_command("alice", "/home/alice/project")
MARKED_SEQ = b"echo ST''ART; seq 1 %d; echo EN''D\r"


@dataclass
class Terminal:
    session: AgentSession
    stub: StubbedSsm
    transport: SsmTransport
    out: OutputReader

    async def wait_acknowledged(self, timeout: float = 5.0) -> None:
        channel = self.transport.channel
        assert channel is not None
        async with asyncio.timeout(timeout):
            while channel.unacknowledged:
                await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def terminal(
    agent: AgentEmulator,
    behaviour: AgentBehaviour | None = None,
    *,
    cols: int = 80,
    rows: int = 24,
    resumes: int = 0,
    resume_ends_session: bool = False,
    ready_fallback: float = 2.0,
) -> AsyncIterator[Terminal]:
    behaviour = behaviour or AgentBehaviour()
    # Every upgrade is checked unless a test says otherwise.
    behaviour = dataclasses.replace(behaviour, require_sigv4=behaviour.require_sigv4 or TEST_CREDENTIALS)
    session = agent.new_session(behaviour)
    stub = StubbedSsm(
        agent, session, command=COMMAND, resumes=resumes, resume_ends_session=resume_ends_session
    )
    manager = SessionManager(stub.client, credentials=TEST_CREDENTIALS)
    transport = SsmTransport(
        manager, target=TARGET, command=COMMAND, ready_fallback=ready_fallback, proxy=None
    )
    await asyncio.wait_for(transport.start(cols, rows), 5)
    try:
        yield Terminal(session, stub, transport, OutputReader(transport.output()))
    finally:
        await asyncio.wait_for(transport.close("test finished"), 5)
    stub.stubber.assert_no_pending_responses()
    assert session.protocol_errors == []
    assert session.rejected_frames == 0


def numbers_between_markers(output: bytes) -> list[int]:
    found = re.search(rb"\r\nSTART\r\n(.*?)\r\nEND\r\n", output, re.S)
    assert found, output
    return [int(line) for line in found.group(1).split(b"\r\n")]


@pytest.mark.asyncio
async def test_it_runs_echo_hello_in_a_real_pty(agent):
    async with terminal(agent) as term:
        # Typed at once: the client must hold it until the shell's first output, then send the size first.
        await term.transport.send(b"echo hello\r")
        output = await term.out.until(b"\r\nhello\r\n")

        assert b"$ echo hello" in output
        assert term.session.input_payload_types[0] == 3
        assert term.session.sizes == [(80, 24)]
        assert term.session.pty_input == b"echo hello\r"
        assert term.session.not_ready_rejections == 0
        assert term.session.handshake_responses == []


@pytest.mark.asyncio
async def test_it_opens_the_channel_with_the_token_and_a_signed_upgrade(agent):
    async with terminal(agent) as term:
        await term.out.until(b"$ ")

        (opening,) = term.session.openings
        assert list(opening) == [
            "MessageSchemaVersion",
            "RequestId",
            "TokenValue",
            "ClientId",
            "ClientVersion",
        ]
        assert opening["MessageSchemaVersion"] == "1.0"
        assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", opening["ClientVersion"])
        assert term.session.refused == []
        assert "Authorization" in term.session.upgrade_headers[0]
        assert term.session.upgrade_headers[0]["X-Amz-Security-Token"] == TEST_CREDENTIALS.token
        # The URL is requested verbatim: the raw '+' in the cell number is not re-encoded.
        assert term.session.upgrade_paths[0].endswith("cell-number=AAEAAcl+uSt/eRRa==")


@pytest.mark.asyncio
async def test_it_completes_the_handshake_before_sending_input(agent):
    behaviour = AgentBehaviour(handshake=True, customer_message="Welcome to the head node.")
    async with terminal(agent, behaviour) as term:
        await term.transport.send(b"echo hello\r")
        output = await term.out.until(b"\r\nhello\r\n")

        assert output.startswith(b"Welcome to the head node.\r\n")
        (response,) = term.session.handshake_responses
        assert response["ClientVersion"] == term.transport.channel.client_version
        assert response["ProcessedClientActions"] == [
            {"ActionType": "SessionType", "ActionStatus": 1, "ActionResult": None, "Error": ""}
        ]
        assert term.session.discarded_during_handshake == 0
        assert term.session.input_payload_types[0] == 3
        assert term.session.pty_input == b"echo hello\r"


@pytest.mark.asyncio
async def test_it_answers_a_duplicated_handshake_request_only_once(agent):
    async with terminal(agent, AgentBehaviour(handshake=True, duplicate_output=True)) as term:
        await term.transport.send(b"echo hello\r")
        await term.out.until(b"\r\nhello\r\n")

        assert len(term.session.handshake_responses) == 1
        assert term.transport.channel.duplicates_received > 0


@pytest.mark.asyncio
async def test_it_declines_kms_encryption_with_a_clear_reason(agent):
    # The key does not exist in (moto's) KMS, so no data key can be made (test_ssm_kms.py has the rest).
    behaviour = AgentBehaviour(handshake=True, kms_key_id="alias/session-key")
    with mock_aws():
        async with terminal(agent, behaviour) as term:
            await term.out.to_end()

        assert "KMS" in term.transport.ended_reason
        statuses = [a["ActionStatus"] for a in term.session.handshake_responses[0]["ProcessedClientActions"]]
        assert statuses == [1, 2]
        assert term.session.pty_input == b""


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "behaviour",
    [
        AgentBehaviour(duplicate_output=True),
        AgentBehaviour(reorder_output=True),
        AgentBehaviour(drop_output_every=3),
        AgentBehaviour(corrupt_output_every=3),
        AgentBehaviour(
            handshake=True,
            duplicate_output=True,
            reorder_output=True,
            drop_output_every=4,
            corrupt_output_every=5,
        ),
    ],
    ids=["duplicated", "reordered", "dropped", "corrupted", "all-at-once"],
)
async def test_it_delivers_the_agents_output_exactly_once_in_order(agent, behaviour):
    async with terminal(agent, behaviour) as term:
        await term.transport.send(MARKED_SEQ % 1500)
        output = await term.out.until(b"\r\nEND\r\n")

        assert numbers_between_markers(output) == list(range(1, 1501))
        faults = term.session
        injected = [
            faults.output_duplicated,
            faults.output_reordered,
            faults.output_dropped,
            faults.output_corrupted,
        ]
        assert any(injected)
        # A corrupt copy is dropped unacknowledged, and only the agent's resend gets it through.
        assert term.transport.channel.rejected_frames == faults.output_corrupted


@pytest.mark.asyncio
async def test_payload_types_without_terminal_meaning_are_acknowledged_and_skipped(agent):
    async with terminal(agent) as term:
        await term.out.until(b"$ ")
        await term.session.inject(12, b"EXIT_CODE: 0")
        await term.session.inject(99, b"from a future agent")
        await term.session.inject(11, b"stderr text\r\n")
        await term.transport.send(b"echo after\r")
        output = await term.out.until(b"\r\nafter\r\n")

        assert b"EXIT_CODE" not in output
        assert b"future" not in output
        assert b"stderr text\r\n" in output


@pytest.mark.asyncio
async def test_lost_acknowledgements_are_resent_without_duplicating_input(agent):
    async with terminal(agent, AgentBehaviour(drop_acks_every=2)) as term:
        await term.out.until(b"$ ")
        for key in b"echo $((6*7))\r":
            await term.transport.send(bytes([key]))
        output = await term.out.until(b"\r\n42\r\n")
        await term.wait_acknowledged()

        assert term.session.acks_dropped > 0
        assert term.transport.channel.retransmissions > 0
        assert term.session.duplicates_received > 0
        assert term.session.pty_input == b"echo $((6*7))\r"
        assert output.count(b"\r\n42\r\n") == 1


@pytest.mark.asyncio
async def test_a_cut_socket_is_resumed_without_losing_a_keystroke(agent):
    async with terminal(agent, AgentBehaviour(cut_on_input=b"two"), resumes=1) as term:
        await term.transport.send(b"echo one\r")
        await term.out.until(b"\r\none\r\n")
        # The agent swallows this message and drops the socket; the next one is typed while it is down.
        await term.transport.send(b"echo two\r")
        await term.transport.send(b"echo three\r")
        output = await term.out.until(b"\r\nthree\r\n")

        assert output.index(b"\r\ntwo\r\n") < output.index(b"\r\nthree\r\n")
        assert term.session.pty_input == b"echo one\recho two\recho three\r"
        assert term.session.cuts == 1
        assert term.transport.channel.reconnects == 1
        first, second = term.session.openings
        assert first["ClientId"] == second["ClientId"]
        assert first["RequestId"] != second["RequestId"]
        assert first["TokenValue"] != second["TokenValue"]
        # The resumed socket goes to the StreamUrl that ResumeSession returned, signed again.
        resumed = urlsplit(term.stub.resume_urls[0])
        assert term.session.upgrade_paths[1] == f"{resumed.path}?{resumed.query}"
        assert term.session.refused == []


@pytest.mark.asyncio
async def test_output_produced_while_the_socket_is_down_arrives_once_after_resume(agent):
    async with terminal(agent, resumes=1) as term:
        await term.transport.send(
            b"echo ST''ART; for i in $(seq 1 600); do echo $i; case $i in *00) sleep 0.1;; esac; done; "
            b"echo EN''D\r"
        )
        await term.out.until(b"\r\n150\r\n")
        term.session.cut()
        output = await term.out.until(b"\r\nEND\r\n")

        assert numbers_between_markers(output) == list(range(1, 601))
        assert term.transport.channel.reconnects == 1


@pytest.mark.asyncio
async def test_it_ends_when_resume_finds_the_session_over(agent):
    async with terminal(agent, resumes=1, resume_ends_session=True) as term:
        await term.out.until(b"$ ")
        term.session.cut()
        await term.out.to_end()

        assert "session has ended" in term.transport.ended_reason


@pytest.mark.asyncio
async def test_exiting_the_shell_ends_the_output_with_channel_closed(agent):
    async with terminal(agent) as term:
        await term.transport.send(b"exit\r")
        await term.out.to_end()

        assert term.session.channel_closed_sent == 1
        assert term.transport.ended_reason == "The shell on the head node ended."


@pytest.mark.asyncio
async def test_channel_closed_output_becomes_the_ended_reason(agent):
    timed_out = "Your session timed out due to inactivity and has been terminated."
    async with terminal(agent) as term:
        await term.out.until(b"$ ")
        await term.session.close_channel(timed_out)
        await term.out.to_end()

        assert term.transport.ended_reason == timed_out


@pytest.mark.asyncio
async def test_close_terminates_the_session(agent):
    async with terminal(agent) as term:
        await term.out.until(b"$ ")
        await term.transport.close("closed the browser tab")
        await term.out.to_end()

        term.stub.stubber.assert_no_pending_responses()
        assert term.transport.ended_reason == "closed the browser tab"
        async with asyncio.timeout(5):
            while not term.session.terminated:
                await asyncio.sleep(0.01)
        await term.transport.close("again")  # idempotent: no second TerminateSession


@pytest.mark.asyncio
async def test_a_resize_reaches_the_pty(agent):
    async with terminal(agent, cols=100, rows=30) as term:
        await term.transport.send(b"stty size\r")
        await term.out.until(b"\r\n30 100\r\n")
        await term.transport.resize(132, 43)
        await term.transport.resize(132, 43)
        await term.transport.send(b"stty size\r")
        await term.out.until(b"\r\n43 132\r\n")

        assert term.session.sizes == [(100, 30), (132, 43)]


@pytest.mark.asyncio
async def test_input_flows_after_the_fallback_when_the_command_prints_nothing(agent):
    async with terminal(agent, AgentBehaviour(command=("cat",)), ready_fallback=0.3) as term:
        await term.transport.send(b"ping\r")
        output = await term.out.until(b"ping\r\nping\r\n")

        assert output == b"ping\r\nping\r\n"
        # Sent blind once, then again after the first output in case the agent dropped the first one.
        assert term.session.sizes == [(80, 24), (80, 24)]


@pytest.mark.asyncio
async def test_input_refused_before_the_pty_exists_is_delivered_by_retransmission(agent):
    behaviour = AgentBehaviour(command=("cat",), shell_delay=0.4)
    async with terminal(agent, behaviour, ready_fallback=0.1) as term:
        await term.transport.send(b"ping\r")
        await term.out.until(b"ping\r\nping\r\n")

        assert term.session.not_ready_rejections > 0
        assert term.session.pty_input == b"ping\r"
        assert term.session.sizes[0] == (80, 24)


@pytest.mark.asyncio
async def test_input_waits_while_publication_is_paused(agent):
    async with terminal(agent) as term:
        await term.out.until(b"$ ")
        await term.session.publish(active=False)
        await asyncio.sleep(0.05)
        await term.transport.send(b"echo resumed\r")
        await asyncio.sleep(0.3)
        assert term.session.pty_input == b""

        await term.session.publish(active=True)
        await term.out.until(b"\r\nresumed\r\n")
        assert term.session.pty_input == b"echo resumed\r"


@pytest.mark.asyncio
async def test_a_refused_signature_fails_start_and_terminates_the_session(agent):
    session = agent.new_session(AgentBehaviour(require_sigv4=TEST_CREDENTIALS))
    stub = StubbedSsm(agent, session, command=COMMAND)
    wrong = TEST_CREDENTIALS.__class__(TEST_CREDENTIALS.access_key, "not-the-secret", TEST_CREDENTIALS.token)
    transport = SsmTransport(
        SessionManager(stub.client, credentials=wrong), target=TARGET, command=COMMAND, proxy=None
    )

    with pytest.raises(TransportError, match="Could not open the terminal connection"):
        await transport.start(80, 24)

    assert session.refused == ["signature does not match"]
    stub.stubber.assert_no_pending_responses()
    assert transport.ended_reason.startswith("Could not open the terminal connection")


@pytest.mark.asyncio
async def test_the_emulator_refuses_an_opening_frame_with_a_stale_token(agent):
    session = agent.new_session()
    opening = {
        "MessageSchemaVersion": "1.0",
        "RequestId": "6d8b3c1e-0000-4000-8000-000000000001",
        "TokenValue": "not-a-token-it-issued",
        "ClientId": "6d8b3c1e-0000-4000-8000-000000000002",
        "ClientVersion": "1.2.694.0",
    }
    async with connect(agent.stream_url(session), compression=None, proxy=None) as ws:
        await ws.send(json.dumps(opening))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)

    assert closed.value.rcvd.code == 1008
    assert session.refused == ["bad opening frame or token"]
