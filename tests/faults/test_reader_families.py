"""The fault suite for both reader families: a broker outage and a full disk under the real agent.

``tests/faults/test_faults.py`` puts these faults on the delivery side alone; here the whole
``lane-agent run`` takes them, in a child process with a TOML config, fed by either reader
family: the lane controller simulator over a real pty, or the LLRP reader emulator over TCP. A
real Mosquitto is stopped and started by the test; the disk fills up by a file-size limit put on
the running agent (RLIMIT_FSIZE, as on a full disk every write that grows a file fails) and
lifted again.

Every vehicle carries a card no other vehicle has; the crossings the subscriber holds are scored
against the scenario's truth (:mod:`agent.dev.scoring`): each vehicle one crossing, with its
card, none lost, none merged, and ``seq`` handed out 1..N in order.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.dev.scoring import from_event, score
from agent.uplink import Topics
from firmware_bridge.codec import Loop
from firmware_bridge.scenario import CardPass, Scenario, Vehicle
from firmware_bridge.scenario_plan import SimEvent, scenario_truth
from firmware_bridge.simulator import ControllerSimulator
from llrp.emulator import LlrpReaderEmulator
from tests.support.agent_run import said_ready, spawn_agent, write_lane_config
from tests.support.broker import Message, MosquittoBroker, Subscriber, wait_until

pytestmark = pytest.mark.broker

FAMILIES = ("lane_controller", "llrp")
SPEED = 4.0
"""Scenario seconds per real second: a vehicle (3 s at the booth, 3 s gap) every 1.5 s."""
VEHICLES = 8
SIGNAL_GPO = 2
"""The LLRP reader's output wired to the lane signal (high: manual processing)."""
TOPICS = Topics("lane-agent/v1", "FAMILY-TEST", "L11")


def one_card_per_vehicle(seed: int, vehicles: int = VEHICLES) -> Scenario:
    """Vehicles each with one card of its own, evenly spaced."""
    return Scenario(
        name=f"reader families {seed}",
        vehicles=tuple(
            Vehicle(
                dwell_s=3.0,
                gap_s=3.0,
                cards=(CardPass(epc=f"E2801160{seed:08X}{index:08X}", reads=6),),
            )
            for index in range(vehicles)
        ),
        seed=seed,
    )


class ControllerReader:
    """The lane controller simulator on a pty; the signal is what the agent's SET_SIGNALs set."""

    family = "lane_controller"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.device = ControllerSimulator(scenario, speed=SPEED)
        self.device.start()

    def reader_section(self) -> str:
        return (
            f'type = "lane_controller"\ndevice = "{self.device.device_path}"\n'
            "ping_interval_s = 0.2\nsilence_timeout_s = 1.0\n"
        )

    def sent_events(self) -> list[SimEvent]:
        return self.device.sent_events()

    def signals(self) -> list[str]:
        """Every lane signal state the agent commanded, in order."""
        return [state.name for state in self.device.signal_history]

    def wall_time_origin(self) -> float | None:
        return self.device.wall_time_origin

    def stop(self) -> None:
        self.device.stop()


class LlrpReader:
    """The LLRP reader emulator; the signal is what the agent wrote to ``SIGNAL_GPO``."""

    family = "llrp"

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.device = LlrpReaderEmulator(scenario, speed=SPEED)
        self.device.start()

    def reader_section(self) -> str:
        return (
            f'type = "llrp"\nhost = "127.0.0.1"\nport = {self.device.port}\n'
            f"signal_gpo_port = {SIGNAL_GPO}\nkeepalive_s = 0.5\nsilence_timeout_s = 2.0\n"
            "reconnect_min_s = 0.1\nreconnect_max_s = 1.0\n"
        )

    def sent_events(self) -> list[SimEvent]:
        return self.device.sent_events()

    def signals(self) -> list[str]:
        """Every write to the signal's GPO, in order (high: MANUAL, low: OFF)."""
        return [
            "MANUAL" if write.high else "OFF"
            for write in self.device.gpo_history()
            if write.port == SIGNAL_GPO
        ]

    def wall_time_origin(self) -> float | None:
        return self.device.wall_time_origin

    def stop(self) -> None:
        self.device.stop()


