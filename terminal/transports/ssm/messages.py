"""Binary frames of the Session Manager data channel: encode, decode, validate (ssm-data-channel.md §3-4)."""

from __future__ import annotations

import hashlib
import json
import struct
import time
import uuid
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any

# HeaderLength on the wire is the offset of PayloadLength, so it excludes that last 4-byte field.
HEADER_LENGTH = 116
PAYLOAD_OFFSET = HEADER_LENGTH + 4
SCHEMA_VERSION = 1
MESSAGE_TYPE_SIZE = 32
# The agent never sends more than 1024 bytes of output per message; keystrokes are chunked the same way.
MAX_STREAM_CHUNK = 1024

FLAG_SYN = 1
FLAG_FIN = 2
ACK_FLAGS = FLAG_SYN | FLAG_FIN

_U32 = 2**32 - 1
_U64 = 2**64 - 1
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1

# Fixed fields after the MessageType text, all big-endian.
_AFTER_TYPE = struct.Struct(">IQqQ16s32sI")
_TYPE_END = 4 + MESSAGE_TYPE_SIZE


class MessageType(StrEnum):
    INPUT_STREAM_DATA = "input_stream_data"
    OUTPUT_STREAM_DATA = "output_stream_data"
    ACKNOWLEDGE = "acknowledge"
    CHANNEL_CLOSED = "channel_closed"
    START_PUBLICATION = "start_publication"
    PAUSE_PUBLICATION = "pause_publication"


# The service sends these without the usual integrity fields, so receivers must not validate them.
UNCHECKED_TYPES = frozenset({MessageType.START_PUBLICATION, MessageType.PAUSE_PUBLICATION})


class PayloadType(IntEnum):
    NONE = 0
    OUTPUT = 1
    ERROR = 2
    SIZE = 3
    PARAMETER = 4
    HANDSHAKE_REQUEST = 5
    HANDSHAKE_RESPONSE = 6
    HANDSHAKE_COMPLETE = 7
    ENC_CHALLENGE_REQUEST = 8
    ENC_CHALLENGE_RESPONSE = 9
    FLAG = 10
    STDERR = 11
    EXIT_CODE = 12


class FlagValue(IntEnum):
    DISCONNECT_TO_PORT = 1
    TERMINATE_SESSION = 2
    CONNECT_TO_PORT_ERROR = 3


