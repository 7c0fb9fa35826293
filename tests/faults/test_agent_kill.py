"""kill -9 of the whole ``lane-agent run`` while vehicles pass: every vehicle, exactly once.

Real parts only: the controller simulator plays a scenario on a real pty, the agent is the real
``lane-agent run`` in a child process with a TOML config (outbox and credential cache in
``tmp_path``), and a subscriber reads the crossings from a real Mosquitto. The agent is killed
with SIGKILL over and over, half of the time while the simulator has a vehicle at the booth, and
started again each time; the controller keeps resending what the agent had not acknowledged.

Each vehicle carries cards no other vehicle has, so the test can tell which crossing belongs to
which vehicle: after de-duplication by ``event_id`` every vehicle must be in exactly one
crossing, opened by its loop, closed by its departure, with every read of every card counted
once, and ``seq`` must run 1..N without a gap. Without the input journal a vehicle at the booth
when the agent dies loses its loop edge and early reads, and this test fails.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.uplink import Topics
from agent.wire.schema import load_schema
from firmware_bridge.codec import Loop, TagRead
from firmware_bridge.scenario import CardPass, Scenario, StrayRead, Vehicle
from firmware_bridge.simulator import ControllerSimulator
from llrp.emulator import LlrpReaderEmulator
from tests.support.agent_run import said_ready, spawn_agent, write_lane_config
from tests.support.broker import Message, MosquittoBroker, Subscriber

pytestmark = pytest.mark.broker

KILLS = 22
VEHICLES = 40
SPEED = 10.0
"""Scenario seconds per real second: about 25 s of traffic for the kill phase (the controller's
clock runs as fast, so the lane sees the scenario's own timing)."""
TOPICS = Topics("lane-agent/v1", "KILL-TEST", "L09")


def unique_cards_scenario(vehicles: int, seed: int) -> Scenario:
    """Vehicles with one or two cards each, no card on two vehicles and no straggler reads.

    Stragglers are left out on purpose: after a restart they arrive later than the straggler
    window on the agent's clock and would (correctly) open a crossing of their own.
    """
    rng = random.Random(seed)
    built = []
    for index in range(vehicles):
        cards = tuple(
            CardPass(
                epc=f"E2801160{index:08X}{card:08X}",
                reads=rng.randint(3, 8),
                rssi_dbm=(-72.0, -45.0),
                antennas=(1, 2),
            )
            for card in range(rng.randint(1, 2))
        )
        built.append(
            Vehicle(
                dwell_s=round(rng.uniform(2.5, 5.0), 2),
                gap_s=round(rng.uniform(2.2, 4.0), 2),
                cards=cards,
            )
        )
    return Scenario(name="kill-9", vehicles=tuple(built), seed=seed, controller_id="LANE-KILL")


def vehicle_at_booth(simulator: ControllerSimulator) -> bool:
    """The controller has sent a vehicle's arrival and at least one of its reads, not its exit."""
    events = simulator.sent_events()
    arrivals = [i for i, e in enumerate(events) if isinstance(e, Loop)]
    if not arrivals:
        return False
    last = arrivals[-1]
    edge = events[last]
    assert isinstance(edge, Loop)
    return edge.occupied and any(isinstance(e, TagRead) for e in events[last + 1 :])


def write_config(workdir: Path, device: str, broker_port: int) -> Path:
    reader = f'type = "lane_controller"\ndevice = "{device}"\nping_interval_s = 0.2\n'
    return write_lane_config(workdir, TOPICS, reader + "silence_timeout_s = 1.0\n", broker_port)


class Agents:
    """Starts ``lane-agent run`` processes; each says READY over a notify socket of the test's."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.workdir = workdir
        self.config = config
        self.notify_path = workdir / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        log = (self.workdir / f"agent-{self.runs:02d}.log").open("wb")
        self.process = spawn_agent(self.config, self.notify_path, output=log)
        log.close()
        if not said_ready(self.notify, self.process):
            pytest.fail(f"agent run {self.runs} never said READY:\n{self.log_tail()}")
        return self.process

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def log_tail(self, lines: int = 15) -> str:
        path = self.workdir / f"agent-{self.runs:02d}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_records(self) -> Iterator[dict[str, Any]]:
        for path in sorted(self.workdir.glob("agent-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    yield json.loads(line)

    def replays(self) -> list[dict[str, Any]]:
        """The log records of journal replays at start, over every run."""
        return [r for r in self.log_records() if r["msg"].startswith("input journal: replaying")]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.notify.close()


def distinct_events(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """Crossing events by event_id: what central keeps after de-duplication."""
    events: dict[str, dict[str, Any]] = {}
    for message in messages:
        event = json.loads(message.payload)
        events.setdefault(event["event_id"], event)
    return events


def test_kill_9_of_the_agent_loses_no_vehicle_and_counts_every_read_once(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    record_property: Callable[[str, object], None],
) -> None:
    scenario = unique_cards_scenario(VEHICLES, seed=4242)
    rng = random.Random(20261128)
    simulator = ControllerSimulator(scenario, speed=SPEED)
    simulator.start()
    agents = Agents(tmp_path, write_config(tmp_path, simulator.device_path, mosquitto.port))
    started = time.monotonic()
    at_booth = 0
    try:
        with Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as subscriber:
            for kill in range(KILLS):
                agents.start()
                if kill % 2:
                    # Half of the kills wait for a vehicle at the booth: the case the journal is for.
                    simulator.wait_for(lambda sim: vehicle_at_booth(sim) or sim.played, 10)
                    time.sleep(rng.uniform(0.0, 0.15))
                else:
                    # The kill moment is the random variable of this test, not a synchronisation.
                    time.sleep(rng.uniform(0.05, 0.8))
                at_booth += vehicle_at_booth(simulator)
                agents.kill()
            kill_phase_s = time.monotonic() - started
            agents.start()
            acknowledged = simulator.wait_done(60)
            # Not a failure yet when crossings are missing: the checks below say which and why.
            deadline = time.monotonic() + 15.0
            while len(distinct_events(subscriber.messages)) < VEHICLES:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert agents.stop() == 0, agents.log_tail()
            messages = subscriber.barrier()
    finally:
        agents.close()
        simulator.stop()

    assert acknowledged, "the controller still holds events the agent never acknowledged"
    events = distinct_events(messages)
    by_card = {card.epc: vehicle for vehicle in scenario.vehicles for card in vehicle.cards}
    seen: dict[int, int] = {}
    for event in events.values():
        refs = {card["ref"] for card in event["cards"]}
        assert refs, f"crossing seq {event['seq']} has no card: a vehicle lost its reads"
        owners = {id(by_card[ref]) for ref in refs}
        assert len(owners) == 1, f"crossing seq {event['seq']} mixes vehicles"
        vehicle = by_card[next(iter(refs))]
        seen[id(vehicle)] = seen.get(id(vehicle), 0) + 1
        assert refs == {card.epc for card in vehicle.cards}, f"seq {event['seq']}: cards lost"
        reads = {card["ref"]: card["reads"] for card in event["cards"]}
        assert reads == {card.epc: card.reads for card in vehicle.cards}, (
            f"seq {event['seq']}: read counts differ from what the controller sent"
        )
        assert (event["opened_by"], event["closed_by"], event["vehicle_detected"]) == (
            "loop",
            "departure",
            True,
        ), f"seq {event['seq']} lost its arrival or departure"
    assert len(seen) == VEHICLES, f"{VEHICLES - len(seen)} vehicles in no crossing"
    assert sorted(seen.values()) == [1] * VEHICLES, "a vehicle in two crossings"
    assert sorted(e["seq"] for e in events.values()) == list(range(1, VEHICLES + 1))

    replays = agents.replays()
    duplicates = len(messages) - len(events)
    rate = duplicates / VEHICLES
    record_property("kills", KILLS)
    record_property("kills_with_a_vehicle_at_the_booth", at_booth)
    record_property("restarts_that_replayed_the_journal", len(replays))
    record_property("duplicates", duplicates)
    record_property("duplicate_rate", round(rate, 4))
    print(
        f"\nlane-agent run kill -9 x{KILLS} ({at_booth} with a vehicle at the booth, "
        f"{len(replays)} restarts replayed the journal): {VEHICLES} vehicles, {len(messages)} "
        f"messages, {duplicates} duplicates ({rate:.2%}); kill phase {kill_phase_s:.1f} s, "
        f"total {time.monotonic() - started:.1f} s"
    )
    assert at_booth >= KILLS // 2, "the test did not exercise the vehicle at the booth"
    assert replays, "no restart found journalled inputs to replay"


IDLE_TIMEOUT_S = 2.0
"""``lane.correlation.idle_timeout_s`` in :func:`write_config`."""


def start_until_the_early_reads_are_acknowledged(
    agents: Agents, simulator: ControllerSimulator, early: int
) -> None:
    """Start the agent and wait until it has acknowledged the ``early`` stray reads that come
    before any vehicle reaches the loop."""
    agents.start()
    assert simulator.wait_for(
        lambda sim: (
            sum(isinstance(e, TagRead) for e in sim.sent_events()) == early
            and sim.unacknowledged == 0
        ),
        10,
    ), "the early reads were not all acknowledged"
    assert not any(isinstance(e, Loop) for e in simulator.sent_events())


def cards_before_the_loop(
    name: str,
    early_card: str,
    vehicle_card: str,
    *,
    early: int,
    later: int,
    gap_s: float,
    seed: int,
) -> Scenario:
    """``early`` reads of ``early_card`` before any vehicle, then one vehicle with ``later`` reads
    of ``vehicle_card``."""
    return Scenario(
        name=name,
        vehicles=(
            Vehicle(dwell_s=1.5, gap_s=gap_s, cards=(CardPass(epc=vehicle_card, reads=later),)),
        ),
        stray_reads=(
            StrayRead(at_s=0.5, card=CardPass(epc=early_card, reads=early), duration_s=0.5),
        ),
        seed=seed,
        controller_id="LANE-KILL",
    )


def kill_after_the_early_reads(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    scenario: Scenario,
    early: int,
    *,
    crossings: int,
    during_the_gap: Callable[[ControllerSimulator], None] = lambda simulator: None,
) -> tuple[bool, list[Message], Agents]:
    """Kill the agent once the early reads are acknowledged, keep it down for 2.5 idle timeouts
    (``during_the_gap`` runs first), restart it and stop it once ``crossings`` distinct crossings
    arrived (10 s at most). Returns whether the controller got every ACK, the crossing messages
    and the agents (for their logs)."""
    simulator = ControllerSimulator(scenario, speed=1.0)
    simulator.start()
    agents = Agents(tmp_path, write_config(tmp_path, simulator.device_path, mosquitto.port))
    try:
        with Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as subscriber:
            start_until_the_early_reads_are_acknowledged(agents, simulator, early)
            agents.kill()  # the crossing is open, opened by the reads, known only to the journal
            during_the_gap(simulator)
            time.sleep(2.5 * IDLE_TIMEOUT_S)  # the vehicle reaches the loop meanwhile
            agents.start()
            acknowledged = simulator.wait_done(30)
            deadline = time.monotonic() + 10.0
            while (
                len(distinct_events(subscriber.messages)) < crossings
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            assert agents.stop() == 0, agents.log_tail()
            messages = subscriber.barrier()
    finally:
        agents.close()
        simulator.stop()
    return acknowledged, messages, agents


def test_a_vehicle_its_cards_announced_survives_a_restart_slower_than_the_idle_timeout(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The reader sees the cards before the vehicle reaches the loop (its approach); the agent
    is killed then and comes back only after more than ``idle_timeout_s``, while the vehicle
    reaches the loop. The downtime is no idle time: the controller held the loop edge and the
    later reads, stamped when they happened, so the vehicle must still be one crossing with
    every read, its approach reads included, closed by its departure (not split at the
    restart, no reads dropped as stragglers)."""
    epc = "E280116000000000000ACE01"
    early, later = 4, 5
    scenario = cards_before_the_loop(
        "cards before the loop", epc, epc, early=early, later=later, gap_s=6.0, seed=7
    )
    acknowledged, messages, agents = kill_after_the_early_reads(
        tmp_path, mosquitto, scenario, early, crossings=1
    )

    assert acknowledged, "the controller still holds events the agent never acknowledged"
    events = list(distinct_events(messages).values())
    summary = [
        (
            event["opened_by"],
            event["closed_by"],
            event["vehicle_detected"],
            {card["ref"]: card["reads"] for card in event["cards"]},
        )
        for event in events
    ]
    assert summary == [("loop", "departure", True, {epc: early + later})]
    replays = agents.replays()
    assert replays, "the restart did not replay the journal"


def test_a_controller_reboot_during_the_restart_gap_does_not_merge_the_next_vehicle(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """A power cut to the lane cabinet restarts the agent and the controller together. A card
    of another lane (A) is read in a short burst with nobody on the loop; the agent dies, the
    controller reboots with a new boot id and has lost whatever it held, and vehicle B (another
    card) arrives after the agent is back. The new boot's lane time goes on from where it was:
    B is a crossing of its own with its own card, and A, read long before B arrived and never
    at the booth, is set aside as another lane's, not merged into B."""
    card_a, card_b = "E280116000000000000A0001", "E280116000000000000B0002"
    early, later = 4, 5
    scenario = cards_before_the_loop(
        "controller reboot during the restart", card_a, card_b,
        early=early, later=later, gap_s=7.0, seed=11,
    )  # fmt: skip

    def power_cut(simulator: ControllerSimulator) -> None:
        old_boot = simulator.boot_id
        simulator.reboot()  # a new boot id; whatever the controller held is lost
        assert simulator.boot_id != old_boot

    acknowledged, messages, agents = kill_after_the_early_reads(
        tmp_path, mosquitto, scenario, early, crossings=2, during_the_gap=power_cut
    )

    assert acknowledged, "the controller still holds events the agent never acknowledged"
    summary = sorted(
        (
            event["seq"],
            event["opened_by"],
            event["closed_by"],
            event["vehicle_detected"],
            {card["ref"]: card["reads"] for card in event["cards"]},
        )
        for event in distinct_events(messages).values()
    )
    assert summary == [(1, "loop", "departure", True, {card_b: later})]
    (event,) = distinct_events(messages).values()
    assert [(card["ref"], card["association"]) for card in event["set_aside"]] == [
        (card_a, "other_lane")
    ]
    rebooted = [r for r in agents.log_records() if "controller restarted" in r["msg"]]
    assert rebooted, "the restart did not notice the controller's new boot"


def test_after_kill_9_with_a_vehicle_at_the_booth_its_live_crossing_resumes_under_the_same_id(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The booth was shown the vehicle when the agent died. The restarted agent rebuilds the
    crossing from its journal and shows it again, saying it resumed, under the crossing id the
    booth already has; the final crossing follows once and carries that id; once the lane is
    empty nothing is retained as the current vehicle."""
    epc = "E280116000000000000ACE77"
    scenario = Scenario(
        name="live across a restart",
        vehicles=(Vehicle(dwell_s=6.0, gap_s=1.0, cards=(CardPass(epc=epc, reads=24),)),),
        seed=3,
        controller_id="LANE-KILL",
    )
    simulator = ControllerSimulator(scenario, speed=1.0, start_on_host=True)
    simulator.start()
    agents = Agents(tmp_path, write_config(tmp_path, simulator.device_path, mosquitto.port))
    lane_topics = f"{TOPICS.prefix}/{TOPICS.port_id}/{TOPICS.lane_id}/+"
    try:
        with Subscriber(mosquitto.host, mosquitto.port, lane_topics) as lane:

            def live_events() -> list[dict[str, Any]]:
                return [json.loads(m.payload) for m in lane.messages if m.topic == TOPICS.live]

            agents.start()
            lane.wait_until(
                lambda _: any(e["cards"] for e in live_events()), 15, "the card shown live"
            )
            shown_id = live_events()[0]["crossing_id"]
            agents.kill()
            agents.start()
            lane.wait_until(
                lambda messages: any(m.topic == TOPICS.crossing for m in messages),
                20,
                "the final crossing",
            )
            assert simulator.wait_done(10)
            assert agents.stop() == 0, agents.log_tail()
            messages = lane.barrier()
        with Subscriber(mosquitto.host, mosquitto.port, TOPICS.current) as late:
            retained = late.barrier()
    finally:
        agents.close()
        simulator.stop()

    schema = load_schema("lane-agent/live-crossing/1")
    for event in live_events():
        jsonschema.validate(event, schema)
    before = [e for e in live_events() if e["crossing_id"] == shown_id]
    assert {e["crossing_id"] for e in live_events()} == {shown_id}, "a second crossing id"
    resumed = [e for e in before if "resumed" in e["changes"]]
    assert resumed, [e["changes"] for e in before]
    assert resumed[0]["phase"] == "updated"
    assert epc in {card["ref"] for card in resumed[0]["cards"]}
    assert before[-1]["phase"] == "closed"
    finals = distinct_events([m for m in messages if m.topic == TOPICS.crossing])
    assert [(e["crossing_id"], e["seq"]) for e in finals.values()] == [(shown_id, 1)]
    (final,) = finals.values()
    assert {card["ref"]: card["reads"] for card in final["cards"]} == {epc: 24}
    assert agents.replays(), "the restart did not replay the journal"
    assert [m.payload for m in retained] == [], "a vehicle still retained on an empty lane"


def test_kill_9_of_an_agent_on_an_llrp_reader_keeps_the_vehicle_at_the_booth_once(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """The same fault through the other reader family. An LLRP reader holds nothing for a client
    that is away, so reads while the agent is down are lost (the emulator counts them); what
    the agent had journalled before the kill is not: the vehicle at the booth is restored, goes
    on with what is read after the restart, and is one crossing, with no read counted twice,
    under the crossing id the booth was shown."""
    epc = "E280116000000000000ACE88"
    scenario = Scenario(
        name="llrp kill",
        vehicles=(Vehicle(dwell_s=8.0, gap_s=1.0, cards=(CardPass(epc=epc, reads=40),)),),
        seed=5,
    )
    emulator = LlrpReaderEmulator(scenario, speed=1.0)
    emulator.start()
    config = write_config(tmp_path, "-", mosquitto.port)
    text = config.read_text().replace(
        '[reader]\ntype = "lane_controller"\ndevice = "-"\nping_interval_s = 0.2\n'
        "silence_timeout_s = 1.0\n",
        f'[reader]\ntype = "llrp"\nhost = "127.0.0.1"\nport = {emulator.port}\n'
        "keepalive_s = 0.5\nsilence_timeout_s = 2.0\nreconnect_min_s = 0.1\n"
        "reconnect_max_s = 1.0\n",
    )
    assert 'type = "llrp"' in text
    config.write_text(text)
    agents = Agents(tmp_path, config)
    lane_topics = f"{TOPICS.prefix}/{TOPICS.port_id}/{TOPICS.lane_id}/+"
    try:
        with Subscriber(mosquitto.host, mosquitto.port, lane_topics) as lane:

            def live_events() -> list[dict[str, Any]]:
                return [json.loads(m.payload) for m in lane.messages if m.topic == TOPICS.live]

            agents.start()
            lane.wait_until(
                lambda _: any(e["cards"] and e["cards"][0]["reads"] >= 5 for e in live_events()),
                15,
                "the card shown live",
            )
            shown = live_events()[-1]
            agents.kill()
            agents.start()
            lane.wait_until(
                lambda messages: any(m.topic == TOPICS.crossing for m in messages),
                30,
                "the final crossing",
            )
            assert agents.stop() == 0, agents.log_tail()
            messages = lane.barrier()
    finally:
        agents.close()
        emulator.stop()

    finals = distinct_events([m for m in messages if m.topic == TOPICS.crossing])
    assert len(finals) == 1, "the vehicle is one crossing: " + ", ".join(
        f"{e['opened_by']}-{e['closed_by']} with {len(e['cards'])} cards" for e in finals.values()
    )
    (final,) = finals.values()
    assert final["crossing_id"] == shown["crossing_id"]
    assert (final["opened_by"], final["closed_by"]) == ("loop", "departure")
    [card] = final["cards"]
    sent = sum(
        1
        for record in emulator.sent_records()
        if isinstance(record.event, TagRead) and record.event.epc_hex == epc
    )
    lost = sum(1 for event, _reason in emulator.lost_events() if isinstance(event, TagRead))
    assert lost > 0, "the reader read while the agent was down"
    assert shown["cards"][0]["reads"] < card["reads"] <= sent, (
        "the reads journalled before the kill are kept, none is counted twice"
    )
    assert agents.replays(), "the restart did not replay the journal"
