"""The codec refuses malformed input with errors naming what is wrong, skips what it does not
know, frames a TCP stream cut anywhere, and round-trips every message it builds."""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llrp.codec import (
    DecodeStats,
    FrameDecoder,
    LlrpDecodeError,
    LlrpEncodeError,
    LlrpFramingError,
    UnknownMessageTypeError,
    UnsupportedVersionError,
    decode_message,
    encode_message,
)
from llrp.messages import (
    AddROSpec,
    GetReaderConfigResponse,
    Keepalive,
    Message,
    ReaderEventNotification,
    ROAccessReport,
    SetReaderConfig,
    SetReaderConfigResponse,
)
from llrp.parameters import (
    FieldError,
    GpiEvent,
    GpiPortCurrentState,
    GpoWriteData,
    KeepaliveSpec,
    LlrpStatus,
    ParameterError,
    ReaderEventNotificationData,
)
from llrp.specs import (
    C1G2ReadOpSpecResult,
    C1G2TargetTag,
    MemoryBank,
    TagReportData,
    epc_memory,
    gen2_crc16,
    lane_rospec,
)
from tests.llrp.support import hexbytes

EPC = bytes.fromhex("E280689400005003A4B1C201")


def message_bytes(message_type: int, body: bytes, message_id: int = 1, version: int = 1) -> bytes:
    """A message header (built here independently of the codec) around ``body``."""
    return struct.pack(">HII", (version << 10) | message_type, 10 + len(body), message_id) + body


def tlv(parameter_type: int, body: bytes) -> bytes:
    return struct.pack(">HH", parameter_type, 4 + len(body)) + body


OK_STATUS = tlv(287, b"\x00\x00\x00\x00")


# --- malformed input ---


def test_a_message_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(LlrpDecodeError, match="a header alone is 10"):
        decode_message(b"\x04\x3e\x00\x00")


def test_a_message_whose_length_field_disagrees_with_its_size_is_refused() -> None:
    wire = encode_message(Keepalive(), 1)
    with pytest.raises(LlrpDecodeError, match="header says 10 bytes, got 11"):
        decode_message(wire + b"\x00")


def test_a_field_cut_short_names_the_field_and_the_bytes_left() -> None:
    # GPIOCapabilities inside... simplest: a GPIEvent with its port number but no state byte.
    body = tlv(246, tlv(128, bytes(8)) + tlv(248, b"\x00\x01"))
    with pytest.raises(LlrpDecodeError) as caught:
        decode_message(message_bytes(63, body))
    assert caught.value.where == "ReaderEventNotification > ReaderEventNotificationData > GpiEvent"
    assert caught.value.problem == "field GPIEvent needs 1 bytes, 0 left"


def test_a_parameter_claiming_more_bytes_than_its_parent_holds_is_refused() -> None:
    body = struct.pack(">HH", 287, 40) + b"\x00\x00\x00\x00"
    with pytest.raises(LlrpDecodeError, match=r"LLRP_STATUS \(287\) claims 40 bytes, 8 left"):
        decode_message(message_bytes(13, body))


def test_a_parameter_length_below_its_own_header_is_refused() -> None:
    body = struct.pack(">HH", 287, 3)
    with pytest.raises(LlrpDecodeError, match="has length 3, less than its own header"):
        decode_message(message_bytes(13, body))


def test_a_tlv_with_a_tv_type_number_is_refused() -> None:
    body = OK_STATUS + struct.pack(">HH", 5, 4)
    with pytest.raises(LlrpDecodeError, match="TLV types start at 128"):
        decode_message(message_bytes(13, body))


def test_a_tv_parameter_of_unknown_type_cannot_be_skipped() -> None:
    report = tlv(240, bytes([0x8D]) + EPC + bytes([0x80 | 99, 0, 0]))
    with pytest.raises(LlrpDecodeError, match="unknown TV parameter type 99"):
        decode_message(message_bytes(61, report))


def test_a_truncated_tv_parameter_is_refused() -> None:
    report = tlv(240, bytes([0x8D]) + EPC + bytes([0x81, 0x00]))  # AntennaID needs 2 bytes
    with pytest.raises(LlrpDecodeError, match=r"ANTENNA_ID \(1\) needs 2 value bytes, 1 left"):
        decode_message(message_bytes(61, report))


