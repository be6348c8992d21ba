"""A Session Manager agent on loopback: the agent side of the data channel over a real PTY, with fault knobs.

The service and the agent are folded into one WebSocket server. It frames messages with its own
struct-based codec and checks SigV4 with its own verifier, so it does not share a bug with the client
under test. `StubbedSsm` makes a real boto3 SSM client answer StartSession/ResumeSession/TerminateSession
with this emulator's StreamUrl and tokens (botocore's Stubber; moto has no data channel).
With `kms_key_id` the agent asks for KMS encryption as the real one does (docs/ssm-data-channel.md §5.13):
it calls kms:Decrypt through boto3 (moto's KMS in the tests) with its own instance id in the context, and
seals with its own AES-GCM code and counter nonces.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import http
import json
import os
import pty
import secrets
import shutil
import signal
import struct
import sys
import tempfile
import termios
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError
from botocore.stub import Stubber
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

REGION = "eu-west-1"
TARGET = "i-0123456789abcdef0"
TEST_CREDENTIALS = Credentials(
    "AKIDCLUSTERRATEST", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYCLUSTERRA", "FwoGZXIvYXdzEXAMPLEsessiontoken"
)
# A cell number with '+', '/' and '=' exercises the canonical-query quirk of the signed upgrade.
DEFAULT_CELL = "AAEAAcl+uSt/eRRa=="

AGENT_RTO = 0.2
AGENT_TICK = 0.05
REORDER_HOLD = 0.05
SHELL_EXIT_DRAIN = 2.0
# How long the agent waits for the handshake response, and again for the encryption challenge's answer.
HANDSHAKE_TIMEOUT = 15.0
KMS_ENCRYPTED_NOTICE = "This session is encrypted using AWS KMS."
# Payload types the agent seals once KMS is on; of the client's it opens Output only.
_AGENT_SEALS = frozenset({1, 11, 12})

# ---- framing, written independently of terminal.transports.ssm.messages ------------------------

_HEADER = struct.Struct(">I32sIQqQ16s32sII")
assert _HEADER.size == 120


@dataclass(frozen=True)
class Wire:
    type: str
    seq: int
    flags: int
    payload_type: int
    payload: bytes
    message_id: uuid.UUID
    created: int


def pack(
    message_type: str,
    seq: int,
    flags: int,
    payload_type: int,
    payload: bytes,
    message_id: uuid.UUID | None = None,
) -> bytes:
    raw_id = (message_id or uuid.uuid4()).bytes
    return (
        _HEADER.pack(
            116,
            message_type.encode().ljust(32, b" "),
            1,
            int(time.time() * 1000),
            seq,
            flags,
            raw_id[8:] + raw_id[:8],
            hashlib.sha256(payload).digest(),
            payload_type,
            len(payload),
        )
        + payload
    )


def unpack(data: bytes) -> Wire:
    if len(data) < _HEADER.size:
        raise ValueError("short frame")
    hl, mtype, _schema, created, seq, flags, wire_id, digest, ptype, plen = _HEADER.unpack_from(data)
    if hl != 116 or len(data) < 120 + plen:
        raise ValueError("bad lengths")
    payload = data[120 : 120 + plen]
    if created == 0 or (plen and hashlib.sha256(payload).digest() != digest):
        raise ValueError("bad created date or digest")
    message_id = uuid.UUID(bytes=wire_id[8:] + wire_id[:8])
    return Wire(mtype.rstrip(b" \x00").decode(), seq, flags, ptype, payload, message_id, created)


def ack_for(message: Wire) -> bytes:
    body = {
        "AcknowledgedMessageType": message.type,
        "AcknowledgedMessageId": str(message.message_id),
        "AcknowledgedMessageSequenceNumber": message.seq,
        "IsSequentialMessage": True,
    }
    return pack("acknowledge", 0, 3, 0, json.dumps(body).encode())


# ---- SigV4 of the upgrade request, checked the way the service canonicalises it ------------------

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")


def _rfc3986(text: str) -> str:
    return "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in text.encode())


def go_canonical_query(raw_query: str) -> str:
    """Form-decode ('+' is a space), then percent-encode every byte outside RFC 3986's unreserved set."""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key.replace("+", " ")), unquote(value.replace("+", " "))))
    return "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in sorted(pairs))


