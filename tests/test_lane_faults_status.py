"""A controller clock that steps or drifts, and a loop stuck occupied, are caught and reported on
the status topic while every vehicle stays one right crossing: real simulator on a pty, the
agent's service, a real Mosquitto."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cache import CredentialCache
from agent.config import load_config
from agent.dev.scoring import from_event, score
from agent.dev.suite import credential_records
from agent.service import LaneService
from agent.wire.topics import Topics
from firmware_bridge.scenario import (
    CardPass,
    ClockStep,
    ControllerClock,
    LoopFault,
    LoopFaultKind,
    Scenario,
    Shape,
    Vehicle,
)
from firmware_bridge.scenario_plan import scenario_truth
from firmware_bridge.simulator import ControllerSimulator
from tests.support.broker import MosquittoBroker, Subscriber

pytestmark = pytest.mark.broker

SPEED = 10.0
TOPICS = Topics("lane-agent/v1", "FAULTS", "L02")


def card(index: int) -> CardPass:
    return CardPass(
        epc=f"E28011606000020000{index:06X}",
        reads=30,
        rssi_dbm=(-58.0, -46.0),
        antennas=(1, 2),
        shape=Shape.PLATEAU,
    )


def vehicles(count: int, **faults: LoopFault) -> tuple[Vehicle, ...]:
    return tuple(
        Vehicle(dwell_s=12.0, gap_s=6.0, cards=(card(i),), loop_fault=faults.get(str(i)))
        for i in range(count)
    )


class Lane:
    """The agent's service on a thread, fed by a simulated controller playing ``scenario``."""

    def __init__(self, scenario: Scenario, workdir: Path, broker: MosquittoBroker) -> None:
        with CredentialCache.open(workdir / "credentials.db") as cache:
            cache.import_records(credential_records([scenario]), source="test")
        self.simulator = ControllerSimulator(scenario, speed=SPEED)
        path = workdir / "lane.toml"
        path.write_text(
            f'[lane]\nport_id = "{TOPICS.port_id}"\nlane_id = "{TOPICS.lane_id}"\n'
            'allowed_programs = ["SENTRI"]\n'
            f'[reader]\ntype = "lane_controller"\ndevice = "{self.simulator.device_path}"\n'
            "ping_interval_s = 0.2\nsilence_timeout_s = 1.0\n"
            '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
            f"[mqtt]\nport = {broker.port}\nstatus_interval_s = 1.0\n"
        )
        self.service = LaneService(load_config(path))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.service.ready.wait(10)
        self.simulator.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        self.simulator.stop()


@pytest.fixture
def lanes(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Any]:
    started: list[Lane] = []

    def start(scenario: Scenario) -> Lane:
        lane = Lane(scenario, tmp_path, mosquitto)
        started.append(lane)
        return lane

    yield start
    for lane in started:
        lane.close()


def faults_seen(status: Subscriber) -> set[str]:
    return {
        fault["code"]
        for message in status.messages
        for fault in json.loads(message.payload).get("faults", [])
    }


def play(lane: Lane, scenario: Scenario, crossings: Subscriber) -> list[dict[str, Any]]:
    assert lane.simulator.wait_done(120), "the scenario was not played and acknowledged"
    count = len(scenario.vehicles)
    return [json.loads(m.payload) for m in crossings.wait_for(count, timeout_s=30)]


def test_a_controller_clock_that_steps_is_taken_out_and_reported(
    lanes: Any, mosquitto: MosquittoBroker
) -> None:
    """Mid-stay of the third vehicle the controller's clock jumps 30 s ahead: the agent takes
    the step out (lane time goes on) and raises controller_clock_step; no vehicle is closed by
    the jump, none is split."""
    scenario = Scenario(
        "clock step",
        vehicles(5),
        clock=ControllerClock(steps=(ClockStep(at_s=45.0, step_ms=30_000),)),
        format=2,
    )
    with (
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as crossings,
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.status) as status,
    ):
        lane = lanes(scenario)
        events = play(lane, scenario, crossings)
        status.wait_until(
            lambda ms: "controller_clock_step" in faults_seen(status), 10, "controller_clock_step"
        )
    truth = scenario_truth(scenario)
    origin = lane.simulator.wall_time_origin
    assert origin is not None
    result = score(truth, [from_event(e, origin, SPEED) for e in events])
    assert result.failures == []
    assert result.correct == 5


def test_a_loop_stuck_occupied_is_reported_and_its_vehicles_told_apart_by_their_cards(
    lanes: Any, mosquitto: MosquittoBroker
) -> None:
    scenario = Scenario(
        "stuck loop",
        vehicles(4, **{"1": LoopFault(LoopFaultKind.STUCK_OCCUPIED, duration_s=50.0)}),
        format=2,
    )
    with (
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as crossings,
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.status) as status,
    ):
        lane = lanes(scenario)
        events = play(lane, scenario, crossings)
        status.wait_until(
            lambda ms: "loop_edge_missing" in faults_seen(status), 10, "loop_edge_missing"
        )
    origin = lane.simulator.wall_time_origin
    assert origin is not None
    result = score(scenario_truth(scenario), [from_event(e, origin, SPEED) for e in events])
    assert result.failures == []
    assert any("split_by_cards" in event["loop_anomalies"] for event in events)
    assert all(
        event["recommendation"] != "EXPEDITE" or not event["loop_anomalies"] for event in events
    )