class FrameError(ValueError):
    """A frame that cannot be encoded, or a received one that must be dropped without an acknowledgement."""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Frame:
    message_type: str
    sequence_number: int = 0
    flags: int = 0
    payload_type: int = PayloadType.NONE
    payload: bytes = b""
    message_id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_ms: int = field(default_factory=now_ms)
    schema_version: int = SCHEMA_VERSION

    def json(self) -> Any:
        """The payload parsed as JSON; FrameError if it is not JSON."""
        try:
            return json.loads(self.payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FrameError(f"{self.message_type} payload is not JSON: {exc}") from exc


def message_id_to_wire(message_id: uuid.UUID) -> bytes:
    # The Go peers serialise a UUID as (least significant 8 bytes, most significant 8 bytes).
    raw = message_id.bytes
    return raw[8:] + raw[:8]


def message_id_from_wire(wire: bytes) -> uuid.UUID:
    if len(wire) != 16:
        raise FrameError(f"a MessageId is 16 bytes, got {len(wire)}")
    return uuid.UUID(bytes=wire[8:] + wire[:8])


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise FrameError(f"{name} {value} is outside {low}..{high}")


def encode(frame: Frame) -> bytes:
    """The wire bytes of one frame; FrameError if a field cannot be represented."""
    # Every keystroke and every acknowledgement is encoded here, so the known types' fields are made once.
    type_field = _TYPE_FIELDS.get(frame.message_type) or _type_field(frame.message_type)
    payload = frame.payload
    if not (
        0 <= frame.schema_version <= _U32
        and 0 <= frame.created_ms <= _U64
        and _I64_MIN <= frame.sequence_number <= _I64_MAX
        and 0 <= frame.flags <= _U64
        and 0 <= frame.payload_type <= _U32
        and len(payload) <= _U32
    ):
        _check_range("SchemaVersion", frame.schema_version, 0, _U32)
        _check_range("CreatedDate", frame.created_ms, 0, _U64)
        _check_range("SequenceNumber", frame.sequence_number, _I64_MIN, _I64_MAX)
        _check_range("Flags", frame.flags, 0, _U64)
        _check_range("PayloadType", int(frame.payload_type), 0, _U32)
        _check_range("PayloadLength", len(payload), 0, _U32)
    return b"".join(
        (
            _HEADER_LENGTH_FIELD,
            type_field,
            _AFTER_TYPE.pack(
                frame.schema_version,
                frame.created_ms,
                frame.sequence_number,
                frame.flags,
                message_id_to_wire(frame.message_id),
                hashlib.sha256(payload).digest(),
                int(frame.payload_type),
            ),
            len(payload).to_bytes(4, "big"),
            payload,
        )
    )


def _type_field(message_type: str) -> bytes:
    """MessageType as its 32-byte field; FrameError if it cannot be one."""
    try:
        type_bytes = message_type.encode("ascii")
    except UnicodeEncodeError as exc:
        raise FrameError(f"MessageType must be ASCII, got {message_type!r}") from exc
    if not type_bytes.strip():
        raise FrameError("MessageType must not be empty")
    if len(type_bytes) > MESSAGE_TYPE_SIZE:
        raise FrameError(f"MessageType is at most {MESSAGE_TYPE_SIZE} bytes, got {len(type_bytes)}")
    # Spaces, not NULs, because that is what the Go writers emit.
    return type_bytes.ljust(MESSAGE_TYPE_SIZE, b" ")


_HEADER_LENGTH_FIELD = HEADER_LENGTH.to_bytes(4, "big")
_TYPE_FIELDS = {kind: _type_field(kind) for kind in MessageType}


def decode(data: bytes, *, validate: bool = True) -> Frame:
    """Parse one received frame; FrameError (drop it, do not acknowledge) if it is malformed or corrupt."""
    if len(data) < PAYLOAD_OFFSET:
        raise FrameError(f"truncated frame: {len(data)} bytes, the header alone needs {PAYLOAD_OFFSET}")
    header_length = int.from_bytes(data[0:4], "big")
    message_type = data[4:_TYPE_END].rstrip(b"\x00 \t\r\n").decode("ascii", errors="replace")
    schema, created, seq, flags, wire_id, digest, payload_type = _AFTER_TYPE.unpack_from(data, _TYPE_END)
    if message_type in UNCHECKED_TYPES:
        validate = False
    if header_length == 0:
        if validate:
            raise FrameError("HeaderLength is 0")
        header_length = HEADER_LENGTH
    if header_length < HEADER_LENGTH:
        raise FrameError(
            f"HeaderLength {header_length} is shorter than the {HEADER_LENGTH}-byte fixed header"
        )
    # HeaderLength names where PayloadLength sits, which tolerates a longer header from a future schema.
    length_at = header_length
    if len(data) < length_at + 4:
        raise FrameError(f"truncated frame: {len(data)} bytes, PayloadLength sits at {length_at}")
    payload_length = int.from_bytes(data[length_at : length_at + 4], "big")
    start = length_at + 4
    if payload_length > len(data) - start:
        raise FrameError(
            f"PayloadLength {payload_length} exceeds the {len(data) - start} bytes after the header"
        )
    payload = data[start : start + payload_length]
    if validate:
        if not message_type:
            raise FrameError("MessageType is empty")
        if created == 0:
            raise FrameError(f"{message_type} seq {seq} has CreatedDate 0")
        if payload_length and hashlib.sha256(payload).digest() != digest:
            raise FrameError(f"{message_type} seq {seq}: payload digest mismatch")
    return Frame(
        message_type=message_type,
        sequence_number=seq,
        flags=flags,
        payload_type=payload_type,
        payload=bytes(payload),
        message_id=message_id_from_wire(wire_id),
        created_ms=created,
        schema_version=schema,
    )


# One encoder for every acknowledgement: json.dumps with separators would build a new one each call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: Any) -> bytes:
    return _COMPACT.encode(value).encode()


def acknowledgement(of: Frame) -> Frame:
    """The acknowledge frame for a received stream message (not itself numbered or acknowledged)."""
    payload = compact_json(
        {
            "AcknowledgedMessageType": of.message_type,
            "AcknowledgedMessageId": str(of.message_id),
            "AcknowledgedMessageSequenceNumber": of.sequence_number,
            "IsSequentialMessage": True,
        }
    )
    return Frame(MessageType.ACKNOWLEDGE, sequence_number=0, flags=ACK_FLAGS, payload=payload)


@dataclass(frozen=True)
class Acknowledged:
    message_type: str
    message_id: str
    sequence_number: int


def parse_acknowledgement(frame: Frame) -> Acknowledged:
    body = frame.json()
    try:
        seq = body["AcknowledgedMessageSequenceNumber"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError(type(seq).__name__)
        return Acknowledged(
            message_type=str(body.get("AcknowledgedMessageType", "")),
            message_id=str(body.get("AcknowledgedMessageId", "")),
            sequence_number=seq,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise FrameError(f"acknowledge payload lacks a sequence number: {exc}") from exc


def size_payload(cols: int, rows: int) -> bytes:
    _check_range("cols", cols, 0, _U32)
    _check_range("rows", rows, 0, _U32)
    return compact_json({"cols": cols, "rows": rows})


def flag_payload(flag: FlagValue | int) -> bytes:
    _check_range("flag", int(flag), 0, _U32)
    return int(flag).to_bytes(4, "big")


@dataclass(frozen=True)
class ChannelClosed:
    session_id: str
    output: str


def parse_channel_closed(frame: Frame) -> ChannelClosed:
    """channel_closed is service-generated and loosely specified, so a bad body still closes the channel."""
    try:
        body = frame.json()
    except FrameError:
        return ChannelClosed(session_id="", output="")
    if not isinstance(body, dict):
        return ChannelClosed(session_id="", output="")
    return ChannelClosed(session_id=str(body.get("SessionId") or ""), output=str(body.get("Output") or ""))
