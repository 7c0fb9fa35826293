"""Frames and messages: round trips, resynchronisation, and every rejection counted."""

from __future__ import annotations

import binascii
import logging
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.codec import (
    MAX_ENCODED_SIZE,
    MAX_EPC_SIZE,
    MESSAGE_CLASSES,
    Ack,
    CrcError,
    DecodedFrame,
    Fault,
    FieldValueError,
    FrameDecoder,
    FramingError,
    Heartbeat,
    Hello,
    Loop,
    Message,
    Ping,
    PingFlags,
    Pong,
    SetSignal,
    SignalState,
    TagRead,
    UnknownTypeError,
    VersionError,
    build_frame,
    cobs_decode,
    cobs_encode,
    crc16_ccitt,
    decode_wire_frame,
    encode_frame,
    parse_frame,
)

EPC = bytes.fromhex("E280689400005003A4B1C201")

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ascii_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=32)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ack, u16),
    st.builds(Hello, u8, u8, u8, u8, u32, u16, ascii_text),
    st.builds(
        TagRead,
        u32,
        u8,
        st.integers(-0x8000, 0x7FFF),
        st.binary(min_size=1, max_size=MAX_EPC_SIZE),
        st.none() | st.binary(min_size=1, max_size=62),
    ),
    st.builds(Loop, u32, u8, st.booleans()),
    st.builds(Heartbeat, u32, u32, u16, u32, u32),
    st.builds(
        Fault, u32, u16, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=64)
    ),
    st.builds(Pong, u32),
    st.builds(SetSignal, st.sampled_from(SignalState)),
    st.builds(Ping, u32, st.builds(PingFlags, u8)),
)
frames = st.builds(DecodedFrame, u16, messages)


def wire(frame: DecodedFrame) -> bytes:
    return encode_frame(frame.message, frame.seq)


def is_subsequence(needles: list[DecodedFrame], haystack: list[DecodedFrame]) -> bool:
    remaining = iter(haystack)
    return all(any(item == needle for item in remaining) for needle in needles)


# --- CRC and COBS ---


@given(st.binary(max_size=600))
def test_crc_matches_an_independent_implementation(data: bytes):
    assert crc16_ccitt(data) == binascii.crc_hqx(data, 0xFFFF)


def test_crc_can_be_continued_over_several_buffers():
    assert crc16_ccitt(b"56789", crc16_ccitt(b"1234")) == 0x29B1


@pytest.mark.parametrize(
    ("plain", "encoded"),
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
        (bytes(range(1, 255)) + b"\x00", b"\xff" + bytes(range(1, 255)) + b"\x01\x01"),
        (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    ],
)
def test_cobs_matches_the_published_examples(plain: bytes, encoded: bytes):
    assert cobs_encode(plain) == encoded
    assert cobs_decode(encoded) == plain


@given(st.binary(max_size=1000))
def test_cobs_round_trips_without_zero_bytes_and_bounded_overhead(data: bytes):
    encoded = cobs_encode(data)
    assert b"\x00" not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


def test_cobs_decoder_says_how_many_bytes_a_block_expected():
    with pytest.raises(
        FramingError, match="COBS code 0x05 at offset 0 expected 4 data bytes, got 2"
    ):
        cobs_decode(b"\x05\x11\x22")


# --- Messages and frames ---


@given(messages)
def test_every_payload_round_trips(message: Message):
    assert type(message).from_bytes(message.to_bytes()) == message


@given(frames)
def test_every_frame_round_trips_through_the_wire(frame: DecodedFrame):
    assert FrameDecoder().feed(wire(frame)) == [frame]
    assert parse_frame(build_frame(frame.message, frame.seq)) == frame


@given(st.lists(frames, max_size=8))
def test_frames_decode_byte_by_byte(sent: list[DecodedFrame]):
    decoder = FrameDecoder()
    received = []
    for byte in b"".join(wire(f) for f in sent):
        received += decoder.feed(bytes((byte,)))
    assert received == sent
    assert decoder.counters.frames_rejected == 0


