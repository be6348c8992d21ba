"""Data-channel frames: the documented bytes, round trips, and what a receiver must refuse."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminal.transports.ssm import messages as m
from tests.support.ssm_agent import pack, unpack

WORKED_EXAMPLE = bytes.fromhex(
    "00000074696e7075745f73747265616d"
    "5f646174612020202020202020202020"
    "20202020000000010000018bcfe56800"
    "00000000000000030000000000000000"
    "8a612b7e4c9d0a115f0c1c329d3b4c8e"
    "1d887ce0f8672e4914d9000e801cd74e"
    "cd805dd9366c0bc42dc16adc0197dc2f"
    "00000001000000036c730d"
)

message_types = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=m.MESSAGE_TYPE_SIZE
)
frames = st.builds(
    m.Frame,
    message_type=message_types,
    sequence_number=st.integers(-(2**63), 2**63 - 1),
    flags=st.integers(0, 2**64 - 1),
    payload_type=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=4096),
    message_id=st.uuids(),
    created_ms=st.integers(1, 2**64 - 1),
    schema_version=st.integers(0, 2**32 - 1),
)


def test_it_encodes_the_worked_example_byte_for_byte():
    frame = m.Frame(
        m.MessageType.INPUT_STREAM_DATA,
        sequence_number=3,
        flags=0,
        payload_type=m.PayloadType.OUTPUT,
        payload=b"ls\r",
        message_id=uuid.UUID("5f0c1c32-9d3b-4c8e-8a61-2b7e4c9d0a11"),
        created_ms=1_700_000_000_000,
    )

    assert len(WORKED_EXAMPLE) == 123
    assert m.encode(frame) == WORKED_EXAMPLE
    assert m.decode(WORKED_EXAMPLE) == frame


def test_it_builds_the_documented_acknowledgement():
    inbound = m.Frame(
        m.MessageType.OUTPUT_STREAM_DATA,
        sequence_number=7,
        message_id=uuid.UUID("0b9e8f3a-1c2d-4e5f-9a8b-7c6d5e4f3a2b"),
    )

    ack = m.acknowledgement(inbound)
    wire = m.encode(ack)

    assert ack.payload == (
        b'{"AcknowledgedMessageType":"output_stream_data",'
        b'"AcknowledgedMessageId":"0b9e8f3a-1c2d-4e5f-9a8b-7c6d5e4f3a2b",'
        b'"AcknowledgedMessageSequenceNumber":7,"IsSequentialMessage":true}'
    )
    assert (len(ack.payload), len(wire)) == (176, 296)
    assert (ack.sequence_number, ack.flags, ack.payload_type) == (0, 3, 0)
    assert m.parse_acknowledgement(m.decode(wire)).sequence_number == 7


@given(frames)
def test_it_round_trips_any_frame(frame):
    wire = m.encode(frame)

    assert len(wire) == m.PAYLOAD_OFFSET + len(frame.payload)
    assert m.decode(wire) == frame


@given(st.integers(0, 2**63 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=2048), st.uuids())
def test_it_agrees_with_the_emulators_independent_codec(seq, payload_type, payload, message_id):
    ours = m.Frame("output_stream_data", seq, m.FLAG_SYN, payload_type, payload, message_id)

    theirs = unpack(m.encode(ours))

    assert (theirs.type, theirs.seq, theirs.flags) == ("output_stream_data", seq, m.FLAG_SYN)
    assert (theirs.payload_type, theirs.payload, theirs.message_id) == (payload_type, payload, message_id)
    back = m.decode(pack("output_stream_data", seq, 1, payload_type, payload, message_id))
    assert (back.sequence_number, back.payload_type, back.payload, back.message_id) == (
        seq,
        payload_type,
        payload,
        message_id,
    )


@given(st.uuids())
def test_it_swaps_the_message_id_halves_on_the_wire(message_id):
    wire = m.encode(m.Frame("acknowledge", message_id=message_id))

    assert wire[64:72] == message_id.bytes[8:16]
    assert wire[72:80] == message_id.bytes[0:8]
    assert m.message_id_from_wire(wire[64:80]) == message_id


@given(st.binary(min_size=1, max_size=512), st.data())
def test_it_rejects_a_payload_that_does_not_match_its_digest(payload, data):
    wire = bytearray(m.encode(m.Frame("output_stream_data", payload=payload)))
    index = data.draw(st.integers(m.PAYLOAD_OFFSET, len(wire) - 1))
    wire[index] ^= data.draw(st.integers(1, 255))

    with pytest.raises(m.FrameError, match="digest mismatch"):
        m.decode(bytes(wire))


@given(st.binary(max_size=256), st.data())
def test_it_rejects_a_truncated_frame_with_a_clear_error(payload, data):
    wire = m.encode(m.Frame("output_stream_data", payload=payload))
    cut = data.draw(st.integers(0, len(wire) - 1))

    with pytest.raises(m.FrameError, match=r"truncated|exceeds"):
        m.decode(wire[:cut])


@given(st.binary(max_size=256), st.integers(1, 2**32 - 1))
def test_it_rejects_a_payload_length_beyond_the_frame(payload, extra):
    wire = bytearray(m.encode(m.Frame("output_stream_data", payload=payload)))
    wire[116:120] = min(len(payload) + extra, 2**32 - 1).to_bytes(4, "big")

    with pytest.raises(m.FrameError, match=r"PayloadLength \d+ exceeds the \d+ bytes after the header"):
        m.decode(bytes(wire))


@given(message_types, st.lists(st.sampled_from(b"\x00 "), min_size=0, max_size=32))
def test_it_strips_trailing_nul_and_space_padding(message_type, padding):
    wire = bytearray(m.encode(m.Frame(message_type, payload=b"p")))
    name = message_type.encode()
    tail = bytes(padding)[: m.MESSAGE_TYPE_SIZE - len(name)]
    wire[4:36] = (name + tail).ljust(m.MESSAGE_TYPE_SIZE, b"\x00")

    assert m.decode(bytes(wire)).message_type == name.decode()


def test_it_rejects_a_zero_header_length_or_created_date_or_empty_type():
    good = m.encode(m.Frame("output_stream_data", payload=b"x"))

    with pytest.raises(m.FrameError, match="HeaderLength is 0"):
        m.decode(bytes(4) + good[4:])
    with pytest.raises(m.FrameError, match="CreatedDate 0"):
        m.decode(good[:40] + bytes(8) + good[48:])
    with pytest.raises(m.FrameError, match="MessageType is empty"):
        m.decode(good[:4] + b" " * 32 + good[36:])
    with pytest.raises(m.FrameError, match="shorter than the 116-byte fixed header"):
        m.decode((100).to_bytes(4, "big") + good[4:])


def test_it_skips_validation_for_publication_messages():
    frame = m.Frame("pause_publication", created_ms=0, payload=b"{}")
    wire = bytearray(m.encode(frame))
    wire[80:112] = bytes(32)  # the service does not bother with a digest
    wire[0:4] = bytes(4)

    decoded = m.decode(bytes(wire))

    assert decoded.message_type == "pause_publication"
    assert decoded.payload == b"{}"


def test_it_ignores_bytes_after_the_payload():
    wire = m.encode(m.Frame("output_stream_data", payload=b"abc"))

    assert m.decode(wire + b"junk").payload == b"abc"


def test_it_accepts_an_empty_payload_whatever_its_digest():
    wire = bytearray(m.encode(m.Frame("acknowledge")))
    wire[80:112] = bytes(32)

    assert m.decode(bytes(wire)).payload == b""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"message_type": ""}, "must not be empty"),
        ({"message_type": "x" * 33}, "at most 32 bytes"),
        ({"message_type": "café"}, "must be ASCII"),
        ({"sequence_number": 2**63}, "SequenceNumber"),
        ({"flags": -1}, "Flags"),
        ({"payload_type": 2**32}, "PayloadType"),
        ({"created_ms": -1}, "CreatedDate"),
    ],
)
def test_it_refuses_to_encode_what_the_header_cannot_hold(fields, message):
    frame = m.Frame(**{"message_type": "input_stream_data", **fields})

    with pytest.raises(m.FrameError, match=message):
        m.encode(frame)


def test_it_encodes_size_and_flag_payloads():
    assert m.size_payload(120, 40) == b'{"cols":120,"rows":40}'
    assert m.flag_payload(m.FlagValue.TERMINATE_SESSION) == b"\x00\x00\x00\x02"


def test_it_reads_channel_closed_even_when_its_body_is_not_json():
    body = b'{"SessionId":"s-1","Output":"Your session timed out due to inactivity and has been terminated."}'

    assert m.parse_channel_closed(m.Frame("channel_closed", payload=body)).output.startswith("Your session")
    assert m.parse_channel_closed(m.Frame("channel_closed", payload=b"\xff")).output == ""


def test_the_digest_is_sha256_of_the_payload():
    wire = m.encode(m.Frame("input_stream_data", payload=b"ls\r"))

    assert wire[80:112] == hashlib.sha256(b"ls\r").digest()
