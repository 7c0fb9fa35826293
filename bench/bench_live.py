"""Live crossing latency: from the controller's frame to what a subscriber on loopback sees.

A simulated lane controller (in this process, on a pseudo-terminal, at speed 1) plays a lane of
vehicles that stop at the booth for a few seconds with their cards read all the while;
``lane-agent run`` (a separate process, journal on, default config) reads it and publishes to a
private Mosquitto; a subscriber here receives the live and final crossings. Measured:

* **frame → recommendation change**: from the moment the tag read (or loop edge) that changes
  the vehicle's recommendation is written to the pty to the live event with the new
  recommendation at the subscriber. Which frame changes it is found by replaying the planned
  frames through the lane core (the same code, in-process): the frame after which the
  provisional recommendation differs from what time alone would give;
* **frame → any live update**: the same for every frame that changes the live view (the
  arrival that opens it, a card attached…);
* **departure edge → final crossing**: from the loop's clear frame to the final crossing event
  at the subscriber. It includes the lane's departure confirmation (``departure_confirm_s``,
  0.2 s by default: a clear shorter than that is loop chatter under a vehicle that stays).

Baseline, in the same run and on the same broker: a raw paho QoS 1 publish → receive round trip
between two clients of this process, one message at a time.

    .venv/bin/python bench/bench_live.py                  # 50 vehicles, about 5 minutes
    .venv/bin/python bench/bench_live.py --vehicles 10    # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.dev.broker import PrivateMosquitto  # noqa: E402
from agent.dev.scoring import lane_inputs, valid_credentials  # noqa: E402
from agent.dev.suite import credential_records  # noqa: E402
from agent.lane.correlator import CorrelationSettings  # noqa: E402
from agent.lane.credentials import Program  # noqa: E402
from agent.lane.engine import LaneEngine  # noqa: E402
from agent.lane.events import LaneInput, LoopChanged, Tick  # noqa: E402
from agent.lane.policy import LanePolicy, LaneType  # noqa: E402
from agent.wire.live_event import LIVE_SCHEMA_ID  # noqa: E402
from agent.wire.schema import load_schema  # noqa: E402
from bench.bench_fusion import lane_config  # noqa: E402
from firmware_bridge.scenario import Anchor, Burst, CardPass, Scenario, Vehicle  # noqa: E402
from firmware_bridge.simulator import ControllerSimulator  # noqa: E402

LANE_CLI = [sys.executable, "-m", "agent.cli"]
TICK_S = 0.05
"""Replay ticks: finer than the agent's, so a change that time alone makes is seen as such."""


def lane_scenario(vehicles: int, seed: int) -> Scenario:
    """Vehicles that stop 3-5 s with one or two cards read at the booth all the while."""
    rng = random.Random(seed)
    cars = []
    for index in range(vehicles):
        dwell = round(rng.uniform(3.0, 5.0), 2)
        cards = tuple(
            CardPass(
                epc=f"E2801160{seed:04X}{index:04X}{card:04X}00000000",
                bursts=(
                    Burst(
                        start_s=round(rng.uniform(0.2, 0.8), 2),
                        duration_s=round(dwell - 1.0, 2),
                        reads=int((dwell - 1.0) * 4),
                        anchor=Anchor.ARRIVAL,
                        rssi_dbm=(-58.0, -45.0),
                    ),
                ),
            )
            for card in range(rng.choice((1, 1, 2)))
        )
        cars.append(Vehicle(dwell_s=dwell, gap_s=round(rng.uniform(1.0, 2.0), 2), cards=cards))
    return Scenario(name="live-latency", vehicles=tuple(cars), seed=seed, format=2)


@dataclass(frozen=True, slots=True)
class Trigger:
    """Input ``index`` of the plan changed crossing ``number``'s live view."""

    index: int
    number: int
    recommendation: str
    recommendation_changed: bool