@given(st.lists(frames, max_size=8), st.data())
def test_frames_decode_in_random_chunks(sent: list[DecodedFrame], data: st.DataObject):
    stream = b"".join(wire(f) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder = FrameDecoder()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        received += decoder.feed(stream[start:end])
    assert received == sent


@given(st.lists(st.tuples(st.binary(max_size=400), frames), max_size=8), st.binary(max_size=400))
def test_frames_survive_random_garbage_between_them(
    pieces: list[tuple[bytes, DecodedFrame]], tail: bytes
):
    """Garbage is skipped and counted; every frame still arrives, in order."""
    stream = b"".join(garbage + wire(frame) for garbage, frame in pieces) + tail
    decoder = FrameDecoder()
    received = decoder.feed(stream) + decoder.feed(b"\x00")
    assert is_subsequence([frame for _, frame in pieces], received)
    assert decoder.counters.frames_ok == len(received)


@given(st.lists(st.tuples(frames, st.booleans(), st.integers(1, 300)), min_size=1, max_size=8))
def test_truncated_frames_are_counted_and_the_frames_around_them_still_arrive(
    plan: list[tuple[DecodedFrame, bool, int]],
):
    stream = b""
    expected: list[DecodedFrame] = []
    truncated_rejects = 0
    for frame, truncate, keep in plan:
        encoded = wire(frame)
        if truncate:
            # Lose the tail, trailing delimiter included, as when a cable glitches mid-frame.
            body = encoded[1 : 1 + min(keep, len(encoded) - 2)]
            stream += b"\x00" + body
            try:
                expected.append(decode_wire_frame(body))  # a shortened frame can still be valid
            except (FramingError, CrcError, VersionError, UnknownTypeError, ValueError):
                truncated_rejects += 1
        else:
            stream += encoded
            expected.append(frame)
    decoder = FrameDecoder()
    assert decoder.feed(stream + b"\x00") == expected
    assert decoder.counters.frames_rejected == truncated_rejects


def test_bad_crc_is_counted_and_reported_as_expected_versus_actual():
    frame = bytearray(build_frame(SetSignal(SignalState.STOP), 7))
    frame[-2:] = b"\x00\x00"
    decoder = FrameDecoder()

    assert decoder.feed(b"\x00" + cobs_encode(bytes(frame)) + b"\x00") == []

    assert decoder.counters.crc_errors == 1
    assert str(decoder.last_error) == "expected crc 0x29c1, got 0x0000"
    assert decoder.counters.bytes_discarded == len(cobs_encode(bytes(frame)))


def reframed(body: bytes) -> bytes:
    """A frame with a correct CRC around an arbitrary header and payload."""
    frame = body + struct.pack("<H", crc16_ccitt(body))
    return b"\x00" + cobs_encode(frame) + b"\x00"


@pytest.mark.parametrize(
    ("body", "counter", "message"),
    [
        (b"\x02\x20\x07\x00\x02", "version_errors", "expected protocol version 1, got 2"),
        (b"\x01\x7f\x00\x00", "unknown_types", "unknown message type 0x7f"),
        (
            b"\x01\x20\x07\x00\x02\x00",
            "payload_errors",
            "SET_SIGNAL payload: expected 1 bytes, got 2 (1 trailing)",
        ),
        (
            b"\x01\x20\x07\x00\x09",
            "payload_errors",
            "SET_SIGNAL payload: field state expected 0..3, got 9",
        ),
        (
            b"\x01\x12\x03\x00\xc0\xd4\x01\x00\x01\x02",
            "payload_errors",
            "LOOP payload: field state expected 0 or 1, got 2",
        ),
        (
            b"\x01\x11\x01\x00\x40\xe2\x01\x00\x02\xf5\xfd\x00\x00",
            "payload_errors",
            "TAG_READ payload: field epc_len expected 1..62, got 0",
        ),
        (
            b"\x01\x15\x00\x00\xef\xbe",
            "payload_errors",
            "PONG payload: field nonce expected 4 bytes at offset 0, got 2",
        ),
        (b"\x01\x20\x07", "framing_errors", "expected a frame of 6..261 bytes, got 5"),
    ],
)
def test_rejected_frames_are_counted_by_kind_and_explained(body: bytes, counter: str, message: str):
    decoder = FrameDecoder()
    good = encode_frame(Pong(1), 0)

    assert decoder.feed(reframed(body) + good) == [DecodedFrame(0, Pong(1))]

    assert getattr(decoder.counters, counter) == 1
    assert decoder.counters.frames_rejected == 1
    assert str(decoder.last_error) == message


def test_a_run_without_delimiter_is_discarded_in_bounded_memory_then_decoding_resyncs():
    decoder = FrameDecoder()
    noise = b"\x55" * 10_000

    assert decoder.feed(noise[:5000]) == []
    assert decoder.feed(noise[5000:] + encode_frame(Ack(3), 0)) == [DecodedFrame(0, Ack(3))]

    assert decoder.counters.framing_errors == 1
    assert decoder.counters.bytes_discarded == len(noise)
    assert "expected a delimiter within 263 bytes" in str(decoder.last_error)


def test_the_largest_frame_fits_the_bounded_buffer():
    largest = TagRead(0xFFFFFFFF, 0xFF, -1, b"\xff" * 62, b"\xff" * 62)
    assert len(encode_frame(largest, 0xFFFF)) - 2 <= MAX_ENCODED_SIZE
    assert FrameDecoder().feed(encode_frame(largest, 0xFFFF)) == [DecodedFrame(0xFFFF, largest)]


def test_reset_forgets_a_partial_frame():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(Ack(1), 0)[:4])
    decoder.reset()
    assert decoder.feed(encode_frame(Ack(2), 0)[1:]) == [DecodedFrame(0, Ack(2))]