Reader = ControllerReader | LlrpReader


def departed(reader: Reader) -> int:
    """Vehicles whose departure (the loop going free) the reader has sent to the agent."""
    return sum(1 for e in reader.sent_events() if isinstance(e, Loop) and not e.occupied)


def signal_shown(reader: Reader) -> str:
    """The lane signal the agent last asked the reader to show (OFF before any request)."""
    signals = reader.signals()
    return signals[-1] if signals else "OFF"


def signal_changes(reader: Reader) -> list[str]:
    """The signal states the lane went through: repeats and the OFF it started from left out
    (the LLRP family writes the signal's GPO at every connect)."""
    changes: list[str] = []
    for state in reader.signals():
        if state != (changes[-1] if changes else "OFF"):
            changes.append(state)
    return changes


def open_reader(family: str, vehicles: int = VEHICLES) -> Reader:
    """A reader of ``family`` playing a scenario of its own (it starts when the agent reads)."""
    if family == "lane_controller":
        return ControllerReader(one_card_per_vehicle(0x5EED, vehicles))
    return LlrpReader(one_card_per_vehicle(0x11F9, vehicles))


@pytest.fixture(params=FAMILIES)
def reader(request: pytest.FixtureRequest) -> Iterator[Reader]:
    """A reader of each family playing ``VEHICLES`` vehicles."""
    built = open_reader(request.param)
    yield built
    built.stop()


def write_config(workdir: Path, reader: Reader, broker_port: int) -> Path:
    return write_lane_config(
        workdir,
        TOPICS,
        reader.reader_section(),
        broker_port,
        mqtt_extra="status_interval_s = 1.0\n",
    )


