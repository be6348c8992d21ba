"""Client side of the Session Manager data channel: an asyncio state machine over one WebSocket at a time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from . import messages as m
from .kms import SEALED_FROM_AGENT, SEALED_FROM_CLIENT, DataKeys, KmsError, SessionCipher

log = logging.getLogger(__name__)

# Retransmission (docs/ssm-data-channel.md §5.7): the plugin's constants, which the agent shares.
INITIAL_RTO = 0.2
INITIAL_SRTT = 0.1
MIN_RTO_VARIANCE = 0.01
MAX_RTO = 1.0
RESEND_TICK = 0.1
MAX_RESENDS = 3000
BUFFER_LIMIT = 10_000

# Reconnect backoff (§5.10).
RECONNECT_FIRST_DELAY = (0.1, 0.2)
RECONNECT_DELAY_CEILING = 5.0
RECONNECT_TRIES = 6

# A command that prints nothing would otherwise never let input through (§5.4).
READY_FALLBACK = 2.0
# Below the service's idle cut but often enough to keep NAT and load-balancer paths open.
PING_INTERVAL = 30.0

OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
# The agent sends at most 1024 bytes a message; this leaves room for service messages.
MAX_FRAME = 1 << 20

KMS_UNAVAILABLE = (
    "This head node's Session Manager preferences require KMS encryption, but this terminal has no way "
    "to reach AWS KMS. Ask an administrator to check the console's AWS configuration."
)


@dataclass(frozen=True)
class Endpoint:
    """Where and with what to open one WebSocket of the session."""

    stream_url: str
    token_value: str
    headers: Mapping[str, str] = field(default_factory=dict)


ResumeFn = Callable[[], Awaitable[Endpoint | None]]


class RttEstimator:
    """Smoothed round-trip time and the resend timeout derived from it (§5.7)."""

    def __init__(self) -> None:
        self.srtt = INITIAL_SRTT
        self.rttvar = 0.0
        self.rto = INITIAL_RTO

    def observe(self, sample: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample
        self.rto = min(MAX_RTO, self.srtt + max(MIN_RTO_VARIANCE, 4 * self.rttvar))


@dataclass
class _Unacked:
    # The exact bytes, so a resend carries the same MessageId and CreatedDate.
    data: bytes
    last_sent: float
    resends: int = 0


class DataChannel:
    """One Session Manager session's data channel, kept alive across dropped sockets.

    Input is sequenced, buffered until acknowledged and resent; output is acknowledged,
    reordered and de-duplicated before it reaches `output()`.
    """

    def __init__(
        self,
        *,
        session_id: str,
        resume: ResumeFn,
        client_version: str,
        client_id: str | None = None,
        ready_fallback: float = READY_FALLBACK,
        proxy: str | bool | None = True,
        open_timeout: float = OPEN_TIMEOUT,
        target: str = "",
        data_keys: DataKeys | None = None,
    ) -> None:
        self.session_id = session_id
        # The agent rebuilds the KMS encryption context from its own instance id: it must be this value.
        self.target = target
        self.client_version = client_version
        # Reused on every reconnect so the service knows it is the same client coming back.
        self.client_id = client_id or str(uuid.uuid4())
        self.ended_reason: str | None = None
        self.rtt = RttEstimator()
        self.retransmissions = 0
        self.duplicates_received = 0
        self.rejected_frames = 0
        self.reconnects = 0
        # KMS encryption (§5.13): set once the handshake asked for it and the data key was made.
        self.kms_key_id: str | None = None
        self.kms_seconds = 0.0
        self.handshake_seconds = 0.0
        self.sealed_sent = 0
        self.sealed_received = 0

        self._data_keys = data_keys
        self._cipher: SessionCipher | None = None
        self._handshake_started = 0.0
        self._resume = resume
        self._ready_fallback = ready_fallback
        self._proxy = proxy
        self._open_timeout = open_timeout

        self._ws: ClientConnection | None = None
        # Numbering, buffering and writing a message is one step, and the socket takes one writer at a time.
        self._write_lock = asyncio.Lock()
        self._next_seq = 0
        self._unacked: dict[int, _Unacked] = {}
        self._expected = 0
        self._reorder: dict[int, m.Frame] = {}

        self._stream_started = False
        self._ready = False
        self._paused = False
        self._pending: list[bytes] = []
        self._wanted_size: tuple[int, int] | None = None
        self._sent_size: tuple[int, int] | None = None
        self._resend_size_on_output = False

        self._output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._ended = asyncio.Event()
        self._opened_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._teardown_task: asyncio.Task[None] | None = None

    # ---- public surface -------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def unacknowledged(self) -> int:
        """Input messages sent (or waiting for a socket) that the agent has not acknowledged yet."""
        return len(self._unacked)

    async def open(self, endpoint: Endpoint) -> None:
        """Connect for the first time; raises OSError/TimeoutError/WebSocketException if the socket fails."""
        await self._connect(endpoint)
        self._opened_at = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._run_reader(), name=f"ssm-reader-{self.session_id}"),
            asyncio.create_task(self._run_ticker(), name=f"ssm-ticker-{self.session_id}"),
        ]

    async def send_input(self, data: bytes) -> None:
        if self.ended or not data:
            return
        if len(data) <= m.MAX_STREAM_CHUNK:
            chunks = [data]
        else:
            chunks = [data[i : i + m.MAX_STREAM_CHUNK] for i in range(0, len(data), m.MAX_STREAM_CHUNK)]
        async with self._write_lock:
            if not self._ready or self._paused or self._pending:
                self._pending.extend(chunks)
                return
            for chunk in chunks:
                await self._send_stream_locked(m.PayloadType.OUTPUT, chunk)

    async def set_size(self, cols: int, rows: int) -> None:
        if self.ended:
            return
        async with self._write_lock:
            self._wanted_size = (cols, rows)
            if self._ready and not self._paused:
                await self._send_size_locked()

    async def output(self) -> AsyncIterator[bytes]:
        """Each chunk as soon as it is in order; whatever else is already waiting rides along."""
        while True:
            item = await self._output.get()
            if item is None:
                self._output.put_nowait(None)
                return
            chunks = [item]
            while not self._output.empty():
                more = self._output.get_nowait()
                if more is None:
                    self._output.put_nowait(None)
                    break
                chunks.append(more)
            yield b"".join(chunks)

    async def close(self, reason: str) -> None:
        self._finish(reason)
        if self._teardown_task is not None:
            await self._teardown_task

    # ---- connection -----------------------------------------------------------------------------

    async def _connect(self, endpoint: Endpoint) -> None:
        ws = await connect(
            endpoint.stream_url,
            additional_headers=dict(endpoint.headers),
            # The Go plugin never offers permessage-deflate; mirror it rather than test the service's support.
            compression=None,
            proxy=self._proxy,
            open_timeout=self._open_timeout,
            ping_interval=PING_INTERVAL,
            ping_timeout=PING_INTERVAL,
            # Closing must not hang the console on a peer that never answers the close frame.
            close_timeout=CLOSE_TIMEOUT,
            max_size=MAX_FRAME,
            user_agent_header=f"clusterra-terminal/{self.client_version}",
        )
        opening = json.dumps(
            {
                "MessageSchemaVersion": "1.0",
                "RequestId": str(uuid.uuid4()),
                "TokenValue": endpoint.token_value,
                "ClientId": self.client_id,
                "ClientVersion": self.client_version,
            },
            separators=(",", ":"),
        )
        try:
            async with self._write_lock:
                await ws.send(opening)
                # A fresh socket starts unpaused; the service says so again if the agent is away.
                self._paused = False
                self._ws = ws
                # Whatever the old socket swallowed goes again at once, in order, rather than one per tick.
                now = time.monotonic()
                for entry in list(self._unacked.values()):
                    await ws.send(entry.data)
                    entry.last_sent = now
                if self._ready:
                    await self._flush_locked()
        except BaseException:
            self._ws = None
            await ws.close()
            raise

    async def _reconnect(self) -> bool:
        delay = random.uniform(*RECONNECT_FIRST_DELAY)  # noqa: S311 - jitter, not a secret
        problem = "the connection dropped"
        for _ in range(RECONNECT_TRIES):
            await asyncio.sleep(delay)
            if self.ended:
                return False
            try:
                endpoint = await self._resume()
            except Exception as exc:
                problem = str(exc) or type(exc).__name__
                log.warning("ssm session %s: resume failed: %s", self.session_id, problem)
            else:
                if endpoint is None:
                    self._finish(
                        "The connection to the head node dropped and the session has ended meanwhile "
                        "(it timed out or was terminated)."
                    )
                    return False
                try:
                    await self._connect(endpoint)
                except (OSError, TimeoutError, WebSocketException) as exc:
                    problem = str(exc) or type(exc).__name__
                    log.warning("ssm session %s: reconnect failed: %s", self.session_id, problem)
                else:
                    self.reconnects += 1
                    return True
            delay *= 2
            if delay > RECONNECT_DELAY_CEILING:
                delay = random.uniform(*RECONNECT_FIRST_DELAY)  # noqa: S311 - jitter, not a secret
        self._finish(f"Lost the connection to the head node and could not get it back ({problem}).")
        return False

    # ---- tasks ----------------------------------------------------------------------------------

    async def _run_reader(self) -> None:
        try:
            while not self.ended:
                ws = self._ws
                if ws is not None:
                    try:
                        while not self.ended:
                            # Text frames are protocol messages too; decode=False keeps them as bytes.
                            raw = await ws.recv(decode=False)
                            await self._on_frame(raw)
                    except ConnectionClosed as exc:
                        log.info("ssm session %s: socket closed: %s", self.session_id, exc)
                if self.ended:
                    return
                async with self._write_lock:
                    if self._ws is ws:
                        self._ws = None
                if not await self._reconnect():
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ssm session %s: data channel failed", self.session_id)
            self._finish("The terminal connection failed unexpectedly.")

    async def _run_ticker(self) -> None:
        try:
            while not self.ended:
                await asyncio.sleep(RESEND_TICK)
                if (
                    not self._stream_started
                    and not self._ready
                    and time.monotonic() - self._opened_at >= self._ready_fallback
                ):
                    self._resend_size_on_output = True
                    await self._become_ready()
                await self._resend_oldest()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ssm session %s: retransmission failed", self.session_id)
            self._finish("The terminal connection failed unexpectedly.")

    async def _resend_oldest(self) -> None:
        async with self._write_lock:
            if self._ws is None or self._paused or not self._unacked:
                return
            entry = next(iter(self._unacked.values()))
            now = time.monotonic()
            if now - entry.last_sent < self.rtt.rto:
                return
            entry.resends += 1
            if entry.resends > MAX_RESENDS:
                self._finish("The head node stopped acknowledging input; the session was ended.")
                return
            # Unlike the plugin, remember the resend time so a slow peer gets one copy per RTO, not per tick.
            entry.last_sent = now
            self.retransmissions += 1
            await self._write_locked(entry.data)

    def _finish(self, reason: str) -> None:
        if self.ended:
            return
        self.ended_reason = reason
        self._ended.set()
        self._output.put_nowait(None)
        self._teardown_task = asyncio.get_running_loop().create_task(self._teardown())

    async def _teardown(self) -> None:
        current = asyncio.current_task()
        pending = [task for task in self._tasks if task is not current and not task.done()]
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    # ---- inbound --------------------------------------------------------------------------------

    async def _on_frame(self, raw: bytes) -> None:
        try:
            frame = m.decode(raw)
        except m.FrameError as exc:
            # Unacknowledged, so the agent sends it again.
            self.rejected_frames += 1
            log.debug("ssm session %s: dropped a frame: %s", self.session_id, exc)
            return
        kind = frame.message_type
        if kind == m.MessageType.OUTPUT_STREAM_DATA:
            await self._on_stream(frame)
            await self._unpause()
        elif kind == m.MessageType.ACKNOWLEDGE:
            self._on_ack(frame)
            await self._unpause()
        elif kind == m.MessageType.CHANNEL_CLOSED:
            closed = m.parse_channel_closed(frame)
            said = closed.output.strip()
            if self.kms_key_id is not None and not self._ready:
                # The agent cannot say why; a data key it could not decrypt is by far the likeliest cause.
                self._finish(
                    f"{said or 'Session Manager ended the session.'} It ended during the KMS handshake: the "
                    f"head node could not use the key {self.kms_key_id}. Its instance role needs kms:Decrypt "
                    "on that key, and the session must target the instance itself."
                )
            else:
                self._finish(said or "The shell on the head node ended.")
        elif kind == m.MessageType.PAUSE_PUBLICATION:
            self._paused = True
        elif kind == m.MessageType.START_PUBLICATION:
            await self._unpause()

    async def _on_stream(self, frame: m.Frame) -> None:
        seq = frame.sequence_number
        if seq < self._expected:
            # Re-acknowledge: the first ack was lost or went down with an old socket.
            self.duplicates_received += 1
            await self._ack(frame)
            return
        if seq > self._expected:
            if seq in self._reorder:
                self.duplicates_received += 1
            elif len(self._reorder) >= BUFFER_LIMIT:
                return
            else:
                self._reorder[seq] = frame
            await self._ack(frame)
            return
        await self._process(frame, acknowledge=True)
        self._expected += 1
        while not self.ended and (held := self._reorder.pop(self._expected, None)) is not None:
            await self._process(held, acknowledge=False)
            self._expected += 1

    async def _process(self, frame: m.Frame, *, acknowledge: bool) -> None:
        kind = frame.payload_type
        first = not self._stream_started
        self._stream_started = True
        if kind in (m.PayloadType.HANDSHAKE_REQUEST, m.PayloadType.ENC_CHALLENGE_REQUEST):
            # Acknowledged before the answer, which may wait on AWS KMS for seconds.
            if acknowledge:
                await self._ack(frame)
            if kind == m.PayloadType.HANDSHAKE_REQUEST:
                await self._answer_handshake(frame)
            else:
                await self._answer_challenge(frame)
            return
        payload = frame.payload
        if self._cipher is not None and kind in SEALED_FROM_AGENT and payload:
            try:
                payload = self._cipher.open(payload)
            except KmsError:
                # The digest matched, so this is no line noise: the two sides hold different keys.
                self._finish(
                    "The head node's output could not be decrypted with this session's KMS data key; "
                    "the session was ended."
                )
                return
            self.sealed_received += 1
        if kind in (m.PayloadType.OUTPUT, m.PayloadType.STDERR):
            if payload:
                self._output.put_nowait(payload)
        elif kind == m.PayloadType.HANDSHAKE_COMPLETE:
            if self._handshake_started:
                self.handshake_seconds = time.monotonic() - self._handshake_started
            message = _customer_message(frame)
            if message:
                self._output.put_nowait(message.encode() + b"\r\n")
        # Other payload types (ExitCode, Flag, an unexpected EncChallengeRequest, future ones) carry
        # nothing for a terminal, but are still acknowledged so the stream moves on.
        if acknowledge:
            await self._ack(frame)
        if kind == m.PayloadType.HANDSHAKE_COMPLETE or first:
            await self._become_ready()
        if self._resend_size_on_output and kind == m.PayloadType.OUTPUT:
            # Input went out blind after the fallback; a Size sent before the PTY existed may have been lost.
            self._resend_size_on_output = False
            async with self._write_lock:
                self._sent_size = None
                await self._send_size_locked()

    async def _answer_handshake(self, frame: m.Frame) -> None:
        self._handshake_started = time.monotonic()
        try:
            body = frame.json()
            actions = body.get("RequestedClientActions") or []
        except (m.FrameError, AttributeError):
            actions = []
        processed = []
        failure = None
        for action in actions:
            kind = action.get("ActionType") if isinstance(action, dict) else None
            if kind == "SessionType":
                processed.append({"ActionType": kind, "ActionStatus": 1, "ActionResult": None, "Error": ""})
            elif kind == "KMSEncryption":
                try:
                    result = await self._start_encryption(action.get("ActionParameters"))
                except KmsError as exc:
                    failure = str(exc)
                    processed.append(
                        {"ActionType": kind, "ActionStatus": 2, "ActionResult": None, "Error": failure}
                    )
                else:
                    processed.append(
                        {"ActionType": kind, "ActionStatus": 1, "ActionResult": result, "Error": ""}
                    )
            else:
                processed.append(
                    {
                        "ActionType": kind,
                        "ActionStatus": 3,
                        "ActionResult": None,
                        "Error": "unsupported action",
                    }
                )
        payload = m.compact_json(
            {"ClientVersion": self.client_version, "ProcessedClientActions": processed, "Errors": None}
        )
        async with self._write_lock:
            await self._send_stream_locked(m.PayloadType.HANDSHAKE_RESPONSE, payload)
        if failure:
            # The agent abandons the session on any non-success; say why now instead of waiting for it.
            self._finish(failure)

    async def _start_encryption(self, parameters: object) -> dict[str, object]:
        """Make the session's data key (§5.13) and the KMSEncryption action result that hands it over."""
        if not isinstance(parameters, dict) or not isinstance(parameters.get("KMSKeyId"), str):
            raise KmsError("The head node asked for KMS encryption without naming a KMS key.")
        if self._data_keys is None:
            raise KmsError(KMS_UNAVAILABLE)
        key_id = parameters["KMSKeyId"]
        challenge = parameters.get("Challenge")
        challenge = challenge if isinstance(challenge, str) and challenge else None
        made = await self._data_keys.session_key(
            key_id=key_id, session_id=self.session_id, target=self.target, challenge=challenge
        )
        self._cipher = made.cipher
        self.kms_key_id = key_id
        self.kms_seconds = made.seconds
        result: dict[str, object] = {"KMSCipherTextKey": made.ciphertext_b64, "KMSCipherTextHash": None}
        if challenge:
            # The challenge went into the encryption context; the agent must put it into its Decrypt too.
            result["ChallengeAcknowledgement"] = True
        return result

    async def _answer_challenge(self, frame: m.Frame) -> None:
        try:
            body = frame.json()
            challenge = body.get("Challenge") if isinstance(body, dict) else None
            if self._cipher is None or not isinstance(challenge, str):
                raise KmsError("no data key to answer it with" if self._cipher is None else "no challenge")
            answer = self._cipher.answer_challenge(challenge)
        except (m.FrameError, KmsError) as exc:
            self._finish(f"The head node's KMS encryption challenge could not be answered ({exc}).")
            return
        payload = m.compact_json({"Challenge": answer})
        async with self._write_lock:
            await self._send_stream_locked(m.PayloadType.ENC_CHALLENGE_RESPONSE, payload)

    def _on_ack(self, frame: m.Frame) -> None:
        try:
            acked = m.parse_acknowledgement(frame)
        except m.FrameError as exc:
            log.debug("ssm session %s: unreadable acknowledge: %s", self.session_id, exc)
            return
        # The plugin and agent match acknowledgements by sequence number alone.
        entry = self._unacked.pop(acked.sequence_number, None)
        if entry is not None:
            self.rtt.observe(time.monotonic() - entry.last_sent)

    async def _ack(self, frame: m.Frame) -> None:
        data = m.encode(m.acknowledgement(frame))
        async with self._write_lock:
            await self._write_locked(data)

    async def _unpause(self) -> None:
        if not self._paused:
            return
        async with self._write_lock:
            self._paused = False
            if self._ready:
                await self._flush_locked()

    # ---- outbound -------------------------------------------------------------------------------

    async def _become_ready(self) -> None:
        async with self._write_lock:
            if self._ready:
                return
            self._ready = True
            if not self._paused:
                await self._flush_locked()

    async def _flush_locked(self) -> None:
        # The size goes first so the first command already sees the right geometry.
        await self._send_size_locked()
        pending, self._pending = self._pending, []
        for chunk in pending:
            await self._send_stream_locked(m.PayloadType.OUTPUT, chunk)

    async def _send_size_locked(self) -> None:
        if self._wanted_size is None or self._wanted_size == self._sent_size:
            return
        cols, rows = self._wanted_size
        await self._send_stream_locked(m.PayloadType.SIZE, m.size_payload(cols, rows))
        self._sent_size = self._wanted_size

    async def _send_stream_locked(self, payload_type: m.PayloadType, payload: bytes) -> None:
        if len(self._unacked) >= BUFFER_LIMIT:
            self._finish("The head node stopped acknowledging input; the session was ended.")
            return
        if self._cipher is not None and payload_type in SEALED_FROM_CLIENT:
            # Sealed once, here: a resend carries these exact bytes, never a second sealing.
            payload = self._cipher.seal(payload)
            self.sealed_sent += 1
        frame = m.Frame(
            m.MessageType.INPUT_STREAM_DATA,
            sequence_number=self._next_seq,
            payload_type=payload_type,
            payload=payload,
        )
        data = m.encode(frame)
        self._unacked[self._next_seq] = _Unacked(data, time.monotonic())
        self._next_seq += 1
        await self._write_locked(data)

    async def _write_locked(self, data: bytes) -> None:
        ws = self._ws
        if ws is None:
            # Disconnected: stream messages stay buffered and go out again after the reconnect.
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(data)


def _customer_message(frame: m.Frame) -> str:
    try:
        body = frame.json()
    except m.FrameError:
        return ""
    message = body.get("CustomerMessage") if isinstance(body, dict) else None
    return message if isinstance(message, str) else ""