def test_rejections_are_summarised_once_a_minute_and_bytes_only_at_debug(caplog, monkeypatch):
    """A bad cable must not flood journald: one WARNING per minute with a count, no EPC bytes."""
    epc_frame = bytearray(build_frame(TagRead(1, 1, -500, EPC), 1))
    epc_frame[-1] ^= 0xFF
    bad = b"\x00" + cobs_encode(bytes(epc_frame)) + b"\x00"
    clock = [1000.0]
    monkeypatch.setattr("firmware_bridge.codec.time.monotonic", lambda: clock[0])
    decoder = FrameDecoder()

    with caplog.at_level(logging.DEBUG, logger="firmware_bridge.codec"):
        decoder.feed(bad)
        clock[0] += 30
        decoder.feed(bad * 3)
        clock[0] += 31
        decoder.feed(bad)

    epc_hex_fragment = EPC[:6].hex(" ")
    above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert above_debug == [
        f"serial: dropped 1 bad frame(s) since the last report; latest: {decoder.last_error}",
        f"serial: dropped 4 bad frame(s) since the last report; latest: {decoder.last_error}",
    ]
    assert decoder.counters.crc_errors == 5
    assert any(epc_hex_fragment in line for line in debug)
    assert not any(epc_hex_fragment in line for line in above_debug)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TagRead(0, 256, 0, EPC), "TAG_READ.antenna: expected integer 0..255, got 256"),
        (
            lambda: TagRead(0, 1, 0, b"\x01" * 63),
            "TAG_READ.epc: expected 1..62 bytes, got '<63 bytes>'",
        ),
        (lambda: TagRead(0, 1, 0, EPC, b""), "TAG_READ.tid: expected 1..62 bytes, got '<0 bytes>'"),
        (
            lambda: Loop(-1, 1, occupied=True),
            "LOOP.timestamp_ms: expected integer 0..4294967295, got -1",
        ),
        (
            lambda: Hello(1, 1, 0, 0, 1, 0, "LANE\n3"),
            "HELLO.controller_id: expected printable ASCII of at most 32 characters, got 'LANE\\n3'",
        ),
        (lambda: Fault(0, 0x10000), "FAULT.code: expected integer 0..65535, got 65536"),
        (lambda: SetSignal(2), "SET_SIGNAL.state: expected a SignalState, got 2"),  # type: ignore[arg-type]
    ],
)
def test_messages_refuse_values_the_wire_cannot_carry(build, message: str):
    with pytest.raises(FieldValueError) as caught:
        build()
    assert str(caught.value) == message


def test_tag_read_repr_and_errors_never_show_the_card_number():
    read = TagRead(1, 1, -500, EPC, bytes.fromhex("E2806894200050035F9A0001"))
    assert EPC.hex() not in repr(read).lower()
    assert "E2806894" not in repr(read)
    assert read.epc_hex == "E280689400005003A4B1C201"
    assert read.rssi_dbm == -50.0


def test_ping_keeps_flag_bits_it_does_not_know():
    ping = Ping(1, PingFlags(0x81))
    assert Ping.from_bytes(ping.to_bytes()).flags == PingFlags(0x81)
    assert PingFlags.HELLO_REQUEST in ping.flags


def test_every_message_type_has_a_class_that_claims_it():
    assert all(cls.message_type is kind for kind, cls in MESSAGE_CLASSES.items())
