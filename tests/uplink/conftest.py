"""Uplink test fixtures: an outbox in tmp_path, lane topics, uplinks that always get stopped."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import LaneControllerConfig
from agent.readers.lane_controller import LaneControllerReader
from agent.state.outbox import Outbox, OutboxError, OutboxRow
from agent.uplink.publisher import MqttUplink, UplinkState
from agent.wire.topics import Topics
from firmware_bridge.link import ControllerLink, LinkMessage
from firmware_bridge.scenario import Scenario
from firmware_bridge.simulator import ControllerSimulator

FAST_RECONNECT: dict[str, Any] = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5}
OUTBOX_ERRORS = (OutboxError, sqlite3.Error)
"""What the lane's outbox raises when its storage fails: the uplink's ``storage_errors``."""


class StateRecorder:
    """Collects the states an uplink reports, so tests wait for a transition instead of sleeping."""

    def __init__(self) -> None:
        self.history: list[UplinkState] = []
        self._condition = threading.Condition()

    def __call__(self, state: UplinkState) -> None:
        with self._condition:
            self.history.append(state)
            self._condition.notify_all()

    def mark(self) -> int:
        """Position to pass as ``since`` to wait for a state reported after this point."""
        with self._condition:
            return len(self.history)

    def wait_for(self, state: UplinkState, *, since: int = 0, timeout_s: float = 10.0) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: state in self.history[since:], timeout_s):
                pytest.fail(f"uplink never reported {state} within {timeout_s} s: {self.history}")


@pytest.fixture
def topics() -> Topics:
    return Topics("lane-agent/v1", "port-7", "lane-3")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db")
    yield box
    box.close()


def crossing_payload(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode()


def append_crossings(outbox: Outbox, topics: Topics, count: int) -> list[OutboxRow]:
    return [
        outbox.append(topic=topics.crossing, build_payload=crossing_payload) for _ in range(count)
    ]


def seqs(messages: list[Any]) -> list[int]:
    return [json.loads(message.payload)["seq"] for message in messages]


UplinkFactory = Callable[..., tuple[MqttUplink, StateRecorder]]


@pytest.fixture
def make_uplink(outbox: Outbox, topics: Topics) -> Iterator[UplinkFactory]:
    """Build uplinks with short back-offs; each one is stopped at the end of the test."""
    made: list[MqttUplink] = []

    def make(host: str, port: int, **overrides: Any) -> tuple[MqttUplink, StateRecorder]:
        recorder = StateRecorder()
        box = overrides.pop("outbox", outbox)
        lane_topics = overrides.pop("topics", topics)
        options: dict[str, Any] = {
            "client_id": "lane-agent-port-7-lane-3",
            "on_state_change": recorder,
            "storage_errors": OUTBOX_ERRORS,
            **FAST_RECONNECT,
            **overrides,
        }
        uplink = MqttUplink(box, lane_topics, host=host, port=port, **options)
        made.append(uplink)
        return uplink, recorder

    yield make
    for uplink in made:
        uplink.stop(timeout_s=2.0)


@pytest.fixture
def simulator() -> Iterator[ControllerSimulator]:
    """A controller on a pty with no vehicles, quick to resend and to send heartbeats."""
    quiet = Scenario(name="no vehicles", vehicles=())
    running = ControllerSimulator(quiet, resend_timeout_s=0.03, heartbeat_interval_s=0.1)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def link(simulator: ControllerSimulator) -> Iterator[ControllerLink]:
    """A started link to ``simulator`` that pings and re-sends signal commands quickly."""
    messages: list[LinkMessage] = []
    controller = ControllerLink(
        simulator.device_path,
        messages.append,
        ping_interval_s=0.1,
        silence_timeout_s=1.0,
        signal_retry_interval_s=0.05,
    )
    controller.start()
    yield controller
    controller.close()


@pytest.fixture
def reader(simulator: ControllerSimulator) -> Iterator[LaneControllerReader]:
    """The lane controller family on ``simulator``, quick to ping and to resend the signal."""
    config = LaneControllerConfig(
        device=simulator.device_path,
        ping_interval_s=0.1,
        silence_timeout_s=1.0,
        signal_ack_timeout_s=0.05,
    )
    family = LaneControllerReader(config, lambda inputs, resume, clock_state: None)
    family.start()
    yield family
    family.close()