def test_a_response_without_its_llrp_status_is_refused() -> None:
    with pytest.raises(LlrpDecodeError, match="missing LlrpStatus"):
        decode_message(message_bytes(13, b""))


def test_two_of_a_parameter_allowed_once_are_refused() -> None:
    with pytest.raises(LlrpDecodeError, match="expected at most one LlrpStatus, got 2"):
        decode_message(message_bytes(13, OK_STATUS + OK_STATUS))


def test_a_known_parameter_out_of_place_is_refused() -> None:
    gpi_event = tlv(248, b"\x00\x01\x80")
    with pytest.raises(LlrpDecodeError, match=r"unexpected GPI_EVENT \(248\)"):
        decode_message(message_bytes(13, OK_STATUS + gpi_event))


def test_a_tag_report_without_an_epc_is_refused() -> None:
    with pytest.raises(LlrpDecodeError, match="expected one EPC"):
        decode_message(message_bytes(61, tlv(240, bytes([0x81, 0, 1]))))


def test_an_event_notification_with_two_timestamps_is_refused() -> None:
    data = tlv(246, tlv(128, bytes(8)) + tlv(129, bytes(8)))
    with pytest.raises(LlrpDecodeError, match="expected one timestamp"):
        decode_message(message_bytes(63, data))


def test_text_that_is_not_utf8_is_refused() -> None:
    status = tlv(287, b"\x00\x64\x00\x02\xff\xfe")
    with pytest.raises(LlrpDecodeError, match="field ErrorDescription is not UTF-8"):
        decode_message(message_bytes(13, status))


def test_parameters_nested_absurdly_deep_are_refused() -> None:
    error = tlv(289, b"\x00\xdb\x00\xc9")
    for _ in range(40):
        error = tlv(289, b"\x00\xdb\x00\xc8" + error)
    with pytest.raises(LlrpDecodeError, match="nested deeper than 16"):
        decode_message(message_bytes(13, tlv(287, b"\x00\x64\x00\x00" + error)))


def test_an_unknown_message_type_is_reported_with_its_id() -> None:
    with pytest.raises(UnknownMessageTypeError) as caught:
        decode_message(message_bytes(500, b"", message_id=77))
    assert (caught.value.message_type, caught.value.message_id) == (500, 77)


def test_another_protocol_version_is_reported() -> None:
    with pytest.raises(UnsupportedVersionError, match="expected LLRP version 1, got 2"):
        decode_message(message_bytes(62, b"", version=2))


def test_decode_errors_never_show_the_bytes_of_a_card() -> None:
    report = tlv(240, bytes([0x8D]) + EPC + bytes([0x80 | 99]))
    with pytest.raises(LlrpDecodeError) as caught:
        decode_message(message_bytes(61, report))
    assert EPC.hex() not in str(caught.value).lower()
    assert EPC.hex().upper() not in str(caught.value)


# --- what is skipped ---


def test_unknown_and_vendor_parameters_are_skipped_and_counted() -> None:
    custom = tlv(1023, struct.pack(">II", 25882, 50) + b"\x01\x02")  # Impinj Custom
    future = tlv(1000, b"\x00\x00")  # a type this codec does not know
    report = tlv(240, bytes([0x8D]) + EPC + custom + bytes([0x81, 0, 3]) + future)
    stats = DecodeStats()
    _, message = decode_message(message_bytes(61, report + custom), stats)
    assert message == ROAccessReport((TagReportData(EPC, antenna_id=3),))
    assert sorted(stats.skipped_types) == [1000, 1023, 1023]


def test_tv_parameters_not_used_in_their_place_are_skipped() -> None:
    """An OpSpecID (TV 17) inside a TagReportData is known but unused there."""
    report = tlv(240, bytes([0x8D]) + EPC + bytes([0x80 | 17, 0, 1]))
    stats = DecodeStats()
    _, message = decode_message(message_bytes(61, report), stats)
    assert message == ROAccessReport((TagReportData(EPC),))
    assert stats.skipped_types == [17]


