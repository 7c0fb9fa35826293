"""The whole lane, end to end: simulator on a real pty → agent → real Mosquitto → subscriber.

Nothing is mocked: the controller simulator speaks the lane protocol over a pseudo-terminal,
the agent runs its real threads, the cache and outbox are SQLite files, and the events are
read back from a Mosquitto the test starts on a free loopback port.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.cache import CredentialCache
from agent.delivery import UPLINK_REBUILDS
from agent.dev.demo import demo_config, demo_records
from agent.service import EXIT_LINK_FAILED, EXIT_UPLINK_FAILED, LaneService, UplinkChanged
from agent.uplink import Topics, all_crossings_filter
from agent.uplink.publisher import UplinkState
from agent.wire.schema import load_schema
from firmware_bridge.codec import Loop, TagRead
from firmware_bridge.scenario import CardPass, Scenario, Vehicle, generate_scenario, load_scenario
from firmware_bridge.simulator import ControllerSimulator
from tests.support.broker import MosquittoBroker, Subscriber, wait_until

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = load_schema("lane-agent/crossing-event/2")
KNOWN = [str(record["ref"]) for record in demo_records()]
SPEED = 10.0

pytestmark = pytest.mark.broker


def validate(event: dict[str, Any]) -> None:
    jsonschema.validate(event, SCHEMA, format_checker=jsonschema.FormatChecker())


class RunningLane:
    """The agent's service on a thread, wired to a simulator and a broker."""

    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        broker: MosquittoBroker,
        simulator: ControllerSimulator | None = None,
    ) -> None:
        """With ``simulator``: the next run of the agent, on the same controller and files."""
        self.owns_simulator = simulator is None
        if simulator is None:
            with CredentialCache.open(workdir / "credentials.db") as cache:
                cache.import_records(demo_records(), source="test")
            simulator = ControllerSimulator(scenario, speed=SPEED)
            simulator.start()
        self.simulator = simulator
        self.config = demo_config(workdir, self.simulator.device_path, broker.port)
        self.service = LaneService(self.config)
        self.stop = threading.Event()
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.service.ready.wait(10), "service did not become ready"

    def _run(self) -> None:
        self.exit_code = self.service.run(self.stop)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        if self.owns_simulator:
            self.simulator.stop()
        assert not self.thread.is_alive(), "service did not stop"


@pytest.fixture
def lane_factory(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Any]:
    lanes: list[RunningLane] = []

    def start(scenario: Scenario, simulator: ControllerSimulator | None = None) -> RunningLane:
        lane = RunningLane(scenario, tmp_path, mosquitto, simulator)
        lanes.append(lane)
        return lane

    yield start
    for lane in lanes:
        lane.close()


def crossing_events(subscriber: Subscriber, count: int) -> list[dict[str, Any]]:
    messages = subscriber.wait_for(count, timeout_s=60)
    return [json.loads(m.payload) for m in messages]


