"""The LLRP reader family against an emulated reader speaking the real protocol over loopback TCP:
reads and loop edges become lane inputs on the reader's clock, the lane's config is checked
against what the reader has, connections that drop or go silent are re-established, loop edges
missed meanwhile are recovered, a reader reboot is a new boot of its clock, the lane signal
drives a GPO, and the resume token lets a restarted agent continue the same boot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from agent.config import LlrpReaderConfig
from agent.lane.events import LoopChanged, TagRead
from agent.readers.base import LaneSignal, ReaderInput
from agent.readers.llrp import FAULT_CONFIG_REFUSED, LlrpReader
from llrp.emulator import LlrpReaderEmulator
from llrp.reader_model import ReaderIdentity, TimestampClock
from tests.support.broker import wait_until
from tests.support.proxy import TcpProxy

EPC = bytes.fromhex("E28011600000000000000AB1")
TID = bytes.fromhex("E2801105200074C1A0E30B2A")
"""A 96-bit TID: class E2, the chip's maker and model, its serial number."""
WAIT_S = 10.0


class Sink:
    """What the agent's sink receives: every batch, with its resume token and clock state."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[ReaderInput], str | None, dict[str, Any] | None]] = []
        self._lock = threading.Lock()

    def __call__(
        self,
        inputs: Sequence[ReaderInput],
        resume: str | None,
        clock_state: dict[str, Any] | None,
    ) -> None:
        with self._lock:
            self.batches.append((list(inputs), resume, clock_state))

    @property
    def inputs(self) -> list[ReaderInput]:
        with self._lock:
            return [item for batch, _, _ in self.batches for item in batch]

    def reads(self) -> list[TagRead]:
        return [item for item in self.inputs if isinstance(item, TagRead)]

    def loops(self) -> list[LoopChanged]:
        return [item for item in self.inputs if isinstance(item, LoopChanged)]

    def last(self) -> tuple[str | None, dict[str, Any] | None]:
        with self._lock:
            _, resume, clock = self.batches[-1]
            return resume, clock


def reader_config(port: int, **overrides: Any) -> LlrpReaderConfig:
    options: dict[str, Any] = {
        "type": "llrp",
        "host": "127.0.0.1",
        "port": port,
        "antennas": (1, 2),
        "loop_gpi_ports": (1, 2),
        "keepalive_s": 0.5,
        "silence_timeout_s": 2.0,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1.0,
        **overrides,
    }
    return LlrpReaderConfig(**options)


def _running_emulator(timestamps: TimestampClock) -> Iterator[LlrpReaderEmulator]:
    reader = LlrpReaderEmulator(identity=ReaderIdentity(timestamps=timestamps))
    reader.start()
    try:
        yield reader
    finally:
        reader.stop()


@pytest.fixture
def emulator() -> Iterator[LlrpReaderEmulator]:
    yield from _running_emulator(TimestampClock.BOTH)


@pytest.fixture
def uptime_emulator() -> Iterator[LlrpReaderEmulator]:
    """A reader without a UTC clock: it stamps everything with its uptime."""
    yield from _running_emulator(TimestampClock.UPTIME)


@pytest.fixture
def readers() -> Iterator[Any]:
    made: list[LlrpReader] = []

    def make(config: LlrpReaderConfig, sink: Sink, **kwargs: Any) -> LlrpReader:
        family = LlrpReader(config, sink, **kwargs)
        made.append(family)
        family.start()
        return family

    yield make
    for family in made:
        family.close()


def test_reads_and_loop_edges_arrive_as_lane_inputs_on_the_readers_clock(
    emulator: LlrpReaderEmulator, readers: Any
) -> None:
    sink = Sink()
    family = readers(reader_config(emulator.port), sink)
    assert emulator.wait_connected(WAIT_S)
    wait_until(family.time_known, WAIT_S, "the reader's clock known")
    emulator.set_gpi(1, True)
    emulator.read_tag(EPC, antenna=2, rssi_dbm=-48.0)
    time.sleep(0.2)
    emulator.read_tag(EPC, antenna=1, rssi_dbm=-61.0)
    emulator.set_gpi(1, False)
    wait_until(lambda: len(sink.inputs) >= 4, WAIT_S, "two reads and two edges")
    loops, reads = sink.loops(), sink.reads()
    assert [(loop.loop_id, loop.occupied) for loop in loops] == [(1, True), (1, False)]
    assert [(r.epc, r.antenna, r.rssi_dbm, r.tid) for r in reads] == [
        (EPC.hex().upper(), 2, -48.0, None),
        (EPC.hex().upper(), 1, -61.0, None),
    ]
    times = [item.at for item in sink.inputs]
    assert times == sorted(times)
    assert 0.15 <= reads[1].at - reads[0].at <= 0.5, "spaced as the reader saw them"
    assert abs(family.to_wall(reads[1].at) - time.time()) < 2.0
    status = family.status()
    assert (status["family"], status["up"], status["tag_reads"], status["gpi_events"]) == (
        "llrp",
        True,
        2,
        2,
    )
    assert family.faults(time.time()) == {}


def test_a_lane_asking_for_ports_the_reader_lacks_is_refused_and_named(
    emulator: LlrpReaderEmulator, readers: Any
) -> None:
    sink = Sink()
    family = readers(reader_config(emulator.port, antennas=(1, 7), signal_gpo_port=9), sink)
    wait_until(lambda: FAULT_CONFIG_REFUSED in family.faults(time.time()), WAIT_S, "the fault")
    message = family.faults(time.time())[FAULT_CONFIG_REFUSED]
    assert "the reader has 4 antennas, 2 GPIs and 4 GPOs" in message
    assert "antenna 7" in message
    assert "GPO 9" in message
    assert "reader.antennas" in message
    assert sink.inputs == []


def test_a_reader_that_refuses_the_configuration_raises_the_fault_until_it_accepts(
    emulator: LlrpReaderEmulator, readers: Any
) -> None:
    emulator.refuse_config(True)
    sink = Sink()
    family = readers(reader_config(emulator.port), sink)
    wait_until(lambda: FAULT_CONFIG_REFUSED in family.faults(time.time()), WAIT_S, "the fault")
    emulator.refuse_config(False)
    wait_until(lambda: family.status()["up"], WAIT_S, "connected once it accepts")
    assert FAULT_CONFIG_REFUSED not in family.faults(time.time())


def test_a_dropped_connection_is_reestablished_and_a_loop_edge_missed_meanwhile_recovered(
    emulator: LlrpReaderEmulator, readers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    family = readers(reader_config(emulator.port), sink)
    wait_until(lambda: family.status()["up"], WAIT_S, "connected")
    wait_until(family.time_known, WAIT_S, "the reader's clock known")
    emulator.set_gpi(1, True)
    wait_until(lambda: len(sink.loops()) == 1, WAIT_S, "the arrival")
    caplog.set_level(logging.WARNING)
    emulator.drop_connection()
    emulator.set_gpi(1, False)  # the vehicle leaves while the agent is not connected
    wait_until(lambda: family.status()["connects"] >= 2, WAIT_S, "reconnected")
    wait_until(lambda: len(sink.loops()) == 2, WAIT_S, "the missed departure")
    arrival, departure = sink.loops()
    assert (departure.loop_id, departure.occupied) == (1, False)
    assert departure.at >= arrival.at
    assert family.status()["loop_states_recovered"] == 1
    assert any("edge was missed" in r.getMessage() for r in caplog.records)
    emulator.read_tag(EPC)
    wait_until(lambda: len(sink.reads()) == 1, WAIT_S, "reads after reconnecting")


def test_a_reader_that_goes_silent_is_reconnected(
    emulator: LlrpReaderEmulator, readers: Any
) -> None:
    with TcpProxy(0, "127.0.0.1", emulator.port) as proxy:
        sink = Sink()
        family = readers(reader_config(proxy.port, silence_timeout_s=1.0), sink)
        wait_until(lambda: family.status()["up"], WAIT_S, "connected")
        proxy.cut()  # bytes stop flowing both ways; the TCP connection stays open
        wait_until(lambda: family.status()["connection_losses"] >= 1, WAIT_S, "noticed")
        assert "nothing from the reader" in str(family.status()["last_error"])
        proxy.resume()
        proxy.drop_connections()
        wait_until(lambda: family.status()["connects"] >= 2, WAIT_S, "back")


def test_a_reader_reboot_is_a_new_boot_and_lane_time_runs_on(
    uptime_emulator: LlrpReaderEmulator, readers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    family = readers(reader_config(uptime_emulator.port), sink)
    wait_until(family.time_known, WAIT_S, "the reader's clock known")
    uptime_emulator.read_tag(EPC)
    wait_until(lambda: len(sink.reads()) == 1, WAIT_S, "a read")
    first_boot = family.clock.boot_id
    caplog.set_level(logging.INFO)
    # The reader has been up a while (days, on a lane): after a power cycle (half a minute on a
    # real reader) its uptime is much less than the time that passed.
    time.sleep(2.0)
    uptime_emulator.reboot(downtime_s=0.5)
    wait_until(lambda: family.status()["connects"] >= 2, WAIT_S, "reconnected after the reboot")
    uptime_emulator.read_tag(EPC)
    wait_until(lambda: len(sink.reads()) == 2, WAIT_S, "a read after the reboot")
    assert family.clock.boot_id != first_boot
    before, after = sink.reads()
    assert after.at > before.at, "lane time never runs back over a reboot"
    assert any("LLRP reader restarted" in r.getMessage() for r in caplog.records)


def test_a_restarted_agent_continues_the_readers_boot_from_the_journals_token(
    uptime_emulator: LlrpReaderEmulator, readers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = Sink()
    first = readers(reader_config(uptime_emulator.port), sink)
    wait_until(first.time_known, WAIT_S, "the reader's clock known")
    uptime_emulator.read_tag(EPC)
    wait_until(lambda: len(sink.reads()) == 1, WAIT_S, "a read")
    resume, clock_state = sink.last()
    boot = first.clock.boot_id
    first.close()
    caplog.set_level(logging.INFO)
    again = Sink()
    second = readers(
        reader_config(uptime_emulator.port),
        again,
        resume=resume,
        clock_state=clock_state,
    )
    wait_until(second.time_known, WAIT_S, "the reader's clock known again")
    uptime_emulator.read_tag(EPC)
    wait_until(lambda: len(again.reads()) == 1, WAIT_S, "a read")
    assert second.clock.boot_id == boot
    assert not any("LLRP reader restarted" in r.getMessage() for r in caplog.records)
    assert again.reads()[0].at > sink.reads()[0].at


def test_the_lane_signal_drives_the_configured_gpo(
    emulator: LlrpReaderEmulator, readers: Any
) -> None:
    sink = Sink()
    family = readers(reader_config(emulator.port, signal_gpo_port=3), sink)
    wait_until(lambda: family.status()["up"], WAIT_S, "connected")
    family.set_signal(LaneSignal.MANUAL)
    wait_until(lambda: emulator.gpo_state().get(3) is True, WAIT_S, "GPO 3 high")
    family.set_signal(LaneSignal.OFF)
    wait_until(lambda: emulator.gpo_state().get(3) is False, WAIT_S, "GPO 3 low")


def test_the_tid_is_read_when_asked_for(emulator: LlrpReaderEmulator, readers: Any) -> None:
    sink = Sink()
    family = readers(reader_config(emulator.port, read_tid=True), sink)
    wait_until(lambda: family.status()["up"], WAIT_S, "connected")
    wait_until(family.time_known, WAIT_S, "the reader's clock known")
    emulator.read_tag(EPC, tid=TID)
    wait_until(lambda: len(sink.reads()) == 1, WAIT_S, "a read")
    assert sink.reads()[0].tid == TID.hex().upper()