def test_reserved_bits_set_by_a_sender_are_ignored() -> None:
    wire = bytearray(encode_message(Keepalive(), 9))
    wire[0] |= 0xE0  # the three reserved bits of the header
    assert decode_message(bytes(wire)) == (9, Keepalive())


# --- encoding errors ---


def test_a_value_out_of_range_for_its_field_names_the_field() -> None:
    with pytest.raises(
        LlrpEncodeError, match=r"AISpec\.antenna_ids\[1\] = 70000: expected an integer 0\.\.65535"
    ):
        encode_message(AddROSpec(lane_rospec(1, [1, 70000])), 1)


def test_an_event_notification_needs_exactly_one_timestamp_to_encode() -> None:
    with pytest.raises(LlrpEncodeError, match="exactly one of utc_timestamp and uptime"):
        encode_message(ReaderEventNotification(ReaderEventNotificationData()), 1)


def test_a_negative_rssi_beyond_s8_is_refused() -> None:
    with pytest.raises(LlrpEncodeError, match="PEAK_RSSI = -200"):
        encode_message(ROAccessReport((TagReportData(EPC, peak_rssi=-200),)), 1)


# --- framing a TCP stream ---


def test_the_framer_refuses_a_length_below_the_header_and_stays_failed() -> None:
    decoder = FrameDecoder()
    with pytest.raises(LlrpFramingError, match=r"length 4 is outside 10\.\.1048576"):
        decoder.feed(message_bytes(62, b"")[:2] + b"\x00\x00\x00\x04" + bytes(4))
    with pytest.raises(LlrpFramingError):
        decoder.feed(encode_message(Keepalive(), 1))


def test_the_framer_refuses_an_absurd_length_before_buffering_it() -> None:
    decoder = FrameDecoder(max_message_size=4096)
    header = struct.pack(">HII", (1 << 10) | 61, 0x7FFFFFFF, 1)
    with pytest.raises(LlrpFramingError, match=r"length 2147483647 is outside 10\.\.4096"):
        decoder.feed(header)
    assert decoder.buffered == 0


def test_the_framer_holds_a_partial_message_until_the_rest_arrives() -> None:
    wire = encode_message(SetReaderConfigResponse(), 5)
    decoder = FrameDecoder()
    assert decoder.feed(wire[:7]) == []
    assert decoder.buffered == 7
    (raw,) = decoder.feed(wire[7:])
    assert (raw.message_id, raw.decode()) == (5, SetReaderConfigResponse())
    assert decoder.buffered == 0


SAMPLE_MESSAGES: list[Message] = [
    Keepalive(),
    ROAccessReport(tuple(TagReportData(EPC, antenna_id=a, peak_rssi=-50) for a in (1, 2, 3))),
    SetReaderConfigResponse(LlrpStatus(100, "no GPO 9", parameter_error=ParameterError(219, 201))),
    ReaderEventNotification(ReaderEventNotificationData(uptime=123, gpi_event=GpiEvent(2, False))),
    GetReaderConfigResponse(gpi_port_current_states=(GpiPortCurrentState(1, True, 1),)),
]


@settings(max_examples=60, deadline=None)
@given(
    order=st.lists(st.integers(0, len(SAMPLE_MESSAGES) - 1), min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 2000), max_size=20),
)
def test_framing_survives_any_chunking_of_the_stream(order: list[int], cuts: list[int]) -> None:
    sent = [(index + 1, SAMPLE_MESSAGES[kind]) for index, kind in enumerate(order)]
    stream = b"".join(encode_message(message, message_id) for message_id, message in sent)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    decoder = FrameDecoder()
    received = []
    for start, end in itertools.pairwise(points):
        received += [(raw.message_id, raw.decode()) for raw in decoder.feed(stream[start:end])]
    assert received == sent
    assert decoder.buffered == 0


# --- round trips ---

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 2**64 - 1)