def assert_lane_exits(
    lane: RunningLane, exit_code: int, error_starts: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The lane's thread ends with ``exit_code`` (non-zero: systemd restarts it) and logs why."""
    lane.thread.join(15)
    assert not lane.thread.is_alive(), f"the lane kept running after {error_starts!r}"
    assert lane.exit_code == exit_code != 0
    assert any(
        r.levelno >= logging.ERROR and r.getMessage().startswith(error_starts)
        for r in caplog.records
    )


def test_n_vehicles_give_exactly_n_schema_valid_events_numbered_1_to_n(
    lane_factory: Any, mosquitto: MosquittoBroker
) -> None:
    scenario = generate_scenario(8, KNOWN, seed=2024)
    with Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as subscriber:
        lane = lane_factory(scenario)
        events = crossing_events(subscriber, 8)
        assert lane.simulator.wait_done(30)
        extra = subscriber.barrier()
    assert len(extra) == 8, "one event per vehicle, no more"
    for event in events:
        validate(event)
    assert [e["seq"] for e in events] == list(range(1, 9))
    assert len({e["event_id"] for e in events}) == 8
    assert {(e["port_id"], e["lane_id"]) for e in events} == {("DEMO", "L01")}
    for vehicle, event in zip(scenario.vehicles, events, strict=True):
        assert {c["ref"] for c in event["cards"]} == {card.epc for card in vehicle.cards}
        assert event["vehicle_detected"] is True
        assert event["closed_by"] == "departure"
        for card in event["cards"]:
            assert (card["result"] == "unknown") == (card["ref"] not in KNOWN)
        if not vehicle.cards:
            assert event["recommendation"] == "REFER"
            assert event["reasons"] == ["NO_CARD_READ"]


def test_a_noisy_serial_link_loses_no_vehicle_and_counts_what_it_skipped(
    lane_factory: Any, mosquitto: MosquittoBroker
) -> None:
    """Garbage, dropped and corrupted frames on the serial line: every crossing still arrives."""
    scenario = load_scenario(ROOT / "config" / "scenarios" / "noisy_link.toml")
    with Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as subscriber:
        lane = lane_factory(scenario)
        events = crossing_events(subscriber, len(scenario.vehicles))
        assert lane.simulator.wait_done(30)
    assert [e["seq"] for e in events] == list(range(1, len(scenario.vehicles) + 1))
    for vehicle, event in zip(scenario.vehicles, events, strict=True):
        validate(event)
        assert {c["ref"] for c in event["cards"]} == {card.epc for card in vehicle.cards}
    sim = lane.simulator.stats()
    assert sim.frames_dropped + sim.garbage_injections + sim.frames_corrupted > 0
    reader = lane.service.reader
    assert reader is not None
    link = reader.status()["link"]  # the lane controller family's link counters
    assert link["crc_errors"] + link["framing_errors"] + link["bytes_discarded"] > 0, (
        "skips are counted"
    )
    assert link["duplicates"] + sim.resends > 0, "lost frames were resent"


def test_revoked_card_raises_an_alert_with_the_holder_reference(
    lane_factory: Any, mosquitto: MosquittoBroker
) -> None:
    revoked = next(str(r["ref"]) for r in demo_records() if r["status"] == "REVOKED")
    scenario = generate_scenario(
        3,
        [revoked],
        seed=5,
        unknown_card_ratio=0.0,
        no_card_ratio=0.0,
        max_cards=1,
        gap_s=(9.0, 12.0),  # three holders of the card, not one card handed from car to car
    )
    with Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as subscriber:
        lane_factory(scenario)
        events = crossing_events(subscriber, 3)
    for event in events:
        assert event["recommendation"] == "ALERT"
        assert "CARD_REVOKED" in event["reasons"]
        assert {c["holder_ref"] for c in event["cards"]} == {"H-DEMO-0006"}


def test_clean_stop_publishes_stopped_and_closes_the_open_crossing(
    lane_factory: Any, mosquitto: MosquittoBroker
) -> None:
    scenario = generate_scenario(1, KNOWN, seed=9, no_card_ratio=0.0)
    topics = Topics("lane-agent/v1", "DEMO", "L01")
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as availability:
        lane = lane_factory(scenario)
        availability.wait_until(
            lambda ms: any(m.payload == b"online" for m in ms), 10, "availability online"
        )
        lane.close()
        availability.wait_until(
            lambda ms: bool(ms) and ms[-1].payload == b"stopped",
            10,
            "availability stopped after a clean stop",
        )
    assert lane.exit_code == 0


def test_a_failed_uplink_stops_the_lane_with_a_non_zero_exit_so_systemd_restarts_it(
    lane_factory: Any, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed uplink is rebuilt in-process a few times; past that nothing would be published
    again while crossings keep piling up: the service stops and exits non-zero for a restart."""
    scenario = generate_scenario(1, KNOWN, seed=9, no_card_ratio=0.0)
    lane = lane_factory(scenario)
    caplog.set_level(logging.INFO)
    # What the uplink's state callback enqueues when its publisher thread dies.
    lane.service.inbox.put_nowait(UplinkChanged(UplinkState.FAILED))
    wait_until(lambda: lane.service.delivery.uplink_rebuilds == 1, 10, "the uplink rebuilt")
    assert lane.thread.is_alive(), "one failure restarted the whole agent"
    for _ in range(UPLINK_REBUILDS):
        lane.service.inbox.put_nowait(UplinkChanged(UplinkState.FAILED))
    assert_lane_exits(lane, EXIT_UPLINK_FAILED, "uplink failed", caplog)


# --- the real command line -------------------------------------------------------------------


def lane_agent(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        **kwargs,
    )


def test_demo_shows_each_vehicle_at_the_booth_then_its_crossing_and_exits_0() -> None:
    result = lane_agent("demo", "--vehicles", "3", "--seed", "11", "--speed", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("lane-agent demo: lane DEMO/L01 (trusted_traveller), 3 vehicles")
    assert re.fullmatch(r"lane page: http://127\.0\.0\.1:\d+", lines[1]), lines[1]
    assert lines[-2:] == [
        "3 crossings received by central operations.",
        "3 of them shown at the booth while the vehicle was there.",
    ]
    body = lines[2:-2]
    crossings = [index for index, line in enumerate(body) if line.startswith("#")]
    assert [body[index].split()[0] for index in crossings] == ["#1", "#2", "#3"]
    assert all(
        line.startswith(" ") and "at booth" in line
        for index, line in enumerate(body)
        if index not in crossings
    )
    starts = [0, *(index + 1 for index in crossings[:-1])]
    for start, end in zip(starts, crossings, strict=True):
        assert end > start, f"crossing line {body[end]!r} without the booth's view before it"


def test_the_demo_plays_through_an_emulated_llrp_reader_too() -> None:
    result = lane_agent(
        "demo", "--vehicles", "2", "--seed", "11", "--speed", "5", "--reader", "llrp"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "LLRP reader on 127.0.0.1:" in lines[0]
    assert lines[-2:] == [
        "2 crossings received by central operations.",
        "2 of them shown at the booth while the vehicle was there.",
    ]


def test_demo_without_a_broker_shows_the_crossings_waiting_in_the_outbox(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lane whose uplink is down keeps working: the demo says so and how to get a broker."""
    import io

    from agent.dev import broker as devbroker
    from agent.dev.demo import run_demo

    monkeypatch.setattr(devbroker, "find_mosquitto", lambda: None)
    out = io.StringIO()
    assert run_demo(vehicles=2, speed=10.0, seed=4, workdir=tmp_path, out=out) == 0
    lines = out.getvalue().splitlines()
    assert (
        lines[0]
        == "no broker: mosquitto not found; install it with: sudo apt-get install mosquitto"
    )
    assert lines[2].startswith("lane page: http://127.0.0.1:")
    assert [line.split()[0] for line in lines[3:5]] == ["#1", "#2"]
    assert lines[5].startswith("2 crossings waiting in the outbox for the uplink")


def test_run_says_ready_to_systemd_and_exits_0_on_sigterm(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    scenario = generate_scenario(1, KNOWN, seed=1)
    simulator = ControllerSimulator(scenario, speed=SPEED)
    simulator.start()
    try:
        config_path = tmp_path / "lane.toml"
        config_path.write_text(
            '[lane]\nport_id = "SYS-0250"\nlane_id = "L07"\n'
            f'[reader]\ntype = "lane_controller"\ndevice = "{simulator.device_path}"\n'
            '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
            f'[mqtt]\nport = {mosquitto.port}\n[logging]\nformat = "json"\n'
        )
        notify_path = tmp_path / "notify.sock"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(20)
        topics = Topics("lane-agent/v1", "SYS-0250", "L07")
        with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as availability:
            env = {**os.environ, "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
            agent = subprocess.Popen(
                [sys.executable, "-m", "agent.cli", "run", "--config", str(config_path)],
                env=env,
                cwd=ROOT,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                datagrams = [notify.recv(4096).decode()]
                assert datagrams[0].startswith("READY=1\n")
                # STATUS= lines (the reader link coming up) may come before the first ping.
                while "WATCHDOG=1" not in datagrams and len(datagrams) < 10:
                    datagrams.append(notify.recv(4096).decode())
                assert "WATCHDOG=1" in datagrams, "the engine loop feeds the watchdog"
                assert any("reader up" in datagram for datagram in datagrams[:-1]) or any(
                    "reader up" in notify.recv(4096).decode() for _ in range(5)
                ), "STATUS= says when the reader link is up"
                availability.wait_until(
                    lambda ms: bool(ms) and ms[-1].payload == b"online", 10, "online"
                )
                agent.send_signal(signal.SIGTERM)
                _, stderr = agent.communicate(timeout=30)
            finally:
                if agent.poll() is None:
                    agent.kill()
            availability.wait_until(
                lambda ms: bool(ms) and ms[-1].payload == b"stopped", 10, "stopped"
            )
        notify.close()
    finally:
        simulator.stop()
    assert agent.returncode == 0, stderr
    records = [json.loads(line) for line in stderr.splitlines()]
    assert {"level", "logger", "msg", "ts"} <= set(records[0])
    assert any(r["msg"].startswith("lane stopped:") for r in records)


def test_run_with_a_bad_config_exits_78_and_names_the_key(tmp_path: Path) -> None:
    config_path = tmp_path / "lane.toml"
    config_path.write_text('[lane]\nport_id = "SYS"\nlane_id = "L1"\nlane_typ = "general"\n')
    result = lane_agent("run", "--config", str(config_path))
    assert result.returncode == 78
    assert (
        f"{config_path}:4: lane.lane_typ = \"general\": unknown key; did you mean 'lane_type'?"
        in result.stderr
    )


def test_no_card_number_or_holder_reference_is_logged_above_debug(
    lane_factory: Any, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    scenario = generate_scenario(4, KNOWN, seed=77, no_card_ratio=0.0)
    secrets = {card.epc for vehicle in scenario.vehicles for card in vehicle.cards}
    secrets |= {str(r["holder_ref"]) for r in demo_records()}
    with (
        caplog.at_level(logging.DEBUG),
        Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as subscriber,
    ):
        lane = lane_factory(scenario)
        crossing_events(subscriber, 4)
        lane.close()
    above_debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG)
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert "crossing seq=4" in above_debug
    assert not {s for s in secrets if s in above_debug}
    assert {s for s in secrets if s in debug}, "the check can see card numbers when they are logged"


def vehicle_at_the_booth_acknowledged(simulator: ControllerSimulator) -> bool:
    events = simulator.sent_events()
    return (
        any(isinstance(e, Loop) and e.occupied for e in events)
        and sum(isinstance(e, TagRead) for e in events) >= 2
        and not any(isinstance(e, Loop) and not e.occupied for e in events)
        and simulator.unacknowledged == 0
    )


def test_a_restart_for_a_failed_uplink_keeps_the_vehicle_at_the_booth_one_crossing(
    lane_factory: Any, mosquitto: MosquittoBroker
) -> None:
    """The exit for a restart must not close the vehicle at the booth (as SHUTDOWN): the
    controller, same boot, still sends the rest of it, which would become a second crossing.
    It stays in the input journal; the next run restores it and the departure closes it, with
    every read."""
    card = next(str(r["ref"]) for r in demo_records() if r["status"] == "ACTIVE")
    reads = 8
    scenario = Scenario(
        name="restart with a vehicle at the booth",
        vehicles=(Vehicle(dwell_s=40.0, gap_s=0.5, cards=(CardPass(epc=card, reads=reads),)),),
        seed=3,
    )
    with Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as subscriber:
        first = lane_factory(scenario)
        assert first.simulator.wait_for(vehicle_at_the_booth_acknowledged, 10)
        for _ in range(UPLINK_REBUILDS + 1):
            first.service.inbox.put_nowait(UplinkChanged(UplinkState.FAILED))
        first.thread.join(15)
        assert first.exit_code == EXIT_UPLINK_FAILED
        assert subscriber.barrier() == [], "the vehicle was closed by the stop"
        second = lane_factory(scenario, first.simulator)
        events = crossing_events(subscriber, 1)
        assert second.simulator.wait_done(30)
        assert len(subscriber.barrier()) == 1, "one crossing for one vehicle"
    (event,) = events
    assert (event["opened_by"], event["closed_by"], event["vehicle_detected"]) == (
        "loop",
        "departure",
        True,
    )
    assert {c["ref"]: c["reads"] for c in event["cards"]} == {card: reads}


def test_a_reader_thread_that_ended_stops_the_lane_with_a_non_zero_exit(
    lane_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Without its reader thread the lane hears nothing and its clock stands still: restart."""
    scenario = generate_scenario(1, KNOWN, seed=9, no_card_ratio=0.0)
    lane = lane_factory(scenario)
    caplog.set_level(logging.INFO)
    reader = lane.service.reader
    assert reader is not None
    assert reader.is_running
    reader.close()  # its thread ends, as it would on an unexpected error
    assert_lane_exits(lane, EXIT_LINK_FAILED, "reader thread ended", caplog)