class AgentProcess:
    """``lane-agent run`` in a child process, started once it said READY over a notify socket.

    Its output goes through a pipe to ``agent.log``: a log file the child wrote itself would
    count against a file-size limit the test puts on it.
    """

    def __init__(self, workdir: Path, config: Path) -> None:
        self.log_path = workdir / "agent.log"
        notify_path = workdir / "notify.sock"
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(str(notify_path))
        self.process = spawn_agent(config, notify_path, output=subprocess.PIPE)
        self._copier = threading.Thread(target=self._copy_log, daemon=True)
        self._copier.start()
        if not said_ready(self._notify, self.process):
            self.close()
            pytest.fail(f"the agent never said READY:\n{self.log_tail()}")

    def _copy_log(self) -> None:
        assert self.process.stdout is not None
        with self.log_path.open("ab") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()

    def limit_file_size(self, limit: int) -> None:
        """No file of the agent grows past ``limit`` bytes: each write that would fails
        (EFBIG; Python ignores SIGXFSZ), as on a full disk."""
        resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    def free_disk(self) -> None:
        resource.prlimit(
            self.process.pid,
            resource.RLIMIT_FSIZE,
            (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
        )

    def stop(self) -> int:
        """SIGTERM: the clean shutdown; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(30)
        self._copier.join(5)
        return status

    def log_tail(self, lines: int = 20) -> str:
        self._copier.join(0.2 if self.process.poll() is not None else 0)
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._copier.join(5)
        self._notify.close()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[[Path], AgentProcess]]:
    """Start agents in ``tmp_path``; any still running at the end are killed."""
    started: list[AgentProcess] = []

    def start(config: Path) -> AgentProcess:
        agent = AgentProcess(tmp_path, config)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


def distinct(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """Crossing events by event_id: what central keeps after de-duplication."""
    events: dict[str, dict[str, Any]] = {}
    for message in messages:
        event = json.loads(message.payload)
        events.setdefault(event["event_id"], event)
    return events


def every_vehicle(reader: Reader) -> Callable[[list[Message]], bool]:
    count = len(reader.scenario.vehicles)
    return lambda messages: len(distinct(messages)) >= count


def faults_of(message: Message) -> set[str]:
    return {fault["code"] for fault in json.loads(message.payload)["faults"]}


STORAGE_FAULTS = {"outbox_full", "journal_unavailable", "outbox_error"}


def faults_before_the_disk_fills(statuses: Subscriber) -> set[str]:
    """The faults of a status published before the test's fault (none of the storage ones);
    others may be raised by the test machine, such as ``page_unavailable`` when something else
    holds the lane page's port."""
    before = faults_of(statuses.wait_until(bool, 10, "a status")[-1])
    assert not before & STORAGE_FAULTS, before
    return before


def outbox_section(message: Message) -> dict[str, Any]:
    section: dict[str, Any] = json.loads(message.payload)["outbox"]
    return section


def wall_time(text: str) -> float:
    """A crossing event's timestamp as Unix time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def assert_every_vehicle_once_in_seq_order(
    reader: Reader, messages: list[Message]
) -> list[dict[str, Any]]:
    """Each seq under one event id, first arrivals in seq order 1..N, and every vehicle one
    right crossing by the scenario's truth. Returns the crossings in seq order."""
    scenario = reader.scenario
    count = len(scenario.vehicles)
    seqs = [json.loads(m.payload)["seq"] for m in messages]
    assert list(dict.fromkeys(seqs)) == list(range(1, count + 1)), seqs
    events = sorted(distinct(messages).values(), key=lambda event: int(event["seq"]))
    assert [event["seq"] for event in events] == list(range(1, count + 1)), (
        "a seq under two event ids"
    )
    origin = reader.wall_time_origin()
    assert origin is not None
    result = score(scenario_truth(scenario), [from_event(e, origin, SPEED) for e in events])
    assert result.failures == []
    assert result.correct == count
    return events


def test_vehicles_passing_while_the_broker_is_down_each_arrive_once_in_seq_order(
    reader: Reader,
    mosquitto: MosquittoBroker,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    """The broker is stopped after the second crossing and started again once three more
    vehicles have left the booth (4.5 s or more). The lane goes on meanwhile; afterwards every
    vehicle is one right crossing, ``seq`` 1..N arrives in order, each under one event id."""
    with Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as subscriber:
        agent = agents(write_config(tmp_path, reader, mosquitto.port))
        subscriber.wait_until(lambda ms: len(distinct(ms)) >= 2, 20, "the first two crossings")
        mosquitto.stop()
        outage_from = time.time()
        wait_until(lambda: departed(reader) >= 5, 15, "three more vehicles left the booth")
        time.sleep(max(0.0, outage_from + 4.5 - time.time()))
        outage_to = time.time()
        mosquitto.start()
        subscriber.wait_until(every_vehicle(reader), 30, "every vehicle's crossing")
        assert agent.stop() == 0, agent.log_tail()
        messages = subscriber.barrier()

    events = assert_every_vehicle_once_in_seq_order(reader, messages)
    closed_in_the_outage = [
        e["seq"] for e in events if outage_from < wall_time(e["closed_at"]) < outage_to
    ]
    assert len(closed_in_the_outage) >= 2, "the test did not close crossings during the outage"
    print(
        f"\n{reader.family}: broker down {outage_to - outage_from:.1f} s, crossings "
        f"{closed_in_the_outage} closed meanwhile, {len(messages) - len(events)} duplicates"
    )


def test_a_full_disk_shows_manual_on_the_reader_keeps_every_crossing_and_recovers_by_itself(
    reader: Reader,
    mosquitto: MosquittoBroker,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    """After the first crossing no file of the agent may grow (its outbox and journal share
    one SQLite file, in WAL mode). The lane falls back to manual processing on the device
    itself (a SET_SIGNAL to the controller, the signal GPO of the LLRP reader), raises
    ``outbox_full`` on the status topic and holds the crossings it cannot store; once space
    returns, with no restart, every vehicle is one right crossing in seq order, the faults
    clear and the signal goes back to OFF."""
    with (
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as crossings,
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.status) as statuses,
    ):
        agent = agents(write_config(tmp_path, reader, mosquitto.port))
        crossings.wait_until(lambda ms: len(distinct(ms)) >= 1, 20, "the first crossing")
        before = faults_before_the_disk_fills(statuses)
        wal = tmp_path / "outbox.db-wal"
        assert wal.exists(), "the outbox is not in WAL mode"
        agent.limit_file_size(wal.stat().st_size)
        full_at = departed(reader)
        wait_until(lambda: signal_shown(reader) == "MANUAL", 10, "MANUAL shown on the reader")
        statuses.wait_until(
            lambda ms: any("outbox_full" in faults_of(m) for m in ms), 15, "outbox_full"
        )
        wait_until(lambda: departed(reader) >= full_at + 3, 15, "three vehicles on manual")
        statuses.wait_until(
            lambda ms: outbox_section(ms[-1])["held_in_memory"] >= 2, 10, "crossings held"
        )
        assert signal_shown(reader) == "MANUAL"
        assert agent.process.poll() is None, "the agent must keep running on a full disk"
        gone, out = departed(reader), len(distinct(crossings.messages))

        agent.free_disk()
        wait_until(lambda: signal_shown(reader) == "OFF", 15, "the signal released")
        crossings.wait_until(every_vehicle(reader), 30, "every vehicle's crossing")
        statuses.wait_until(lambda ms: faults_of(ms[-1]) == before, 10, "the faults cleared")
        assert agent.stop() == 0, agent.log_tail()
        messages = crossings.barrier()

    assert gone - out >= 2, "crossings kept arriving on a full disk"
    assert_every_vehicle_once_in_seq_order(reader, messages)
    assert signal_changes(reader) == ["MANUAL", "OFF"]
    seen = set().union(*(faults_of(m) for m in statuses.messages)) - before
    print(
        f"\n{reader.family}: disk full after vehicle {full_at}; {gone} vehicles gone, {out} "
        f"crossings out when space returned; faults raised {sorted(seen)}"
    )


class StillManualError(Exception):
    """The lane still shows MANUAL, or a storage fault is still raised, with nothing held."""


@pytest.mark.parametrize("family", FAMILIES)
def test_space_returning_after_the_last_vehicle_releases_the_signal_without_another_vehicle(
    family: str,
    mosquitto: MosquittoBroker,
    agents: Callable[[Path], AgentProcess],
    tmp_path: Path,
) -> None:
    """The disk fills up after the first of three vehicles and frees up once all three have
    gone and their crossings are held. Nothing is left in memory only: the held crossings are
    stored and sent, and the lane, empty, must not go on showing MANUAL (to the next driver)
    until some reader input happens to arrive."""
    reader = open_reader(family, vehicles=3)
    try:
        with (
            Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as crossings,
            Subscriber(mosquitto.host, mosquitto.port, TOPICS.status) as statuses,
        ):
            agent = agents(write_config(tmp_path, reader, mosquitto.port))
            crossings.wait_until(lambda ms: len(distinct(ms)) >= 1, 20, "the first crossing")
            before = faults_before_the_disk_fills(statuses)
            agent.limit_file_size((tmp_path / "outbox.db-wal").stat().st_size)
            wait_until(lambda: departed(reader) == 3, 15, "every vehicle gone")
            statuses.wait_until(
                lambda ms: outbox_section(ms[-1])["held_in_memory"] == 2, 10, "two held"
            )
            agent.free_disk()
            crossings.wait_until(every_vehicle(reader), 15, "every vehicle's crossing")
            assert_every_vehicle_once_in_seq_order(reader, crossings.barrier())
            deadline = time.monotonic() + 15.0  # past an idle checkpoint (10 s) of the agent
            while signal_shown(reader) != "OFF" and time.monotonic() < deadline:
                time.sleep(0.1)
            # The status after the fault cleared is published a moment after the signal changed.
            deadline = time.monotonic() + 5.0
            while faults_of(statuses.messages[-1]) != before and time.monotonic() < deadline:
                time.sleep(0.1)
            faults = faults_of(statuses.messages[-1])
            assert agent.stop() == 0, agent.log_tail()
    finally:
        reader.stop()
    if (signal_shown(reader), faults) != ("OFF", before):
        raise StillManualError(f"signal {signal_shown(reader)}, faults {sorted(faults - before)}")