def triggers(scenario: Scenario) -> tuple[list[Trigger], dict[int, int]]:
    """Replay the plan through the lane core: which input changed which crossing's view, and
    which loop-clear input is each crossing's departure (crossing number → input index)."""
    origin = 1_800_000_000.0
    inputs: list[LaneInput] = lane_inputs(scenario, origin)
    refs = {card.epc for vehicle in scenario.vehicles for card in vehicle.cards}
    credentials = valid_credentials(refs, datetime.fromtimestamp(origin, UTC))
    policy = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}))
    engine = LaneEngine(CorrelationSettings(), policy, credentials.get)
    found: list[Trigger] = []
    departures: dict[int, int] = {}
    now = origin
    for index, lane_input in enumerate(inputs):
        while now + TICK_S < lane_input.at:
            now += TICK_S
            engine.handle(Tick(now))
        now = lane_input.at
        before = engine.current(now)
        engine.handle(lane_input)
        after = engine.current(now)
        if isinstance(lane_input, LoopChanged) and not lane_input.occupied and before is not None:
            departures[before[0]] = index
        if after is None:
            continue
        number, decision = after
        if before is None or before[0] != number:
            found.append(Trigger(index, number, decision.recommendation.value, False))
        elif _view(before[1]) != _view(decision):
            changed = before[1].recommendation is not decision.recommendation
            found.append(Trigger(index, number, decision.recommendation.value, changed))
    return found, departures


def _view(decision: Any) -> tuple[Any, ...]:
    from agent.lane.live import Summary

    return (Summary.of(decision),)


class Subscriber:
    """Receives live and final crossings, stamped on arrival."""

    def __init__(self, port: int) -> None:
        self.messages: queue.Queue[tuple[float, str, dict[str, Any]]] = queue.Queue()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-live", protocol=MQTTProtocolVersion.MQTTv5
        )
        client.on_message = lambda c, u, m: self.messages.put(
            (time.time(), m.topic.rsplit("/", 1)[-1], json.loads(m.payload))
        )
        client.connect("127.0.0.1", port)
        client.subscribe([("lane-agent/v1/+/+/live", 1), ("lane-agent/v1/+/+/crossing", 1)])
        client.loop_start()
        self._client = client

    def drain(self) -> list[tuple[float, str, dict[str, Any]]]:
        found = []
        while True:
            try:
                found.append(self.messages.get_nowait())
            except queue.Empty:
                return found

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def paho_round_trips(port: int, count: int) -> list[float]:
    """Raw paho QoS 1 publish → receive on the same broker, one message at a time (ms)."""
    received = threading.Event()
    arrived: list[float] = []
    receiver = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    ready = threading.Event()
    receiver.on_subscribe = lambda *a: ready.set()

    def on_message(_c: Any, _u: Any, _m: Any) -> None:
        arrived.append(time.perf_counter())
        received.set()

    receiver.on_message = on_message
    receiver.connect("127.0.0.1", port)
    receiver.subscribe("bench/rtt", qos=1)
    receiver.loop_start()
    sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    sender.connect("127.0.0.1", port)
    sender.loop_start()
    ready.wait(5)
    payload = b"x" * 1500  # about the size of a live event
    samples = []
    for _ in range(count):
        received.clear()
        sent = time.perf_counter()
        sender.publish("bench/rtt", payload, qos=1)
        if received.wait(5):
            samples.append((arrived[-1] - sent) * 1000)
        time.sleep(0.01)
    for client in (sender, receiver):
        client.loop_stop()
        client.disconnect()
    return samples


def run_lane(
    scenario: Scenario, workdir: Path, broker: PrivateMosquitto
) -> tuple[list[tuple[Any, float]], list[tuple[float, str, dict[str, Any]]]]:
    """Play the scenario at speed 1 through the agent; the frames sent and what arrived."""
    records = credential_records([scenario])
    credentials = workdir / "credentials.ndjson"
    credentials.write_text("".join(json.dumps(record) + "\n" for record in records))
    subscriber = Subscriber(broker.port)
    simulator = ControllerSimulator(scenario, speed=1.0, start_on_host=True)
    simulator.start()
    config = lane_config(workdir, simulator.device_path, broker.port)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORT_DISABLE_TELEMETRY": "1"}
    subprocess.run(
        [*LANE_CLI, "cache", "import", "--config", str(config), str(credentials)],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
    )
    with (workdir / "agent.log").open("w") as log:
        agent = subprocess.Popen(
            [*LANE_CLI, "run", "--config", str(config)], cwd=workdir, env=env, stderr=log
        )
        try:
            simulator.wait_done(scenario.duration_s + 120)
            time.sleep(3.0)  # the last departure's confirmation and publication
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
            simulator.stop()
    time.sleep(1.0)
    sent = simulator.sent_log()
    received = subscriber.drain()
    subscriber.close()
    return sent, received


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def line(name: str, samples: list[float]) -> str:
    if not samples:
        return f"{name:52} no samples"
    return (
        f"{name:52} p50 {statistics.median(samples):7.1f} ms   p99 {percentile(samples, 0.99):7.1f}"
        f" ms   max {max(samples):7.1f} ms   n={len(samples)}"
    )


