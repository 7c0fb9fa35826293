"""A lane scenario played through the emulated reader reaches an LLRP client whole, in order,
on the reader's clocks (drift on both, steps on UTC only), and the CLI plays a scenario file."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import replace
from pathlib import Path

from firmware_bridge.codec import Loop, TagRead
from firmware_bridge.scenario import ClockStep, ControllerClock, load_scenario
from firmware_bridge.scenario_plan import plan_scenario
from llrp.client import LlrpClient
from llrp.emulator import LlrpReaderEmulator, main
from llrp.messages import AddAccessSpec, EnableAccessSpec, ReaderEventNotification, ROAccessReport
from llrp.reader_model import ReaderIdentity, TimestampClock
from llrp.specs import TagReportContentSelector, tid_access_spec
from tests.llrp.support import WAIT_S, Inbox, start_lane, tag_reports

BASIC = Path(__file__).parents[2] / "config" / "scenarios" / "basic.toml"
DRIFT_PPM = 150.0
STEP_AT_S, STEP_MS = 10.0, 250


def lane_events(inbox: Inbox) -> list[tuple[object, ...]]:
    """What the client received, as (kind, ...) in arrival order, with reader timestamps."""
    out: list[tuple[object, ...]] = []
    for message in inbox.messages():
        if isinstance(message, ROAccessReport):
            out += [
                (
                    "read",
                    r.epc,
                    r.antenna_id,
                    r.peak_rssi,
                    r.first_seen_timestamp_uptime,
                    r.first_seen_timestamp_utc,
                )
                for r in message.tag_report_data
            ]
        elif isinstance(message, ReaderEventNotification):
            data = message.reader_event_notification_data
            if data.gpi_event is not None:
                out.append(
                    (
                        "gpi",
                        data.gpi_event.gpi_port_number,
                        data.gpi_event.gpi_event,
                        None,
                        data.utc_timestamp,
                    )
                )
    return out


def test_a_scenario_at_speed_arrives_whole_in_order_with_the_readers_timestamps() -> None:
    scenario = replace(
        load_scenario(BASIC),
        format=2,
        clock=ControllerClock(DRIFT_PPM, (ClockStep(STEP_AT_S, STEP_MS),)),
    )
    plan = [p for p in plan_scenario(scenario) if isinstance(p.message, TagRead | Loop)]
    speed = 40.0
    inbox = Inbox()
    identity = ReaderIdentity(timestamps=TimestampClock.BOTH)
    with (
        LlrpReaderEmulator(scenario, speed=speed, identity=identity) as reader,
        LlrpClient("127.0.0.1", reader.port, on_message=inbox) as client,
    ):
        client.connect(WAIT_S)
        assert reader.wall_time_origin is None  # nothing plays until the host reads
        start_lane(client, antennas=(0,), gpis=(1,))
        assert reader.wait_done(WAIT_S)
        assert inbox.wait_for(lambda _: len(lane_events(inbox)) == len(plan))
    records = reader.sent_records()
    origin = reader.wall_time_origin
    assert reader.stats().lost == {}

    # Every planned read and loop edge, in the planned order.
    expected = [
        ("read", p.message.epc, p.message.antenna, round(p.message.rssi_dbm))
        if isinstance(p.message, TagRead)
        else ("gpi", p.message.loop_id, p.message.occupied)
        for p in plan
    ]
    received = lane_events(inbox)
    assert [event[:4] if event[0] == "read" else event[:3] for event in received] == expected

    # The reports carry the reader's clocks for the planned instant.
    assert [(r.at_s, r.uptime_us, r.utc_us) for r in records] == [
        (p.at_s, r.uptime_us, r.utc_us) for p, r in zip(plan, records, strict=True)
    ]
    for event, record in zip(received, records, strict=True):
        if event[0] == "read":
            assert event[4:] == (record.uptime_us, record.utc_us)
        else:
            assert event[4] == record.utc_us
    base = records[0]
    for record in records:
        assert record.at_s is not None
        assert base.at_s is not None
        drifted = round(record.at_s * 1e6 * (1 + DRIFT_PPM * 1e-6)) - round(
            base.at_s * 1e6 * (1 + DRIFT_PPM * 1e-6)
        )
        assert record.uptime_us - base.uptime_us == drifted
        stepped = STEP_MS * 1000 if record.at_s >= STEP_AT_S > base.at_s else 0
        assert (record.utc_us - record.uptime_us) - (base.utc_us - base.uptime_us) == stepped
        # Written no earlier than it happened on the scenario clock.
        assert origin is not None
        assert record.written_at >= origin + record.at_s / speed - 0.005
    assert [e.timestamp_ms for e in reader.sent_events()] == [r.uptime_us // 1000 for r in records]


def test_tids_of_the_scenarios_cards_come_with_the_reads() -> None:
    scenario = load_scenario(BASIC)
    tids = {
        p.message.epc: p.message.tid
        for p in plan_scenario(scenario)
        if isinstance(p.message, TagRead)
    }
    inbox = Inbox()
    with (
        LlrpReaderEmulator(scenario, speed=60.0) as reader,
        LlrpClient("127.0.0.1", reader.port, on_message=inbox) as client,
    ):
        client.connect(WAIT_S)
        client.request(AddAccessSpec(tid_access_spec(1, word_count=6)))
        client.request(EnableAccessSpec(1))
        start_lane(
            client,
            antennas=(1, 2),
            content=TagReportContentSelector(enable_access_spec_id=True),
        )
        assert reader.wait_done(WAIT_S)
        assert inbox.wait_for(lambda ms: len(tag_reports(ms)) == reader.stats().reads_sent)
    reports = tag_reports(inbox.messages())
    assert reports
    for report in reports:
        (result,) = report.read_results
        tid = tids[report.epc]
        assert (result.result == 0) == (tid is not None)
        assert result.read_data == (tid or b"")


def test_the_cli_prints_its_address_and_plays_the_scenario_file() -> None:
    class Lines(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.ready = threading.Event()

        def write(self, text: str) -> int:
            written = super().write(text)
            if "\n" in self.getvalue():
                self.ready.set()
            return written

    out, err = Lines(), io.StringIO()
    codes: list[int] = []
    runner = threading.Thread(
        target=lambda: codes.append(
            main([str(BASIC), "--speed", "80", "--linger-s", "0"], out=out, err=err)
        )
    )
    runner.start()
    assert out.ready.wait(WAIT_S)
    host, port = out.getvalue().strip().split(":")
    assert host == "127.0.0.1"
    inbox = Inbox()
    client = LlrpClient(host, int(port), on_message=inbox)
    client.connect(WAIT_S)
    started = time.monotonic()
    start_lane(client, antennas=(0,), gpis=(1,))
    runner.join(WAIT_S)
    client.abort()
    assert codes == [0], err.getvalue()
    assert time.monotonic() - started < WAIT_S
    planned = [p for p in plan_scenario(load_scenario(BASIC)) if isinstance(p.message, TagRead)]
    assert len(tag_reports(inbox.messages())) == len(planned)


def test_the_cli_refuses_a_bad_scenario(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nname = 'x'\nbogus = 1\n", encoding="utf-8")
    err = io.StringIO()
    assert main([str(bad)], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("error: ")
