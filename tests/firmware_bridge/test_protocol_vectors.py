"""The test vectors published in PROTOCOL.md are exactly what the codec produces and accepts.

The vectors are parsed out of the document itself, so the document cannot drift from the code.
"""

from __future__ import annotations

import binascii
import re
from pathlib import Path

import pytest

from firmware_bridge.codec import (
    Ack,
    Fault,
    FaultCode,
    FrameDecoder,
    Heartbeat,
    Hello,
    Loop,
    Message,
    MessageType,
    Ping,
    PingFlags,
    Pong,
    SetSignal,
    SignalState,
    TagRead,
    build_frame,
    cobs_decode,
    cobs_encode,
    crc16_ccitt,
    encode_frame,
)

PROTOCOL_MD = Path(__file__).parents[2] / "firmware_bridge" / "PROTOCOL.md"
EPC = bytes.fromhex("E280689400005003A4B1C201")

# The same messages as the "message" lines of PROTOCOL.md, as (message, seq).
EXPECTED: dict[str, tuple[Message, int]] = {
    "hello": (Hello(1, 1, 4, 2, 0x5EED0001, 0, "LANE-03"), 0),
    "tag_read": (TagRead(123456, 2, -523, EPC), 1),
    "tag_read_with_tid": (
        TagRead(123470, 1, -487, EPC, bytes.fromhex("E2806894200050035F9A0001")),
        2,
    ),
    "loop_occupied": (Loop(120000, 1, occupied=True), 3),
    "loop_clear": (Loop(124500, 1, occupied=False), 5),
    "heartbeat": (Heartbeat(3600000, 1234, 2, 17, 1), 0),
    "fault": (Fault(130000, FaultCode.ANTENNA_VSWR, "antenna 2 vswr 3.1"), 6),
    "pong": (Pong(0xDEADBEEF), 0),
    "ack": (Ack(6), 0),
    "set_signal": (SetSignal(SignalState.STOP), 7),
    "ping": (Ping(0x01020304, PingFlags.HELLO_REQUEST), 0),
}

_BLOCK = re.compile(r"```text\nvector (\w+)\n(.*?)```", re.DOTALL)


def documented_vectors() -> dict[str, dict[str, bytes]]:
    vectors: dict[str, dict[str, bytes]] = {}
    for name, body in _BLOCK.findall(PROTOCOL_MD.read_text(encoding="utf-8")):
        lines = dict(line.split(None, 1) for line in body.strip().splitlines())
        vectors[name] = {key: bytes.fromhex(lines[key]) for key in ("payload", "frame", "wire")}
    return vectors


VECTORS = documented_vectors()


def test_every_documented_vector_has_a_message_here_and_every_type_is_covered():
    assert set(VECTORS) == set(EXPECTED)
    assert {m.message_type for m, _ in EXPECTED.values()} == set(MessageType)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_codec_encodes_the_documented_bytes(name: str):
    message, seq = EXPECTED[name]
    vector = VECTORS[name]
    assert message.to_bytes() == vector["payload"]
    assert build_frame(message, seq) == vector["frame"]
    assert encode_frame(message, seq) == vector["wire"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_codec_decodes_the_documented_bytes(name: str):
    message, seq = EXPECTED[name]
    (frame,) = FrameDecoder().feed(VECTORS[name]["wire"])
    assert (frame.seq, frame.message) == (seq, message)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_documented_frames_carry_an_independently_computed_crc(name: str):
    """binascii.crc_hqx with init 0xFFFF is CRC-16/CCITT-FALSE: an oracle outside the codec."""
    frame = VECTORS[name]["frame"]
    assert frame[-2:] == binascii.crc_hqx(frame[:-2], 0xFFFF).to_bytes(2, "little")
    assert VECTORS[name]["wire"] == b"\x00" + cobs_encode(frame) + b"\x00"


def test_documented_crc_check_value_and_cobs_examples_hold():
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    assert 'crc16_ccitt("123456789") = 0x29B1' in text
    assert crc16_ccitt(b"123456789") == 0x29B1
    examples = re.findall(r"`([0-9a-f ]+)` → `([0-9a-f ]+)`", text)
    assert len(examples) == 3
    for plain, encoded in examples:
        assert cobs_encode(bytes.fromhex(plain)) == bytes.fromhex(encoded)
        assert cobs_decode(bytes.fromhex(encoded)) == bytes.fromhex(plain)