def analyse(
    scenario: Scenario,
    sent: list[tuple[Any, float]],
    received: list[tuple[float, str, dict[str, Any]]],
) -> tuple[list[str], bool]:
    found, departures = triggers(scenario)
    schema = load_schema(LIVE_SCHEMA_ID)
    order: dict[str, int] = {}  # crossing_id → crossing number, by first appearance
    live: dict[int, list[tuple[float, dict[str, Any]]]] = {}
    final: dict[int, tuple[float, dict[str, Any]]] = {}
    invalid = 0
    for arrived, kind, event in sorted(received, key=lambda item: item[0]):
        number = order.setdefault(event["crossing_id"], len(order) + 1)
        if kind == "live":
            try:
                jsonschema.validate(event, schema)
            except jsonschema.ValidationError:
                invalid += 1
            live.setdefault(number, []).append((arrived, event))
        else:
            final.setdefault(number, (arrived, event))
    sent_at = [at for _event, at in sent]
    changes: list[float] = []
    updates: list[float] = []
    by_time = 0
    for trigger in found:
        if trigger.index >= len(sent_at):
            continue
        frame_at = sent_at[trigger.index]
        events = live.get(trigger.number, [])
        shown_before = [e for at, e in events if at < frame_at]
        if shown_before and shown_before[-1]["recommendation"] == trigger.recommendation:
            if trigger.recommendation_changed:
                by_time += 1  # the agent's ticks got there before the frame
            continue
        after = [
            at
            for at, e in events
            if at >= frame_at and e["recommendation"] == trigger.recommendation
        ]
        if not after:
            continue
        latency = (after[0] - frame_at) * 1000
        updates.append(latency)
        if trigger.recommendation_changed:
            changes.append(latency)
    departures_ms = []
    for number, index in departures.items():
        if number in final and index < len(sent_at):
            departures_ms.append((final[number][0] - sent_at[index]) * 1000)
    samples_path = os.environ.get("BENCH_LIVE_SAMPLES")
    if samples_path:
        Path(samples_path).write_text(
            json.dumps({"changes": changes, "updates": updates, "departures": departures_ms})
        )
    vehicles = len(scenario.vehicles)
    shown = 0
    same_id = 0
    for number in range(1, vehicles + 1):
        events = live.get(number, [])
        departure = departures.get(number)
        if (
            events
            and departure is not None
            and departure < len(sent_at)
            and events[0][0] < sent_at[departure]
            and events[0][1]["phase"] == "opened"
        ):
            shown += 1
        if number in final and events:
            same_id += final[number][1]["crossing_id"] == events[0][1]["crossing_id"]
    lines = [
        line("frame → recommendation change (live)", changes),
        line("frame → any live update (live)", updates),
        line("departure edge → final crossing", departures_ms),
        f"vehicles shown (opened) before they left: {shown}/{vehicles}; final crossings "
        f"{len(final)}/{vehicles}, with the live crossing's id: {same_id}; live events "
        f"{sum(len(v) for v in live.values())}, schema-invalid {invalid}; recommendation "
        f"changes reached by time before their frame: {by_time}",
    ]
    ok = shown == vehicles and same_id == vehicles and invalid == 0
    return lines, ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rtt-messages", type=int, default=500)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-live-"))
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = lane_scenario(args.vehicles, args.seed)
    print(
        f"# bench_live {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {args.vehicles} vehicles, "
        f"seed {args.seed}, speed 1, journal on; work in {workdir}",
        flush=True,
    )
    with PrivateMosquitto(workdir) as broker:
        rtt = paho_round_trips(broker.port, args.rtt_messages)
        print(line("baseline: raw paho QoS 1 publish → receive", rtt), flush=True)
        sent, received = run_lane(scenario, workdir, broker)
    lines, ok = analyse(scenario, sent, received)
    for text in lines:
        print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
