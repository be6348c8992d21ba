"""KMS-encrypted Session Manager sessions: the client's data key, sealing and challenge, against the emulator.

Both sides reach KMS through boto3 and moto, with moto's IAM checks on: the console's principal may only
kms:GenerateDataKey and the head node's only kms:Decrypt, each call signed with that principal's keys.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from moto import mock_aws, settings
from moto.core.authorization import ActionAuthenticatorMixin

from terminal.transports.ssm import SessionManager, SsmTransport, login_command
from terminal.transports.ssm.kms import DataKeys, KmsError
from tests.support.ssm_agent import (
    KMS_ENCRYPTED_NOTICE,
    REGION,
    TARGET,
    AgentBehaviour,
    AgentEmulator,
    AgentSession,
    OutputReader,
    StubbedSsm,
    Wire,
    unpack,
)

COMMAND = login_command("alice", "/home/alice")
TYPED = b"echo kms-$((6*7))\r"
SHOWN = b"kms-42"
BULK = b"echo ST''ART; seq 1 400; echo EN''D\r"
AGENT_PATIENCE = 15.0  # the agent's wait for the handshake response (docs/ssm-data-channel.md §5.3)


@dataclass
class Aws:
    key_arn: str
    console: Credentials  # the principal that opens terminals: kms:GenerateDataKey only
    head_node: Credentials  # the instance role: kms:Decrypt only
    no_kms: Credentials  # a terminal role that was never given the key


@contextlib.contextmanager
def _iam_enforced() -> Iterator[None]:
    # moto checks signatures and IAM policies from the next request on (moto's own switch, kept tidy).
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count
    settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = 0, 0
    try:
        yield
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT, ActionAuthenticatorMixin.request_count = saved


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        setup = {"region_name": REGION, "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        key_arn = boto3.client("kms", **setup).create_key(Description="Session Manager sessions")[
            "KeyMetadata"
        ]["Arn"]

        def principal(name: str, actions: list[str]) -> Credentials:
            iam.create_user(UserName=name)
            policy = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
            }
            iam.put_user_policy(UserName=name, PolicyName="terminal", PolicyDocument=json.dumps(policy))
            key = iam.create_access_key(UserName=name)["AccessKey"]
            return Credentials(key["AccessKeyId"], key["SecretAccessKey"])

        found = Aws(
            key_arn,
            console=principal("clusterra-console", ["kms:GenerateDataKey"]),
            head_node=principal("head-node", ["kms:Decrypt"]),
            no_kms=principal("clusterra-person-without-kms", ["ssm:StartSession"]),
        )
        with _iam_enforced():
            yield found


@dataclass
class Terminal:
    session: AgentSession
    transport: SsmTransport
    out: OutputReader


@contextlib.asynccontextmanager
async def kms_terminal(
    agent: AgentEmulator,
    aws: Aws,
    behaviour: AgentBehaviour,
    *,
    credentials: Credentials | None = None,
    agent_instance: str = TARGET,
) -> AsyncIterator[Terminal]:
    credentials = credentials or aws.console
    behaviour = dataclasses.replace(
        behaviour,
        require_sigv4=credentials,
        kms_credentials=behaviour.kms_credentials or aws.head_node,
        capture_wire=True,
    )
    session = agent.new_session(behaviour, target=agent_instance)
    stub = StubbedSsm(agent, session, command=COMMAND, credentials=credentials)
    # The session's principal, exactly as the console builds it: KMS must be called with these keys.
    manager = SessionManager(stub.client, credentials=credentials)
    transport = SsmTransport(manager, target=TARGET, command=COMMAND, proxy=None)
    await asyncio.wait_for(transport.start(80, 24), 5)
    try:
        yield Terminal(session, transport, OutputReader(transport.output()))
    finally:
        await asyncio.wait_for(transport.close("test finished"), 5)
    stub.stubber.assert_no_pending_responses()
    assert session.protocol_errors == []
    assert session.rejected_frames == 0
    assert session.refused == []


def kms_behaviour(aws: Aws, **knobs: object) -> AgentBehaviour:
    return AgentBehaviour(handshake=True, kms_key_id=aws.key_arn, **knobs)


def frames(session: AgentSession, direction: str) -> list[Wire]:
    """Each stream message once (a resend repeats the same bytes), in sequence order."""
    kind = "input_stream_data" if direction == "in" else "output_stream_data"
    unique: dict[int, Wire] = {}
    for way, raw in session.wire:
        if way == direction:
            wire = unpack(raw)
            if wire.type == kind:
                unique.setdefault(wire.seq, wire)
    return [unique[seq] for seq in sorted(unique)]


def kms_action(session: AgentSession) -> dict:
    (response,) = session.handshake_responses
    (action,) = [a for a in response["ProcessedClientActions"] if a["ActionType"] == "KMSEncryption"]
    return action


def data_key_as_the_head_node_sees_it(aws: Aws, session: AgentSession) -> bytes:
    blob = base64.b64decode(kms_action(session)["ActionResult"]["KMSCipherTextKey"])
    kms = boto3.client(
        "kms",
        region_name=REGION,
        aws_access_key_id=aws.head_node.access_key,
        aws_secret_access_key=aws.head_node.secret_key,
    )
    (context,) = session.kms_contexts
    return kms.decrypt(CiphertextBlob=blob, EncryptionContext=context, KeyId=aws.key_arn)["Plaintext"]


def open_sealed(key: bytes, payload: bytes) -> bytes:
    return AESGCM(key).decrypt(payload[:12], payload[12:], None)


@pytest.mark.asyncio
async def test_a_kms_session_is_typed_into_and_read_back_with_every_payload_sealed(agent, aws):
    started = time.monotonic()
    async with kms_terminal(agent, aws, kms_behaviour(aws, require_challenge=True)) as term:
        await term.transport.send(TYPED)
        output = await term.out.until(b"\r\n" + SHOWN + b"\r\n", timeout=10)
        opened = time.monotonic() - started
        await term.transport.resize(100, 30)
        await term.transport.send(b"stty size\r")
        await term.out.until(b"\r\n30 100\r\n")
        await term.transport.send(BULK)
        output = await term.out.until(b"\r\nEND\r\n", timeout=10)
        channel = term.transport.channel
        session = term.session

    assert output.startswith(KMS_ENCRYPTED_NOTICE.encode() + b"\r\n")
    assert session.pty_input == TYPED + b"stty size\r" + BULK
    found = re.search(rb"\r\nSTART\r\n(.*?)\r\nEND\r\n", output, re.S)
    assert found
    assert [int(n) for n in found.group(1).split(b"\r\n")] == list(range(1, 401))
    assert session.sizes == [(80, 24), (100, 30)]
    # The handshake: a data key under the session's context, the agent's challenge in it, both proven.
    (request,) = [json.loads(w.payload) for w in frames(session, "out") if w.payload_type == 5]
    challenge = request["RequestedClientActions"][1]["ActionParameters"]["Challenge"]
    action = kms_action(session)
    assert action["ActionStatus"] == 1
    assert action["Error"] == ""
    assert action["ActionResult"]["ChallengeAcknowledgement"] is True
    assert session.kms_contexts == [
        {
            "aws:ssm:SessionId": session.session_id,
            "aws:ssm:TargetId": TARGET,
            "aws:ssm:RandomChallenge": challenge,
        }
    ]
    assert session.kms_errors == []
    assert session.challenge_verified
    assert [w.payload_type for w in frames(session, "in")][:2] == [6, 9]

    # The wire: nothing typed or shown is readable anywhere, in any frame, in either direction.
    for _, raw in session.wire:
        for needle in (b"kms-$((6*7))", SHOWN, b"stty size", b"30 100"):
            assert needle not in raw
    key = data_key_as_the_head_node_sees_it(aws, session)
    client_half, agent_half = key[32:], key[:32]
    sent = [w for w in frames(session, "in") if w.payload_type == 1]
    shown = [w for w in frames(session, "out") if w.payload_type == 1]
    sizes = [w for w in frames(session, "in") if w.payload_type == 3]
    # Keystrokes: nonce ‖ AES-256-GCM(client half) ‖ tag, 28 bytes more than what was typed.
    typed = [open_sealed(client_half, w.payload) for w in sent]
    assert b"".join(typed) == session.pty_input
    assert [len(w.payload) for w in sent] == [12 + len(t) + 16 for t in typed]
    # Output: sealed with the agent's half and a counter nonce (little-endian, one step per message).
    assert SHOWN in b"".join(open_sealed(agent_half, w.payload) for w in shown)
    nonces = [int.from_bytes(w.payload[:12], "little") for w in shown]
    assert all(b - a == 1 for a, b in itertools.pairwise(nonces))
    # Size stays plain JSON, as the agent reads it.
    assert [json.loads(w.payload) for w in sizes] == [{"cols": 80, "rows": 24}, {"cols": 100, "rows": 30}]
    assert channel.sealed_sent == len(sent)
    # The last prompt may still be on its way when the terminal closes.
    assert 0 < channel.sealed_received <= len(shown) <= session.sealed_out
    # Every Output payload opened above under its GCM tag, so none went out as it was; and none carries
    # its own plaintext either.
    pairs = [(w, open_sealed(client_half, w.payload)) for w in sent]
    pairs += [(w, open_sealed(agent_half, w.payload)) for w in shown]
    plaintext = [w for w, text in pairs if text and text in w.payload]
    assert plaintext == []
    print(
        f"KMS session: handshake {channel.handshake_seconds * 1000:.0f} ms "
        f"(GenerateDataKey {channel.kms_seconds * 1000:.0f} ms, challenge answered), "
        f"first command answered {opened * 1000:.0f} ms after StartSession, "
        f"{len(sent) + len(shown)} Output frames sealed "
        f"({len(sent)} in, {len(shown)} out), {len(plaintext)} plaintext, {len(sizes)} Size frames plain JSON"
    )


@pytest.mark.asyncio
async def test_an_agent_that_offers_no_challenge_gets_a_context_without_one(agent, aws):
    async with kms_terminal(agent, aws, kms_behaviour(aws, context_challenge=False)) as term:
        await term.transport.send(TYPED)
        await term.out.until(b"\r\n" + SHOWN + b"\r\n", timeout=10)
        session = term.session

    assert "ChallengeAcknowledgement" not in kms_action(session)["ActionResult"]
    assert session.kms_contexts == [{"aws:ssm:SessionId": session.session_id, "aws:ssm:TargetId": TARGET}]
    # The encryption challenge of the handshake itself is still asked and answered.
    assert session.challenge_verified
    assert session.sealed_in == 1


def test_moto_decrypts_a_data_key_only_under_the_same_encryption_context(aws):
    def client(credentials: Credentials):
        return boto3.client(
            "kms",
            region_name=REGION,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
        )

    context = {"aws:ssm:SessionId": "clusterra-alice-0123", "aws:ssm:TargetId": TARGET}
    made = client(aws.console).generate_data_key(
        KeyId=aws.key_arn, NumberOfBytes=64, EncryptionContext=context
    )
    head_node = client(aws.head_node)

    assert (
        head_node.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=context)["Plaintext"]
        == (made["Plaintext"])
    )
    for wrong in ({**context, "aws:ssm:TargetId": "i-0fffffffffffffff0"}, {}):
        with pytest.raises(ClientError) as refused:
            head_node.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=wrong)
        assert refused.value.response["Error"]["Code"] == "InvalidCiphertextException"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("problem", "error"),
    [("another-instance", "InvalidCiphertextException"), ("no-kms-decrypt", "ClientError")],
)
async def test_a_head_node_that_cannot_decrypt_the_key_ends_the_session_with_the_key_named(
    agent, aws, problem, error
):
    if problem == "another-instance":
        # The agent answering is not the instance StartSession named: its context differs.
        behaviour, instance = kms_behaviour(aws), "i-0fffffffffffffff0"
    else:
        # The instance role was never given kms:Decrypt on the key.
        behaviour, instance = kms_behaviour(aws, kms_credentials=aws.no_kms), TARGET
    async with kms_terminal(agent, aws, behaviour, agent_instance=instance) as term:
        await term.out.to_end(timeout=AGENT_PATIENCE)
        session = term.session

    (failure,) = session.kms_errors
    assert failure.startswith(error)
    if problem == "no-kms-decrypt":
        assert "kms:Decrypt" in failure  # moto's IAM check, with the head node's own keys
    assert term.transport.ended_reason == (
        "Encountered error while initiating handshake. It ended during the KMS handshake: the head node "
        f"could not use the key {aws.key_arn}. Its instance role needs kms:Decrypt on that key, and the "
        "session must target the instance itself."
    )
    assert session.pty_input == b""


@pytest.mark.asyncio
async def test_without_kms_permission_the_terminal_ends_with_a_sentence_naming_key_and_permission(agent, aws):
    started = time.monotonic()
    async with kms_terminal(agent, aws, kms_behaviour(aws), credentials=aws.no_kms) as term:
        output = await term.out.to_end(timeout=AGENT_PATIENCE)
        ended_after = time.monotonic() - started
        session = term.session

    reason = term.transport.ended_reason
    assert reason.startswith(f"Session Manager requires KMS encryption with the key {aws.key_arn}, but")
    assert "not allowed kms:GenerateDataKey" in reason
    assert ended_after < AGENT_PATIENCE
    # The agent was told, in time, with the same words; it never got a key to decrypt.
    action = kms_action(session)
    assert (action["ActionStatus"], action["ActionResult"], action["Error"]) == (2, None, reason)
    assert session.handshake_failure.startswith("KMSEncryption failed on client")
    assert session.kms_contexts == []
    assert session.pty_input == b""
    assert output == b""
    print(f"KMS session: refused without kms:GenerateDataKey in {ended_after * 1000:.0f} ms, key named")


@pytest.mark.asyncio
async def test_a_disabled_key_is_named_in_the_sentence():
    kms = boto3.client("kms", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    key = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    with Stubber(kms) as stubber:
        # moto does not refuse a disabled key; this is AWS's documented error for GenerateDataKey.
        stubber.add_client_error(
            "generate_data_key",
            service_error_code="DisabledException",
            service_message=f"{key} is disabled.",
            http_status_code=400,
            expected_params={
                "KeyId": key,
                "NumberOfBytes": 64,
                "EncryptionContext": {"aws:ssm:SessionId": "s-1", "aws:ssm:TargetId": TARGET},
            },
        )
        with pytest.raises(KmsError, match=f"the key {key}, but that key is disabled"):
            await DataKeys(lambda: kms).session_key(
                key_id=key, session_id="s-1", target=TARGET, challenge=None
            )


@pytest.mark.asyncio
async def test_a_kms_call_that_hangs_is_cut_off_inside_the_agents_patience():
    kms = boto3.client("kms", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    stubber = Stubber(kms)
    stubber.add_response("generate_data_key", {"CiphertextBlob": b"x", "Plaintext": b"k" * 64})
    stubber.activate()
    # A network that does not answer: the call stalls in the worker thread, the loop does not.
    kms.meta.events.register("before-parameter-build.kms.GenerateDataKey", lambda **_: time.sleep(2))
    started = time.monotonic()
    ticks = 0

    async def loop_alive() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    alive = asyncio.create_task(loop_alive())
    with pytest.raises(KmsError, match=r"did not answer kms:GenerateDataKey within 0\.5 s"):
        await DataKeys(lambda: kms, deadline=0.5).session_key(
            key_id="alias/k", session_id="s-1", target=TARGET, challenge=None
        )
    alive.cancel()

    assert time.monotonic() - started < 1.5
    assert ticks >= 5


@pytest.mark.asyncio
@pytest.mark.parametrize("handshake", [True, False], ids=["handshake", "no-handshake"])
async def test_an_agent_without_kms_works_as_before(agent, handshake):
    behaviour = AgentBehaviour(handshake=handshake, capture_wire=True)
    session = agent.new_session(behaviour)
    stub = StubbedSsm(agent, session, command=COMMAND)
    transport = SsmTransport(SessionManager(stub.client), target=TARGET, command=COMMAND, proxy=None)
    await asyncio.wait_for(transport.start(80, 24), 5)
    out = OutputReader(transport.output())
    try:
        await transport.send(TYPED)
        output = await out.until(b"\r\n" + SHOWN + b"\r\n")
    finally:
        await asyncio.wait_for(transport.close("test finished"), 5)

    assert KMS_ENCRYPTED_NOTICE.encode() not in output
    assert transport.channel.kms_key_id is None
    assert transport.channel.sealed_sent == 0
    actions = [a["ActionType"] for r in session.handshake_responses for a in r["ProcessedClientActions"]]
    assert actions == (["SessionType"] if handshake else [])
    # Without KMS the keystrokes travel as typed.
    assert [w.payload for w in frames(session, "in") if w.payload_type == 1] == [TYPED]
    assert session.protocol_errors == []