def optional(strategy: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | strategy


tag_reports = st.builds(
    TagReportData,
    epc=st.binary(min_size=0, max_size=62),
    rospec_id=optional(u32),
    spec_index=optional(u16),
    inventory_parameter_spec_id=optional(u16),
    antenna_id=optional(u16),
    peak_rssi=optional(st.integers(-128, 127)),
    channel_index=optional(u16),
    first_seen_timestamp_utc=optional(u64),
    first_seen_timestamp_uptime=optional(u64),
    last_seen_timestamp_utc=optional(u64),
    last_seen_timestamp_uptime=optional(u64),
    tag_seen_count=optional(u16),
    c1g2_pc=optional(u16),
    c1g2_crc=optional(u16),
    access_spec_id=optional(u32),
    read_results=st.lists(
        st.builds(
            C1G2ReadOpSpecResult,
            st.integers(0, 3),
            u16,
            st.binary(max_size=16).map(lambda b: b[: len(b) // 2 * 2]),
        ),
        max_size=2,
    ).map(tuple),
)

statuses = st.recursive(
    st.builds(ParameterError, u16, u16, st.none() | st.builds(FieldError, u16, u16)),
    lambda inner: st.builds(ParameterError, u16, u16, st.none(), inner),
    max_leaves=4,
).flatmap(
    lambda error: st.builds(
        LlrpStatus,
        u16,
        st.text(max_size=40),
        st.none() | st.builds(FieldError, u16, u16),
        st.just(error) | st.none(),
    )
)


@settings(max_examples=80, deadline=None)
@given(reports=st.lists(tag_reports, max_size=5), message_id=u32)
def test_tag_reports_round_trip(reports: list[TagReportData], message_id: int) -> None:
    message = ROAccessReport(tuple(reports))
    assert decode_message(encode_message(message, message_id)) == (message_id, message)


@settings(max_examples=60, deadline=None)
@given(status=statuses)
def test_statuses_with_nested_errors_round_trip(status: LlrpStatus) -> None:
    message = SetReaderConfigResponse(status)
    assert decode_message(encode_message(message, 3)) == (3, message)


@settings(max_examples=40, deadline=None)
@given(
    antennas=st.lists(st.integers(1, 32), min_size=1, max_size=8),
    n=u16,
    gpo=st.lists(st.builds(GpoWriteData, u16, st.booleans()), max_size=4),
    gpi=st.lists(st.builds(GpiPortCurrentState, u16, st.booleans(), st.integers(0, 2)), max_size=4),
    keepalive=st.none() | st.builds(KeepaliveSpec, st.integers(0, 1), u32),
)
def test_configuration_and_rospecs_round_trip(
    antennas: list[int],
    n: int,
    gpo: list[GpoWriteData],
    gpi: list[GpiPortCurrentState],
    keepalive: KeepaliveSpec | None,
) -> None:
    rospec = AddROSpec(lane_rospec(9, antennas, report_every_n_tags=n))
    config = SetReaderConfig(
        gpo_write_data=tuple(gpo), gpi_port_current_states=tuple(gpi), keepalive_spec=keepalive
    )
    for message in (rospec, config):
        assert decode_message(encode_message(message, 1)) == (1, message)


# --- tag memory helpers ---


def test_gen2_crc16_matches_the_check_value_of_crc16_genibus() -> None:
    assert gen2_crc16(b"123456789") == 0xD64E


def test_the_epc_bank_holds_crc_pc_and_epc() -> None:
    memory = epc_memory(EPC)
    assert memory[2:4] == hexbytes("30 00")  # PC: 6 words of EPC in bits 15..11
    assert memory[4:] == EPC
    assert memory[:2] == gen2_crc16(memory[2:]).to_bytes(2, "big")


def test_a_target_tag_with_an_empty_mask_matches_every_tag() -> None:
    assert C1G2TargetTag.match_any().matches(epc_memory(EPC))
    assert C1G2TargetTag.match_any().matches(b"")


def test_a_target_tag_matches_the_epc_prefix_under_its_mask() -> None:
    """Bits 32.. of the EPC bank are the EPC: match tags whose EPC starts E280."""
    prefix = C1G2TargetTag(MemoryBank.EPC, True, 32, 16, b"\xff\xff", 16, b"\xe2\x80")
    assert prefix.matches(epc_memory(EPC))
    assert not prefix.matches(epc_memory(bytes.fromhex("300833B2DDD9014000000000")))
    negated = C1G2TargetTag(MemoryBank.EPC, False, 32, 16, b"\xff\xff", 16, b"\xe2\x80")
    assert not negated.matches(epc_memory(EPC))