def sigv4_problem(
    path: str, headers: Any, credentials: Credentials, region: str, service: str = "ssmmessages"
) -> str | None:
    """Why this upgrade request's signature is not valid for `credentials`, or None if it is."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no SigV4 Authorization header"
    try:
        fields = dict(item.strip().split("=", 1) for item in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
        access_key, date, scope_region, scope_service, terminator = fields["Credential"].split("/")
    except (KeyError, ValueError):
        return "malformed Authorization header"
    if "SignedHeaders" not in fields or "Signature" not in fields:
        return "malformed Authorization header"
    amz_date = headers.get("X-Amz-Date", "")
    if access_key != credentials.access_key:
        return f"signed by {access_key}"
    if (scope_region, scope_service, terminator) != (region, service, "aws4_request"):
        return f"wrong scope {fields['Credential']}"
    if not amz_date.startswith(date):
        return "X-Amz-Date outside the credential scope"
    if credentials.token and headers.get("X-Amz-Security-Token") != credentials.token:
        return "missing or wrong X-Amz-Security-Token"
    signed = fields["SignedHeaders"].split(";")
    for needed in ("host", "x-amz-date") + (("x-amz-security-token",) if credentials.token else ()):
        if needed not in signed:
            return f"{needed} is not signed"
    resource, _, raw_query = path.partition("?")
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed)
    canonical_request = "\n".join(
        [
            "GET",
            resource,
            go_canonical_query(raw_query),
            canonical_headers,
            ";".join(signed),
            hashlib.sha256(b"").hexdigest(),
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    key = ("AWS4" + credentials.secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        return "signature does not match"
    return None


# ---- the agent --------------------------------------------------------------------------------

# The real agent gives its shell a controlling terminal (setsid + TIOCSCTTY) so SIGWINCH and job control work.
_CTTY_SHIM = (
    "import fcntl,os,sys,termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"
)


@dataclass
class AgentBehaviour:
    """Knobs; the defaults behave like a healthy agent running AWS-StartInteractiveCommand without KMS."""

    handshake: bool = False
    session_type: str = "InteractiveCommands"
    customer_message: str = ""
    kms_key_id: str | None = None  # Session Manager preferences name this key: the handshake asks for KMS
    kms_credentials: Credentials | None = None  # the instance role, for kms:Decrypt (TEST_CREDENTIALS)
    context_challenge: bool = True  # offer a random challenge for the encryption context (agents since 2022)
    require_challenge: bool = False  # Kms.RequireKMSChallengeResponse: refuse clients that don't use it
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    capture_wire: bool = False  # keep every frame received and sent in AgentSession.wire
    duplicate_output: bool = False  # send every stream message twice
    reorder_output: bool = False  # swap each pair of consecutive stream messages
    drop_output_every: int = 0  # the first transmission of every Nth stream message is lost
    corrupt_output_every: int = 0  # the first transmission of every Nth stream message has a bad digest
    drop_acks_every: int = 0  # every Nth accepted input message is processed but never acknowledged
    cut_on_input: bytes | None = None  # swallow the first input carrying these bytes and cut the socket
    shell_delay: float = 0.0  # the PTY appears this late; input before it is refused without an ack
    channel_closed_on_exit: bool = True
    exit_output: str = ""
    require_sigv4: Credentials | None = None
    command: Sequence[str] = ("bash", "--norc", "--noprofile", "-i")


@dataclass
class AgentSession:
    """One session as the agent and the service see it; it outlives any one WebSocket."""

    session_id: str
    behaviour: AgentBehaviour
    target: str = TARGET
    tokens: set[str] = field(default_factory=set)

    # What tests look at.
    openings: list[dict[str, Any]] = field(default_factory=list)
    upgrade_paths: list[str] = field(default_factory=list)
    upgrade_headers: list[dict[str, str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    protocol_errors: list[str] = field(default_factory=list)
    pty_input: bytearray = field(default_factory=bytearray)
    input_payload_types: list[int] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    handshake_responses: list[dict[str, Any]] = field(default_factory=list)
    discarded_during_handshake: int = 0
    handshake_failure: str = ""
    kms_contexts: list[dict[str, str]] = field(default_factory=list)
    kms_errors: list[str] = field(default_factory=list)
    challenge_verified: bool = False
    sealed_in: int = 0
    sealed_out: int = 0
    wire: list[tuple[str, bytes]] = field(default_factory=list)  # ("in" | "out", frame) with capture_wire
    not_ready_rejections: int = 0
    duplicates_received: int = 0
    rejected_frames: int = 0
    acks_dropped: int = 0
    output_dropped: int = 0
    output_corrupted: int = 0
    output_duplicated: int = 0
    output_reordered: int = 0
    retransmissions: int = 0
    cuts: int = 0
    terminated: bool = False
    channel_closed_sent: int = 0
    ended: bool = False

    def __post_init__(self) -> None:
        self.ws: ServerConnection | None = None
        self._attached_once = False
        self._handshake = "none"
        self._out_seq = 0
        self._out_unacked: dict[int, list[Any]] = {}
        self._fresh_sent = 0
        self._held: bytes | None = None
        self._in_expected = 0
        self._in_buffer: dict[int, Wire] = {}
        self._accepted = 0
        self._cut_done = False
        self._master: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._pty_chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._home = tempfile.mkdtemp(prefix="ssm-agent-")
        self._started_handshake = 0
        # KMS: the agent seals with the data key's first half and opens with its second (§5.13).
        self._seal_key: AESGCM | None = None
        self._open_key: AESGCM | None = None
        self._nonce = int.from_bytes(secrets.token_bytes(12), "little")
        self._context_challenge = base64.b64encode(secrets.token_bytes(16)).decode()
        self._enc_challenge = b""
        self._spawn(self._ticker())

    def new_token(self) -> str:
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return token

    # -- connections

    async def attach(self, ws: ServerConnection) -> None:
        if self.ws is not None and self.ws is not ws:
            self.ws.transport.abort()
        self.ws = ws
        if not self._attached_once:
            self._attached_once = True
            if self.behaviour.handshake:
                await self._request_handshake()
            elif self.behaviour.shell_delay:
                self._spawn(self._start_shell_later())
            else:
                await self._start_shell()
            return
        # A resumed socket: everything unacknowledged goes again, as the agent's resend loop would.
        for entry in list(self._out_unacked.values()):
            await self._raw_send(entry[0])
            entry[1] = time.monotonic()
        if self.ended:
            await self._send_channel_closed(self.behaviour.exit_output)

    def detach(self, ws: ServerConnection) -> None:
        if self.ws is ws:
            self.ws = None

    def cut(self) -> None:
        """Drop the socket abruptly (no close frame), as a network failure would."""
        if self.ws is not None:
            self.cuts += 1
            self.ws.transport.abort()
            self.ws = None

    def terminate(self) -> None:
        """What TerminateSession does on the node: the shell is killed and the channel closes."""
        self.terminated = True
        self._kill_shell()

    async def inject(self, payload_type: int, payload: bytes) -> None:
        """Send one stream message of any payload type, as a newer or stranger agent might."""
        await self._send_stream(payload_type, payload)

    async def publish(self, active: bool) -> None:
        """What the service says when the agent's side goes away (pause) or comes back (start)."""
        kind = "start_publication" if active else "pause_publication"
        await self._raw_send(pack(kind, 0, 0, 0, b""))

    async def close_channel(self, output: str) -> None:
        """End the session from the service side (idle timeout, max duration) with this Output text."""
        self.ended = True
        await self._send_channel_closed(output)
        self._kill_shell()

    async def shutdown(self) -> None:
        self._kill_shell()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                await asyncio.wait_for(self._proc.wait(), 2)
        if self._master is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            self._master = None
        shutil.rmtree(self._home, ignore_errors=True)

    # -- inbound

    async def on_client_frame(self, raw: bytes) -> None:
        if self.behaviour.capture_wire:
            self.wire.append(("in", raw))
        try:
            message = unpack(raw)
        except ValueError:
            self.rejected_frames += 1
            return
        if message.type == "acknowledge":
            acked = json.loads(message.payload)["AcknowledgedMessageSequenceNumber"]
            self._out_unacked.pop(acked, None)
            return
        if message.type != "input_stream_data":
            self.protocol_errors.append(f"unexpected message type {message.type}")
            return
        if message.flags != 0:
            self.protocol_errors.append(f"input seq {message.seq} has flags {message.flags}")
        knob = self.behaviour.cut_on_input
        if knob is not None and not self._cut_done and knob in message.payload:
            self._cut_done = True
            self.cut()
            return
        if message.seq < self._in_expected:
            self.duplicates_received += 1
            await self._raw_send(ack_for(message))
            return
        if message.seq > self._in_expected:
            self._in_buffer.setdefault(message.seq, message)
            await self._raw_send(ack_for(message))
            return
        if not await self._accept(message):
            return  # not ready: unacknowledged, so only the client's retransmission delivers it
        every = self.behaviour.drop_acks_every
        if every and self._accepted % every == 0:
            self.acks_dropped += 1
        else:
            await self._raw_send(ack_for(message))
        await self._drain_buffer()

    async def _drain_buffer(self) -> None:
        while (held := self._in_buffer.get(self._in_expected)) is not None:
            if not await self._accept(held):
                return
            del self._in_buffer[held.seq]

    async def _accept(self, message: Wire) -> bool:
        if self._handshake in ("pending", "challenge"):
            if message.payload_type == 6 and self._handshake == "pending":
                response = json.loads(message.payload)
                self.handshake_responses.append(response)
                self._advance()
                await self._finish_handshake(response)
            elif message.payload_type == 9 and self._handshake == "challenge":
                self._advance()
                await self._check_challenge(json.loads(message.payload))
            else:
                # The agent acknowledges and throws away anything else while it negotiates.
                self.discarded_during_handshake += 1
                self._advance()
            return True
        if self._master is None:
            self.not_ready_rejections += 1
            return False
        self._advance()
        self.input_payload_types.append(message.payload_type)
        if message.payload_type == 1:
            payload = message.payload
            if self._open_key is not None:
                try:
                    payload = self._open_key.decrypt(payload[:12], payload[12:], None)
                except (InvalidTag, ValueError):
                    self.protocol_errors.append(f"input seq {message.seq} does not decrypt")
                    return True
                self.sealed_in += 1
            self.pty_input += payload
            await self._write_pty(payload)
        elif message.payload_type == 3:
            size = json.loads(message.payload)
            self.sizes.append((size["cols"], size["rows"]))
            winsize = struct.pack("HHHH", size["rows"], size["cols"], 0, 0)
            fcntl.ioctl(self._master, termios.TIOCSWINSZ, winsize)
        return True

    def _advance(self) -> None:
        self._in_expected += 1
        self._accepted += 1

    # -- handshake

    async def _request_handshake(self) -> None:
        self._handshake = "pending"
        actions: list[dict[str, Any]] = [
            {
                "ActionType": "SessionType",
                "ActionParameters": {"SessionType": self.behaviour.session_type, "Properties": None},
            }
        ]
        if self.behaviour.kms_key_id:
            parameters = {"KMSKeyId": self.behaviour.kms_key_id}
            if self.behaviour.context_challenge:
                parameters["Challenge"] = self._context_challenge
            actions.append({"ActionType": "KMSEncryption", "ActionParameters": parameters})
        body = {"AgentVersion": "3.3.1611.0", "RequestedClientActions": actions}
        self._started_handshake = time.monotonic_ns()
        await self._send_stream(5, json.dumps(body).encode())
        self._spawn(self._watch_handshake("pending", "Handshake timed out."))

    async def _watch_handshake(self, state: str, problem: str) -> None:
        await asyncio.sleep(self.behaviour.handshake_timeout)
        if self._handshake == state:
            await self._fail_handshake(problem)

    async def _fail_handshake(self, problem: str) -> None:
        self._handshake = "failed"
        self.handshake_failure = problem
        await self.close_channel("Encountered error while initiating handshake.")

    async def _finish_handshake(self, response: dict[str, Any]) -> None:
        actions = response.get("ProcessedClientActions") or []
        if not actions:
            await self._fail_handshake("no client actions")
            return
        self._handshake = "deciding"
        for action in actions:
            status = action.get("ActionStatus")
            if status != 1:
                kind, error = action.get("ActionType"), action.get("Error")
                await self._fail_handshake(f"{kind} failed on client: {error}")
                return
            if action.get("ActionType") == "KMSEncryption":
                problem = await self._take_data_key(action.get("ActionResult") or {})
                if problem:
                    await self._fail_handshake(problem)
                    return
        if self._seal_key is None:
            await self._complete_handshake()
            return
        # The agent proves the key works both ways before the shell starts.
        self._enc_challenge = secrets.token_bytes(64)
        body = {"Challenge": base64.b64encode(self._seal(self._enc_challenge)).decode()}
        self._handshake = "challenge"
        await self._send_stream(8, json.dumps(body).encode())
        self._spawn(self._watch_handshake("challenge", "Timed out waiting for encryption challenge."))

    async def _take_data_key(self, result: dict[str, Any]) -> str:
        acknowledged = bool(result.get("ChallengeAcknowledgement"))
        if self.behaviour.require_challenge and not acknowledged:
            return "client does not support required encryption context random challenge"
        context = {"aws:ssm:SessionId": self.session_id, "aws:ssm:TargetId": self.target}
        if acknowledged:
            context["aws:ssm:RandomChallenge"] = self._context_challenge
        self.kms_contexts.append(context)
        try:
            blob = base64.b64decode(result["KMSCipherTextKey"], validate=True)
            key = await asyncio.to_thread(self._kms_decrypt, blob, context)
        except (KeyError, ValueError, ClientError, BotoCoreError) as exc:
            self.kms_errors.append(f"{type(exc).__name__}: {exc}")
            return f"Fetching data key failed: {exc}"
        if len(key) != 64:
            return f"a {len(key)}-byte data key"
        self._seal_key, self._open_key = AESGCM(key[:32]), AESGCM(key[32:])
        return ""

    def _kms_decrypt(self, blob: bytes, context: dict[str, str]) -> bytes:
        credentials = self.behaviour.kms_credentials or TEST_CREDENTIALS
        kms = boto3.client(
            "kms",
            region_name=REGION,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.token,
        )
        answer = kms.decrypt(CiphertextBlob=blob, EncryptionContext=context, KeyId=self.behaviour.kms_key_id)
        return answer["Plaintext"]

    async def _check_challenge(self, body: dict[str, Any]) -> None:
        assert self._open_key is not None
        try:
            sealed = base64.b64decode(body["Challenge"], validate=True)
            answer = self._open_key.decrypt(sealed[:12], sealed[12:], None)
        except (KeyError, ValueError, InvalidTag):
            answer = b""
        if not hmac.compare_digest(answer, self._enc_challenge):
            await self._fail_handshake("Encryption challenge does not match!")
            return
        self.challenge_verified = True
        await self._complete_handshake()

    async def _complete_handshake(self) -> None:
        self._handshake = "done"
        message = self.behaviour.customer_message
        if self._seal_key is not None:
            message += KMS_ENCRYPTED_NOTICE
        body = {
            "HandshakeTimeToComplete": time.monotonic_ns() - self._started_handshake,
            "CustomerMessage": message,
        }
        await self._send_stream(7, json.dumps(body).encode())
        await self._start_shell()

    def _seal(self, plaintext: bytes) -> bytes:
        assert self._seal_key is not None
        # A counter nonce, little-endian, as the agent keeps one: never the same twice under one key.
        nonce = self._nonce.to_bytes(12, "little")
        self._nonce = (self._nonce + 1) % (1 << 96)
        return nonce + self._seal_key.encrypt(nonce, plaintext, None)

    # -- the PTY

    async def _start_shell(self) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self._home,
            "TERM": "dumb",
            "PS1": "$ ",
            "HISTFILE": "/dev/null",
            "LANG": "C.UTF-8",
        }
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CTTY_SHIM,
                *self.behaviour.command,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                env=env,
                cwd=self._home,
            )
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self._master = master
        asyncio.get_running_loop().add_reader(master, self._on_pty_readable)
        self._spawn(self._pump())
        await self._drain_buffer()

    async def _start_shell_later(self) -> None:
        await asyncio.sleep(self.behaviour.shell_delay)
        await self._start_shell()

    def _on_pty_readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 1024)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: every holder of the slave side is gone
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
            self._pty_chunks.put_nowait(None)
            return
        self._pty_chunks.put_nowait(data)

    async def _write_pty(self, data: bytes) -> None:
        assert self._master is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            view = view[written:]

    async def _pump(self) -> None:
        while (chunk := await self._pty_chunks.get()) is not None:
            await self._send_stream(1, chunk)
        # The agent drains its outgoing buffer (for up to 2 s) before it reports the shell's end.
        deadline = time.monotonic() + SHELL_EXIT_DRAIN
        while self._out_unacked and time.monotonic() < deadline:
            await asyncio.sleep(AGENT_TICK)
        if not self.ended:
            self.ended = True
            if self.behaviour.channel_closed_on_exit:
                await self._send_channel_closed(self.behaviour.exit_output)

    def _kill_shell(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    # -- outbound

    async def _send_stream(self, payload_type: int, payload: bytes) -> None:
        if self._seal_key is not None and payload_type in _AGENT_SEALS:
            payload = self._seal(payload)
            self.sealed_out += 1
        seq = self._out_seq
        self._out_seq += 1
        data = pack("output_stream_data", seq, 1 if seq == 0 else 0, payload_type, payload)
        self._out_unacked[seq] = [data, time.monotonic()]
        self._fresh_sent += 1
        knobs = self.behaviour
        if knobs.drop_output_every and self._fresh_sent % knobs.drop_output_every == 0:
            self.output_dropped += 1
            return
        if knobs.corrupt_output_every and self._fresh_sent % knobs.corrupt_output_every == 0 and payload:
            self.output_corrupted += 1
            await self._raw_send(data[:-1] + bytes([data[-1] ^ 0xFF]))
            return
        if knobs.reorder_output:
            if self._held is None:
                self._held = data
                self._spawn(self._release_held(data))
                return
            held, self._held = self._held, None
            await self._raw_send(data)
            await self._raw_send(held)
            self.output_reordered += 1
            return
        await self._raw_send(data)
        if knobs.duplicate_output:
            await self._raw_send(data)
            self.output_duplicated += 1

    async def _release_held(self, data: bytes) -> None:
        # Nothing followed soon enough to swap with; send it late rather than never.
        await asyncio.sleep(REORDER_HOLD)
        if self._held is data:
            self._held = None
            await self._raw_send(data)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(AGENT_TICK)
            if self.ws is None or not self._out_unacked:
                continue
            entry = next(iter(self._out_unacked.values()))
            if time.monotonic() - entry[1] >= AGENT_RTO:
                entry[1] = time.monotonic()
                self.retransmissions += 1
                await self._raw_send(entry[0])

    async def _send_channel_closed(self, output: str) -> None:
        body = {
            "MessageId": str(uuid.uuid4()),
            "CreatedDate": dt.datetime.now(dt.UTC).isoformat(),
            "DestinationId": self.target,
            "SessionId": self.session_id,
            "MessageType": "channel_closed",
            "SchemaVersion": 1,
            "Output": output,
        }
        self.channel_closed_sent += 1
        await self._raw_send(pack("channel_closed", 0, 0, 0, json.dumps(body).encode()))

    async def _raw_send(self, data: bytes) -> None:
        ws = self.ws
        if ws is None:
            return
        if self.behaviour.capture_wire:
            self.wire.append(("out", data))
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class AgentEmulator:
    """The WebSocket endpoint of every emulated session, on 127.0.0.1 and an ephemeral port."""

    def __init__(self) -> None:
        self.sessions: dict[str, AgentSession] = {}
        self._server: Server | None = None
        self.port = 0

    async def __aenter__(self) -> AgentEmulator:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check_upgrade, compression=None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for session in self.sessions.values():
            await session.shutdown()
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def new_session(
        self, behaviour: AgentBehaviour | None = None, *, prefix: str = "clusterra", target: str = TARGET
    ) -> AgentSession:
        """A session on the instance `target` (the agent's own instance id, which its KMS context uses)."""
        session = AgentSession(f"{prefix}-{secrets.token_hex(8)}", behaviour or AgentBehaviour(), target)
        self.sessions[session.session_id] = session
        return session

    def stream_url(self, session: AgentSession, cell: str = DEFAULT_CELL) -> str:
        return (
            f"ws://127.0.0.1:{self.port}/v1/data-channel/{session.session_id}"
            f"?role=publish_subscribe&cell-number={cell}"
        )

    def _session_for(self, path: str) -> AgentSession | None:
        return self.sessions.get(urlsplit(path).path.rsplit("/", 1)[-1])

    def _check_upgrade(self, connection: ServerConnection, request: Request) -> Response | None:
        session = self._session_for(request.path)
        if session is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "no such session\n")
        session.upgrade_paths.append(request.path)
        session.upgrade_headers.append({name: value for name, value in request.headers.raw_items()})
        credentials = session.behaviour.require_sigv4
        if credentials is not None:
            problem = sigv4_problem(request.path, request.headers, credentials, REGION)
            if problem is not None:
                session.refused.append(problem)
                return connection.respond(http.HTTPStatus.FORBIDDEN, f"{problem}\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        session = self._session_for(ws.request.path)
        assert session is not None
        try:
            first = await asyncio.wait_for(ws.recv(), 5)
        except (TimeoutError, ConnectionClosed):
            return
        if not isinstance(first, str):
            session.refused.append("the opening frame was not text")
            await ws.close(1008, "expected the OpenDataChannel text frame")
            return
        opening = json.loads(first)
        session.openings.append(opening)
        expected_keys = ["MessageSchemaVersion", "RequestId", "TokenValue", "ClientId", "ClientVersion"]
        if list(opening) != expected_keys or opening["TokenValue"] not in session.tokens:
            session.refused.append("bad opening frame or token")
            await ws.close(1008, "invalid token")
            return
        # A token opens one socket; a reconnect needs a fresh one from ResumeSession.
        session.tokens.discard(opening["TokenValue"])
        await session.attach(ws)
        try:
            while True:
                raw = await ws.recv(decode=False)
                await session.on_client_frame(raw)
        except ConnectionClosed:
            pass
        finally:
            session.detach(ws)


# ---- the control plane, stubbed on a real boto3 client ---------------------------------------


class StubbedSsm:
    """A real boto3 SSM client whose session calls are answered from the emulator and checked exactly."""

    def __init__(
        self,
        agent: AgentEmulator,
        session: AgentSession,
        *,
        command: str,
        target: str = TARGET,
        reason: str | None = None,
        resumes: int = 0,
        resume_ends_session: bool = False,
        terminate: bool = True,
        credentials: Credentials = TEST_CREDENTIALS,
    ) -> None:
        self.client = boto3.client(
            "ssm",
            region_name=REGION,
            aws_access_key_id=credentials.access_key,
            aws_secret_access_key=credentials.secret_key,
            aws_session_token=credentials.token,
        )
        self.stubber = Stubber(self.client)
        self.resume_urls: list[str] = []
        request: dict[str, Any] = {
            "Target": target,
            "DocumentName": "AWS-StartInteractiveCommand",
            "Parameters": {"command": [command]},
        }
        if reason is not None:
            request["Reason"] = reason
        self.stubber.add_response(
            "start_session",
            {
                "SessionId": session.session_id,
                "TokenValue": session.new_token(),
                "StreamUrl": agent.stream_url(session),
            },
            expected_params=request,
        )
        for attempt in range(resumes):
            if resume_ends_session:
                answer = {"SessionId": session.session_id, "TokenValue": "", "StreamUrl": ""}
            else:
                # The service may move a resumed session to another cell; the client must follow.
                url = agent.stream_url(session, cell=f"{DEFAULT_CELL[:-2]}{attempt}+=")
                self.resume_urls.append(url)
                answer = {
                    "SessionId": session.session_id,
                    "TokenValue": session.new_token(),
                    "StreamUrl": url,
                }
            self.stubber.add_response(
                "resume_session", answer, expected_params={"SessionId": session.session_id}
            )
        if terminate:
            self.stubber.add_response(
                "terminate_session",
                {"SessionId": session.session_id},
                expected_params={"SessionId": session.session_id},
            )
        loop = asyncio.get_running_loop()

        def on_terminate(**_: Any) -> None:
            # boto3 runs in a worker thread; the agent lives on the event loop.
            loop.call_soon_threadsafe(session.terminate)

        self.client.meta.events.register("after-call.ssm.TerminateSession", on_terminate)
        self.stubber.activate()


# ---- reading a transport's output in tests ------------------------------------------------------


class OutputReader:
    """Collects a transport's output and waits, with a deadline, for what a test expects to see."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self.data = bytearray()
        self.finished = False

    async def until(self, needle: bytes, timeout: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while needle not in self.data:
            if self.finished:
                raise AssertionError(f"output ended before {needle!r}; got {bytes(self.data)!r}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} within {timeout}s; got {bytes(self.data)!r}")
            try:
                self.data += await asyncio.wait_for(anext(self._chunks), remaining)
            except StopAsyncIteration:
                self.finished = True
            except TimeoutError:
                continue
        return bytes(self.data)

    async def to_end(self, timeout: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.finished:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"output did not end within {timeout}s; got {bytes(self.data)!r}")
            try:
                self.data += await asyncio.wait_for(anext(self._chunks), remaining)
            except StopAsyncIteration:
                self.finished = True
            except TimeoutError:
                continue
        return bytes(self.data)
