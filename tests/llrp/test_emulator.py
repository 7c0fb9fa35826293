"""The emulated reader behaves like a real one: it refuses what it cannot do, runs ROSpecs and
AccessSpecs, reports tags only while inventorying on the configured antennas, sends GPI events
only when enabled, records GPO writes, reboots, drops connections, and keeps its clock when
the host is slow."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import pytest

from llrp.client import LlrpClient, LlrpStatusError
from llrp.codec import FrameDecoder, MessageType, StatusCode, encode_message
from llrp.emulator import LlrpReaderEmulator
from llrp.messages import (
    AddAccessSpec,
    AddROSpec,
    DeleteROSpec,
    DisableROSpec,
    EnableAccessSpec,
    EnableROSpec,
    GetReaderConfig,
    GetReport,
    GetROSpecs,
    ReaderEventNotification,
    ROAccessReport,
    SetReaderConfig,
    StartROSpec,
    StopROSpec,
)
from llrp.parameters import (
    AntennaConfiguration,
    GpiPortCurrentState,
    GpiState,
    GpoWriteData,
    ParameterError,
    ROSpecEventType,
)
from llrp.reader_model import LossReason, ReaderIdentity, TimestampClock
from llrp.specs import (
    AccessSpecStopTrigger,
    AccessSpecStopTriggerType,
    C1G2ReadResult,
    ROSpecStartTrigger,
    ROSpecStartTriggerType,
    ROSpecState,
    lane_rospec,
    tid_access_spec,
)
from tests.llrp.support import WAIT_S, Inbox, gpi_events, start_lane, tag_reports

EPC = bytes.fromhex("E280689400005003A4B1C201")
OTHER = bytes.fromhex("E280689400005003A4B1C202")
TID = bytes.fromhex("E2806894200050035F9A0001")


def rospec_events(inbox: Inbox) -> list[tuple[int, int]]:
    out = []
    for message in inbox.of_type(ReaderEventNotification):
        assert isinstance(message, ReaderEventNotification)
        event = message.reader_event_notification_data.rospec_event
        if event is not None:
            out.append((event.event_type, event.rospec_id))
    return out


# --- configuration ---


def test_a_config_naming_a_port_the_reader_lacks_is_refused_whole(
    client: LlrpClient, emulator: LlrpReaderEmulator
) -> None:
    """The GPO write before the bad GPI port is not applied: a refusal changes nothing."""
    with pytest.raises(LlrpStatusError) as caught:
        client.request(
            SetReaderConfig(
                gpo_write_data=(GpoWriteData(1, True),),
                gpi_port_current_states=(GpiPortCurrentState(5, True),),
            )
        )
    error = caught.value.status.parameter_error
    assert error == ParameterError(
        225, StatusCode.P_FIELD_ERROR, error.field_error if error else None
    )
    assert "no GPI port 5 (this reader has 2)" in str(caught.value)
    assert emulator.gpo_history() == []
    assert emulator.gpo_state()[1] is False


def test_an_antenna_the_reader_lacks_is_refused(client: LlrpClient) -> None:
    with pytest.raises(LlrpStatusError, match=r"no antenna 9 \(this reader has 4\)"):
        client.request(SetReaderConfig(antenna_configurations=(AntennaConfiguration(9),)))
    with pytest.raises(
        LlrpStatusError, match=r"AISPEC \(183\): P_FieldError, field 0: A_OutOfRange"
    ):
        client.request(AddROSpec(lane_rospec(1, [1, 5])))


def test_refuse_config_makes_set_reader_config_fail(
    client: LlrpClient, emulator: LlrpReaderEmulator
) -> None:
    emulator.refuse_config(True)
    with pytest.raises(LlrpStatusError, match="R_DeviceError: configuration refused"):
        client.request(SetReaderConfig())
    emulator.refuse_config(False)
    assert client.request(SetReaderConfig()).status.ok


def test_gpo_writes_are_recorded_and_read_back(
    client: LlrpClient, emulator: LlrpReaderEmulator
) -> None:
    client.request(SetReaderConfig(gpo_write_data=(GpoWriteData(1, True), GpoWriteData(3, True))))
    client.request(SetReaderConfig(gpo_write_data=(GpoWriteData(1, False),)))
    assert [(w.port, w.high) for w in emulator.gpo_history()] == [(1, True), (3, True), (1, False)]
    assert emulator.gpo_state() == {1: False, 2: False, 3: True, 4: False}
    config = client.request(GetReaderConfig(requested_data=10, gpo_port_num=3))
    assert config.gpo_write_data == (GpoWriteData(3, True),)


def test_get_reader_config_tells_the_loop_state_at_connect(
    client: LlrpClient, emulator: LlrpReaderEmulator
) -> None:
    emulator.set_gpi(1, True)
    client.request(SetReaderConfig(gpi_port_current_states=(GpiPortCurrentState(1, True),)))
    assert emulator.wait_for(lambda e: e.model.gpi_high[1], WAIT_S)
    states = client.request(GetReaderConfig(requested_data=9)).gpi_port_current_states
    assert states == (
        GpiPortCurrentState(1, True, GpiState.HIGH),
        GpiPortCurrentState(2, False, GpiState.UNKNOWN),  # a disabled input is not sampled
    )


# --- ROSpecs ---


def test_rospec_lifecycle_with_its_events(client: LlrpClient, inbox: Inbox) -> None:
    start_lane(client)  # add, enable, start
    assert inbox.wait_for(lambda _: rospec_events(inbox) == [(ROSpecEventType.START, 1)])
    states = client.request(GetROSpecs()).rospecs
    assert [(s.rospec_id, s.current_state) for s in states] == [(1, ROSpecState.ACTIVE)]
    client.request(StopROSpec(1))
    client.request(DisableROSpec(1))
    assert client.request(GetROSpecs()).rospecs[0].current_state == ROSpecState.DISABLED
    client.request(DeleteROSpec(0))
    assert client.request(GetROSpecs()).rospecs == ()
    assert rospec_events(inbox) == [(ROSpecEventType.START, 1), (ROSpecEventType.END, 1)]


def test_rospec_requests_out_of_order_are_refused(client: LlrpClient) -> None:
    client.request(AddROSpec(lane_rospec(1, [1])))
    with pytest.raises(LlrpStatusError, match="ROSpec id 1 already exists"):
        client.request(AddROSpec(lane_rospec(1, [1])))
    with pytest.raises(LlrpStatusError, match="ROSpec 1 is disabled; enable it first"):
        client.request(StartROSpec(1))
    client.request(EnableROSpec(1))
    with pytest.raises(LlrpStatusError, match="ROSpec 1 is not active"):
        client.request(StopROSpec(1))
    with pytest.raises(LlrpStatusError, match="no ROSpec 2"):
        client.request(EnableROSpec(2))
    with pytest.raises(LlrpStatusError, match="ROSpec id 0 is reserved"):
        client.request(AddROSpec(lane_rospec(0, [1])))


def test_a_gpi_start_trigger_is_refused_as_not_emulated(client: LlrpClient) -> None:
    spec = lane_rospec(3, [1])
    gpi_start = spec.ro_boundary_spec.__class__(
        ROSpecStartTrigger(ROSpecStartTriggerType.GPI), spec.ro_boundary_spec.rospec_stop_trigger
    )
    with pytest.raises(LlrpStatusError, match="start trigger 3 is not emulated"):
        client.request(AddROSpec(spec.__class__(3, 0, 0, gpi_start, spec.ai_specs)))


def test_an_immediate_rospec_starts_when_enabled(client: LlrpClient, inbox: Inbox) -> None:
    client.request(SetReaderConfig(reader_event_notification_spec=None))
    client.request(AddROSpec(lane_rospec(4, [1], start_immediately=True)))
    client.request(EnableROSpec(4))
    assert client.request(GetROSpecs()).rospecs[0].current_state == ROSpecState.ACTIVE


# --- tag reports ---


def test_reads_are_reported_only_while_a_rospec_runs_and_only_on_its_antennas(
    client: LlrpClient, emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    emulator.read_tag(EPC, 1)  # nothing is running yet
    assert emulator.wait_done(WAIT_S)
    start_lane(client, antennas=(1, 2))
    emulator.read_tag(EPC, 2, rssi_dbm=-48.6)
    emulator.read_tag(OTHER, 3)  # antenna 3 is not in the AISpec
    emulator.read_tag(OTHER, 1)
    assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == 2)
    client.request(StopROSpec(1))
    emulator.read_tag(EPC, 1)  # stopped again
    assert emulator.wait_done(WAIT_S)
    reports = tag_reports(inbox.messages())
    assert [(r.epc, r.antenna_id, r.peak_rssi, r.tag_seen_count) for r in reports] == [
        (EPC, 2, -49, 1),
        (OTHER, 1, -55, 1),
    ]
    assert [reason for _, reason in emulator.lost_events()] == [
        LossReason.NOT_READING,
        LossReason.ANTENNA_NOT_INVENTORIED,
        LossReason.NOT_READING,
    ]
    assert emulator.stats().reads_sent == 2


def test_reports_are_batched_n_at_a_time_and_the_rest_sent_when_the_rospec_stops(
    client: LlrpClient, emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    start_lane(client, n=3)
    for index in range(7):
        emulator.read_tag(EPC, 1, rssi_dbm=-40 - index)
    assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == 6)
    client.request(StopROSpec(1))
    assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == 7)
    sizes = [len(m.tag_report_data) for m in inbox.of_type(ROAccessReport)]  # type: ignore[attr-defined]
    assert sizes == [3, 3, 1]
    assert [r.peak_rssi for r in tag_reports(inbox.messages())] == list(range(-40, -47, -1))


def test_get_report_sends_what_waits_for_its_trigger(
    client: LlrpClient, emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    start_lane(client, n=100)
    emulator.read_tag(EPC, 1)
    assert emulator.wait_for(lambda e: e.model.batched == 1, WAIT_S)
    client.send(GetReport())
    assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == 1)


def test_reports_on_the_uptime_clock() -> None:
    identity = ReaderIdentity(timestamps=TimestampClock.UPTIME)
    inbox = Inbox()
    with (
        LlrpReaderEmulator(identity=identity) as reader,
        LlrpClient("127.0.0.1", reader.port, on_message=inbox) as client,
    ):
        client.connect(WAIT_S)
        start_lane(client)
        reader.read_tag(EPC, 1)
        reader.set_gpi(2, True)
        assert inbox.wait_for(lambda ms: tag_reports(ms) and gpi_events(ms) == [(2, True)])
    (report,) = tag_reports(inbox.messages())
    assert report.first_seen_timestamp_utc is None
    assert report.first_seen_timestamp_uptime is not None
    events = [
        m.reader_event_notification_data  # type: ignore[attr-defined]
        for m in inbox.of_type(ReaderEventNotification)
    ]
    assert all(e.uptime is not None and e.utc_timestamp is None for e in events)


# --- GPI events ---


def test_gpi_events_need_the_port_and_the_notification_enabled(
    client: LlrpClient, emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    emulator.set_gpi(1, True)  # port disabled, notifications off
    assert emulator.wait_done(WAIT_S)
    client.request(SetReaderConfig(gpi_port_current_states=(GpiPortCurrentState(1, True),)))
    emulator.set_gpi(1, False)  # port enabled, notifications still off
    assert emulator.wait_done(WAIT_S)
    start_lane(client, gpis=(1,))
    emulator.set_gpi(2, True)  # port 2 disabled
    emulator.set_gpi(1, True)
    assert inbox.wait_for(lambda ms: gpi_events(ms) == [(1, True)])
    assert emulator.wait_done(WAIT_S)
    assert [reason for _, reason in emulator.lost_events()] == [
        LossReason.GPI_PORT_DISABLED,
        LossReason.EVENTS_DISABLED,
        LossReason.GPI_PORT_DISABLED,
    ]


# --- TID through an AccessSpec ---


def test_an_accessspec_reads_the_tid_of_each_tag_reported(
    client: LlrpClient, emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    client.request(AddAccessSpec(tid_access_spec(5, word_count=2)))
    client.request(EnableAccessSpec(5))
    from llrp.specs import TagReportContentSelector

    start_lane(client, content=TagReportContentSelector(enable_access_spec_id=True))
    emulator.read_tag(EPC, 1, tid=TID)
    emulator.read_tag(OTHER, 1)  # a card whose TID the scenario does not know
    assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == 2)
    with_tid, without = tag_reports(inbox.messages())
    assert with_tid.access_spec_id == 5
    assert [(r.result, r.read_data) for r in with_tid.read_results] == [
        (C1G2ReadResult.SUCCESS, TID[:4])
    ]
    assert [r.result for r in without.read_results] == [C1G2ReadResult.NONSPECIFIC_TAG_ERROR]


def test_an_accessspec_with_an_operation_count_ends_itself(
    client: LlrpClient, emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    spec = tid_access_spec(6, word_count=0)
    once = spec.__class__(
        6,
        0,
        1,
        False,
        0,
        AccessSpecStopTrigger(AccessSpecStopTriggerType.OPERATION_COUNT, 1),
        spec.access_command,
    )
    client.request(AddAccessSpec(once))
    client.request(EnableAccessSpec(6))
    start_lane(client)
    emulator.read_tag(EPC, 1, tid=TID)
    emulator.read_tag(EPC, 1, tid=TID)
    assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == 2)
    first, second = tag_reports(inbox.messages())
    assert first.read_results[0].read_data == TID  # word count 0: the whole bank
    assert second.read_results == ()


def test_an_accessspec_reading_another_bank_is_refused(client: LlrpClient) -> None:
    spec = tid_access_spec(7)
    command = spec.access_command
    epc_read = command.op_specs[0].__class__(1, 0, 1, 0, 2)
    bad = spec.__class__(
        7,
        0,
        1,
        False,
        0,
        spec.access_spec_stop_trigger,
        command.__class__(command.tag_spec, (epc_read,)),
    )
    with pytest.raises(LlrpStatusError, match=r"reading memory bank 1 is not emulated"):
        client.request(AddAccessSpec(bad))


# --- connection, reboot, buffering ---


def test_drop_connection_loses_what_happens_until_a_client_is_back(
    emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    client = LlrpClient("127.0.0.1", emulator.port, on_message=inbox)
    client.connect(WAIT_S)
    start_lane(client)
    emulator.drop_connection()
    assert client.wait_closed(WAIT_S)
    emulator.read_tag(EPC, 1)
    emulator.set_gpi(1, True)
    assert emulator.wait_done(WAIT_S)
    assert [reason for _, reason in emulator.lost_events()] == [LossReason.NO_CLIENT] * 2
    again = Inbox()
    with LlrpClient("127.0.0.1", emulator.port, on_message=again) as second:
        second.connect(WAIT_S)
        assert second.request(GetROSpecs()).rospecs[0].current_state == ROSpecState.ACTIVE
        emulator.read_tag(EPC, 1)
        assert again.wait_for(lambda ms: len(tag_reports(ms)) == 1)


def test_reboot_forgets_everything_and_restarts_uptime(emulator: LlrpReaderEmulator) -> None:
    client = LlrpClient("127.0.0.1", emulator.port)
    client.connect(WAIT_S)
    start_lane(client)
    client.request(SetReaderConfig(gpo_write_data=(GpoWriteData(2, True),)))
    time.sleep(0.05)
    before = emulator.reader_time()
    emulator.reboot(downtime_s=0.3)
    after = emulator.reader_time()
    assert after.uptime_us < before.uptime_us
    assert after.utc_us >= before.utc_us
    assert client.wait_closed(WAIT_S)
    emulator.read_tag(EPC, 1)
    assert emulator.wait_done(WAIT_S)
    assert emulator.lost_events()[-1][1] == LossReason.REBOOTING
    refused = LlrpClient("127.0.0.1", emulator.port)
    with pytest.raises(Exception, match="closed the connection before its ConnectionAttemptEvent"):
        refused.connect(WAIT_S)
    time.sleep(0.3)
    with LlrpClient("127.0.0.1", emulator.port) as fresh:
        fresh.connect(WAIT_S)
        assert fresh.request(GetROSpecs()).rospecs == ()
        assert (
            fresh.request(GetReaderConfig(requested_data=9)).gpi_port_current_states[0].config
            is False
        )
    assert emulator.gpo_state()[2] is False
    assert emulator.boots == 2


def test_a_client_message_the_reader_cannot_parse_is_answered_with_its_response_type(
    emulator: LlrpReaderEmulator,
) -> None:
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=WAIT_S) as raw:
        decoder = FrameDecoder()

        def next_message() -> tuple[int, int, object]:
            while True:
                for frame in decoder.feed(raw.recv(4096)):
                    return frame.message_type, frame.message_id, frame.decode()

        assert next_message()[0] == MessageType.READER_EVENT_NOTIFICATION
        truncated_rospec = struct.pack(">HII", (1 << 10) | 20, 14, 8) + struct.pack(">HH", 177, 4)
        raw.sendall(truncated_rospec)
        kind, message_id, response = next_message()
        assert (kind, message_id) == (MessageType.ADD_ROSPEC_RESPONSE, 8)
        assert response.status.error_description == (  # type: ignore[attr-defined]
            "AddROSpec > ROSpec: field ROSpecID needs 4 bytes, 0 left"
        )
        raw.sendall(struct.pack(">HII", (1 << 10) | 333, 10, 9))
        kind, message_id, response = next_message()
        assert (kind, message_id) == (MessageType.ERROR_MESSAGE, 9)
        assert response.status.status_code == StatusCode.M_UNSUPPORTED_MESSAGE  # type: ignore[attr-defined]
        raw.sendall(struct.pack(">HII", (1 << 10) | 3, 2, 10))  # length 2: unframeable
        with contextlib.suppress(ConnectionResetError):  # a reset closes it too
            assert raw.recv(4096) == b""
    assert emulator.stats().undecodable_received == 2


def test_burst_at_an_r700s_full_rate_is_delivered_in_order(inbox: Inbox) -> None:
    with (
        LlrpReaderEmulator() as reader,
        LlrpClient("127.0.0.1", reader.port, on_message=inbox) as client,
    ):
        client.connect(WAIT_S)
        start_lane(client, antennas=(1, 2), n=16)
        reader.burst(1100, 1100.0, antennas=(1, 2))
        assert reader.wait_for(lambda e: e.stats().reads_sent + e.model.batched == 1100, WAIT_S)
        client.request(StopROSpec(1))
        assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == 1100)
    reports = tag_reports(inbox.messages())
    expected = [(e.epc, e.antenna) for e in reader.sent_events()]
    assert [(r.epc, r.antenna_id) for r in reports] == expected
    firsts = [r.first_seen_timestamp_utc or 0 for r in reports]
    assert firsts == sorted(firsts)
    assert reader.stats().lost == {}


def test_a_slow_host_does_not_stop_the_readers_clock() -> None:
    """A host that stops reading: reports queue up to the limit, the rest are dropped and
    counted, and the reader keeps time and keeps playing."""
    with LlrpReaderEmulator(max_queued_bytes=8192, socket_send_buffer=4096) as reader:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(WAIT_S)
        raw.connect(("127.0.0.1", reader.port))
        decoder = FrameDecoder()
        requests = [
            AddROSpec(lane_rospec(1, [1])),
            EnableROSpec(1),
            StartROSpec(1),
        ]
        for message_id, request in enumerate(requests, start=1):
            raw.sendall(encode_message(request, message_id))
        answered = 0
        while answered < len(requests):
            answered += (
                sum(
                    1 for frame in decoder.feed(raw.recv(4096)) if frame.message_id <= len(requests)
                )
                - 0
            )
        assert reader.wait_for(lambda e: e.model.reading, WAIT_S)
        before = reader.reader_time()
        reader.burst(20_000, 1e6)  # the host reads nothing from here on
        assert reader.wait_for(lambda e: not e._bursts, WAIT_S)
        stats = reader.stats()
        assert stats.lost["overflow"] > 10_000
        assert stats.queue_high_water_bytes <= 8192
        assert reader.reader_time().uptime_us > before.uptime_us
        raw.close()
