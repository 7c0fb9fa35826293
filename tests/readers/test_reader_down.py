"""A reader the agent cannot hear is visible: each family says its link is down and why, the
``reader_down`` fault is raised after a short grace (and not for a restart that comes straight
back), cleared when the link comes up, and the lane's status topic and systemd ``STATUS=`` carry
it while ``READY=1`` still comes (the lane runs and says what is wrong)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.config import LaneControllerConfig, LlrpReaderConfig, load_config
from agent.readers.base import ReaderInput
from agent.readers.health import READER_DOWN, READER_DOWN_AFTER_S, LinkHealth
from agent.readers.lane_controller import LaneControllerReader
from agent.readers.llrp import LlrpReader
from agent.sdnotify import SystemdNotifier
from agent.service import LaneService
from agent.wire.topics import Topics
from firmware_bridge.scenario import CardPass, Scenario, Vehicle
from firmware_bridge.simulator import ControllerSimulator
from llrp.emulator import LlrpReaderEmulator
from tests.support.broker import MosquittoBroker, Subscriber, free_port

WAIT_S = 10.0


def eventually(predicate: Callable[[], object], timeout: float = WAIT_S) -> bool:
    """True as soon as ``predicate()`` is, False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def discard(inputs: Sequence[ReaderInput], resume: str | None, clock: Any) -> None:
    """A sink that stores nothing: these tests look at the link, not the inputs."""


def test_a_link_down_longer_than_the_grace_is_a_fault_and_a_quick_restart_is_not() -> None:
    clock = FakeClock()
    health = LinkHealth(wall_clock=clock, monotonic=clock)
    assert health.fault() is None, "just started: within the grace"
    clock.now += READER_DOWN_AFTER_S
    assert health.fault() == "reader link down: not connected yet"
    health.up()
    assert health.fault() is None
    assert health.status()["up"] is True
    assert health.status()["down_reason"] is None
    health.down("controller_restarted: new boot")
    clock.now += READER_DOWN_AFTER_S / 2
    health.up()
    clock.now += 60
    assert health.fault() is None, "down for less than the grace: no fault"
    health.down("silence: no valid frame for 3 s")
    clock.now += READER_DOWN_AFTER_S
    health.down("cannot open /dev/lane-controller: no such file")
    assert health.fault() == "reader link down: cannot open /dev/lane-controller: no such file"
    assert (health.link_ups, health.link_losses) == (2, 2)


def scenario() -> Scenario:
    card = CardPass(epc="E28011606000020000000001", reads=5, rssi_dbm=(-55.0, -45.0))
    return Scenario(name="one", vehicles=(Vehicle(dwell_s=1.0, gap_s=1.0, cards=(card,)),))


def controller_config(device: str) -> LaneControllerConfig:
    return LaneControllerConfig(device=device, ping_interval_s=0.2, silence_timeout_s=1.0)


def test_a_lane_controller_that_cannot_be_opened_is_reported_down_with_the_reason(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-controller-here"
    family = LaneControllerReader(controller_config(str(missing)), discard)
    family.start()
    try:
        assert eventually(lambda: READER_DOWN in family.faults(0.0))
        message = family.faults(0.0)[READER_DOWN]
        assert f"cannot open {missing}" in message
        status = family.status()
        assert status["up"] is False
        assert f"cannot open {missing}" in status["down_reason"]
        assert status["reader_id"] is None
        assert status["frames"] == 0
    finally:
        family.close()


def test_a_silent_controller_is_down_until_it_speaks_then_up_with_its_identity() -> None:
    simulator = ControllerSimulator(scenario(), speed=5.0)
    family = LaneControllerReader(controller_config(simulator.device_path), discard)
    family.start()
    try:
        assert eventually(lambda: READER_DOWN in family.faults(0.0))
        reason = family.status()["down_reason"]
        assert "no HELLO" in reason or "no valid frame from the controller" in reason, reason
        simulator.start()
        assert eventually(lambda: family.status()["up"])
        assert READER_DOWN not in family.faults(0.0)
        status = family.status()
        assert status["reader_id"]
        assert status["firmware"]
        assert eventually(lambda: family.status()["frames"] > 0)
        assert family.status()["crc_errors"] == 0
        assert eventually(lambda: family.status()["last_read_at"] is not None)
    finally:
        family.close()
        simulator.stop()


def test_an_llrp_reader_that_refuses_connections_is_down_then_up_when_it_answers() -> None:
    port = free_port()
    config = LlrpReaderConfig(
        type="llrp",
        host="127.0.0.1",
        port=port,
        antennas=(1,),
        loop_gpi_ports=(1,),
        keepalive_s=0.5,
        reconnect_min_s=0.1,
        reconnect_max_s=1.0,
    )
    family = LlrpReader(config, discard)
    family.start()
    emulator: LlrpReaderEmulator | None = None
    try:
        assert eventually(lambda: READER_DOWN in family.faults(0.0))
        assert "refused" in family.status()["down_reason"].lower()
        emulator = LlrpReaderEmulator(port=port)
        emulator.start()
        assert eventually(lambda: family.status()["up"])
        assert READER_DOWN not in family.faults(0.0)
        assert family.status()["reader_id"]
        assert eventually(lambda: family.status()["frames"] > 0)
    finally:
        family.close()
        if emulator is not None:
            emulator.stop()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    server.bind(str(path))
    server.settimeout(0.2)
    try:
        yield server, {"NOTIFY_SOCKET": str(path)}
    finally:
        server.close()


@pytest.mark.broker
def test_a_lane_whose_controller_is_missing_runs_and_says_so_on_the_status_topic_and_to_systemd(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    notify_socket: tuple[socket.socket, dict[str, str]],
) -> None:
    server, environ = notify_socket
    topics = Topics("lane-agent/v1", "DOWN", "L01")
    config = tmp_path / "lane.toml"
    config.write_text(
        f'[lane]\nport_id = "{topics.port_id}"\nlane_id = "{topics.lane_id}"\n'
        f'[reader]\ntype = "lane_controller"\ndevice = "{tmp_path / "pts-99"}"\n'
        '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
        f"[mqtt]\nport = {mosquitto.port}\nstatus_interval_s = 1.0\n"
    )
    status = Subscriber("127.0.0.1", mosquitto.port, topics.status)
    service = LaneService(load_config(config), notifier=SystemdNotifier(environ))
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    datagrams: list[str] = []

    def heard(text: str) -> bool:
        with contextlib.suppress(TimeoutError):
            datagrams.append(server.recv(4096).decode())
        return any(text in datagram for datagram in datagrams)

    try:
        assert eventually(lambda: heard("READY=1")), datagrams
        assert eventually(lambda: heard("READER DOWN (cannot open")), datagrams
        assert eventually(lambda: heard("faults: reader_down")), datagrams

        def down_document() -> dict[str, Any] | None:
            for message in reversed(status.messages):
                document = json.loads(message.payload)
                if any(fault["code"] == READER_DOWN for fault in document["faults"]):
                    return dict(document)
            return None

        assert eventually(lambda: down_document() is not None)
        document = down_document()
        assert document is not None
        assert document["reader"]["up"] is False
        assert "pts-99" in document["reader"]["down_reason"]
    finally:
        stop.set()
        thread.join(15)
        status.close()
