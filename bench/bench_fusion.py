"""Fusion benchmark: is every vehicle of every lane situation one right crossing?

Writes a seeded suite of every situation (``firmware_bridge.situations``; at least 300
vehicles in all by default) and plays each scenario through the real parts: ``lane-agent
simulate`` on a pseudo-terminal (the controller's clock runs on scenario time, so a fast replay
correlates as the scenario is written), ``lane-agent run`` with a cache imported by ``lane-agent
cache import``, and a private Mosquitto with a subscriber. Each crossing received is scored
against the scenario's truth (``agent.dev.scoring``): per situation, vehicles, correct, split,
merged, extra and missing cards, lost vehicles, crossings for no vehicle and wrong EXPEDITEs.

The baseline, in the same run, is the correlator and policy this project had before occupant
association (``--baseline-rev``, default the last commit before it): its lane core, checked out
with ``git worktree``, replays the same planned events in a subprocess, with the scenario's times
as the times it received them (what that agent saw at speed 1, with no delay), scored the same
way. ``--core`` also scores today's lane core in-process on the same plan (no simulator, no
broker), which shows what the end-to-end run adds.

    .venv/bin/python bench/bench_fusion.py                       # the full suite, ~30 min
    .venv/bin/python bench/bench_fusion.py --vehicles 5 --speed 20 --situation queue
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.dev.broker import PrivateMosquitto  # noqa: E402
from agent.dev.scoring import (  # noqa: E402
    ScoredCrossing,
    SituationScore,
    from_decision,
    from_event,
    replay_through_core,
    score,
    valid_credentials,
)
from agent.dev.suite import CREDENTIALS_FILE, write_suite  # noqa: E402
from agent.lane.correlator import CorrelationSettings  # noqa: E402
from agent.lane.credentials import Program  # noqa: E402
from agent.lane.policy import LanePolicy, LaneType  # noqa: E402
from firmware_bridge.scenario_plan import plan_scenario, scenario_truth  # noqa: E402
from firmware_bridge.situations import SITUATIONS, suite_cards  # noqa: E402

BASELINE_REV = "9463f7a"
"""The last commit before occupant association and controller time."""
LANE_CLI = [sys.executable, "-m", "agent.cli"]
SPEEDS = {"stopped": 25.0}
"""Situations played faster than --speed: 60-180 s stays with sparse reads."""


def lane_config(workdir: Path, device: str, port: int) -> Path:
    path = workdir / "lane.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [lane]
            port_id = "BENCH"
            lane_id = "L01"
            allowed_programs = ["SENTRI"]

            [reader]
            type = "lane_controller"
            device = "{device}"
            ping_interval_s = 0.5
            silence_timeout_s = 3.0

            [cache]
            path = "credentials.db"

            [outbox]
            path = "outbox.db"

            [mqtt]
            host = "127.0.0.1"
            port = {port}
            reconnect_min_s = 0.2
            reconnect_max_s = 2.0

            [logging]
            level = "WARNING"
            format = "text"
            """
        )
    )
    return path


class Crossings:
    """A subscriber that keeps every crossing event received."""

    def __init__(self, port: int) -> None:
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_message = lambda c, u, m: self.events.put(json.loads(m.payload))
        self._client.connect("127.0.0.1", port)
        self._client.subscribe("lane-agent/v1/+/+/crossing", qos=1)
        self._client.loop_start()

    def drain(self) -> list[dict[str, Any]]:
        found = []
        while True:
            try:
                found.append(self.events.get_nowait())
            except queue.Empty:
                return found

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@contextmanager
def process(args: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORT_DISABLE_TELEMETRY": "1"}
    with log.open("w") as err:
        child = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        try:
            yield child
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(20)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()


def run_agent(
    situation: str, scenario_path: Path, workdir: Path, broker: PrivateMosquitto, speed: float
) -> tuple[list[ScoredCrossing], dict[str, Any]]:
    """One scenario through simulator, agent and broker; the crossings scored in scenario time."""
    work = workdir / situation
    work.mkdir()
    truth_path = work / "truth.json"
    subscriber = Crossings(broker.port)
    simulate = [*LANE_CLI, "simulate", "--scenario", str(scenario_path), "--speed", str(speed)]
    simulate += ["--truth", str(truth_path)]
    with process(simulate, work, work / "simulator.log") as simulator:
        assert simulator.stdout is not None
        device = simulator.stdout.readline().strip()
        config = lane_config(work, device, broker.port)
        subprocess.run(
            [
                *LANE_CLI,
                "cache",
                "import",
                "--config",
                str(config),
                str(scenario_path.parent / CREDENTIALS_FILE),
            ],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
        )
        with process(
            [*LANE_CLI, "run", "--config", str(config)], work, work / "agent.log"
        ) as agent:
            simulator.wait()
            time.sleep(3.0)  # the last departure's confirmation and publication
            agent.send_signal(signal.SIGTERM)  # a clean stop closes what is still open
            agent.wait(30)
    time.sleep(1.0)
    events = subscriber.drain()
    subscriber.close()
    truth = json.loads(truth_path.read_text())
    crossings = [from_event(event, truth["wall_time_origin"], truth["speed"]) for event in events]
    return crossings, truth


def baseline(rev: str, scenario: Any, workdir: Path) -> list[ScoredCrossing]:
    """The lane core of ``rev`` (a git worktree) on the same planned events."""
    tree = workdir / f"baseline-{rev}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=True)
        subprocess.run(
            ["git", "worktree", "add", "--force", "--detach", str(tree), rev],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    inputs = [
        {"at": p.at_s, "kind": type(p.message).__name__, **_message(p.message)}
        for p in plan_scenario(scenario)
    ]
    request = {"inputs": inputs, "cards": suite_cards(scenario)}
    result = subprocess.run(
        [sys.executable, "-c", _BASELINE_SCRIPT],
        input=json.dumps(request),
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        ScoredCrossing(c["opened"], c["closed"], frozenset(c["cards"]), c["recommendation"])
        for c in json.loads(result.stdout)
    ]


def _message(message: Any) -> dict[str, Any]:
    name = type(message).__name__
    if name == "TagRead":
        return {
            "epc": message.epc_hex,
            "antenna": message.antenna,
            "rssi": message.rssi_deci_dbm / 10,
        }
    if name == "Loop":
        return {"loop": message.loop_id, "occupied": message.occupied}
    return {}


_BASELINE_SCRIPT = """
import json, sys
from datetime import UTC, datetime, timedelta
from agent.lane.correlator import CorrelationSettings, CrossingCorrelator
from agent.lane.credentials import Credential, CredentialStatus, DocumentType, Program
from agent.lane.events import LoopChanged, TagRead, Tick
from agent.lane.policy import LanePolicy, LaneType, decide
request = json.load(sys.stdin)
origin = 1_800_000_000.0
moment = datetime.fromtimestamp(origin, UTC)
cards = {ref: Credential(ref, DocumentType.TRUSTED_TRAVELLER_CARD, Program.SENTRI,
         CredentialStatus.ACTIVE, moment - timedelta(days=365), moment + timedelta(days=3650),
         f"H-{i}") for i, ref in enumerate(request["cards"])}
policy = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}))
correlator = CrossingCorrelator(CorrelationSettings())
closed = []
last = 0.0
for item in request["inputs"]:
    at = origin + item["at"]
    while last + 0.25 < item["at"]:
        last += 0.25
        closed += correlator.handle(Tick(origin + last))
    last = item["at"]
    if item["kind"] == "TagRead":
        closed += correlator.handle(TagRead(at, item["epc"], item["antenna"], item["rssi"]))
    elif item["kind"] == "Loop":
        closed += correlator.handle(LoopChanged(at, item["loop"], item["occupied"]))
for step in range(1, 400):
    closed += correlator.handle(Tick(origin + last + step))
closed += correlator.close_all(origin + last + 400)
out = []
for crossing in closed:
    decision = decide(crossing, cards.get, policy)
    out.append({"opened": crossing.opened_at - origin, "closed": crossing.closed_at - origin,
                "cards": [c.ref for c in crossing.cards],
                "recommendation": decision.recommendation.value})
print(json.dumps(out))
"""


def core(scenario: Any) -> list[ScoredCrossing]:
    origin = time.time()
    credentials = valid_credentials(suite_cards(scenario), datetime.fromtimestamp(origin, UTC))
    policy = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}))
    decisions = replay_through_core(
        scenario, CorrelationSettings(), policy, credentials.get, origin=origin
    )
    return [from_decision(decision, origin) for decision in decisions]


HEADER = (
    f"{'situation':14} {'vehicles':>8} {'correct':>7} {'split':>5} {'merged':>6} "
    f"{'extra':>5} {'missing':>7} {'lost':>4} {'no-veh':>6} {'wrongX':>6}"
)


def row(name: str, result: SituationScore) -> str:
    return (
        f"{name:14} {result.vehicles:8} {result.correct:7} {result.split:5} {result.merged:6} "
        f"{result.extra_cards:5} {result.missing_cards:7} {result.lost:4} "
        f"{result.no_vehicle_crossings:6} {result.wrong_expedite:6}"
    )


def table(title: str, rows: dict[str, SituationScore]) -> str:
    total = SituationScore()
    for result in rows.values():
        total.add(result)
    lines = [title, HEADER]
    lines += [row(name, result) for name, result in rows.items()]
    no_vehicle_share = 100 * total.no_vehicle_crossings / max(1, total.crossings)
    lines.append(row("TOTAL", total))
    lines.append(
        f"correct {100 * total.correct_share:.1f} %, wrong EXPEDITE {total.wrong_expedite}, "
        f"crossings for no vehicle {no_vehicle_share:.2f} % of {total.crossings}"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=40, help="vehicles per situation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--situation", action="append", choices=list(SITUATIONS))
    parser.add_argument("--baseline-rev", default=BASELINE_REV)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--core", action="store_true", help="also score the core in-process")
    parser.add_argument("--failures", action="store_true", help="list every wrong vehicle")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    situations = args.situation or list(SITUATIONS)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fusion-"))
    workdir.mkdir(parents=True, exist_ok=True)
    suite = write_suite(
        workdir / "suite", vehicles=args.vehicles, seed=args.seed, situations=situations
    )
    print(
        f"# bench_fusion {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; seed {args.seed}, "
        f"{args.vehicles} vehicles per situation, speed {args.speed:g}; suite in {workdir}",
        flush=True,
    )
    agent_rows: dict[str, SituationScore] = {}
    core_rows: dict[str, SituationScore] = {}
    baseline_rows: dict[str, SituationScore] = {}
    with PrivateMosquitto(workdir) as broker:
        for entry in suite:
            truth = scenario_truth(entry.scenario)
            speed = max(args.speed, SPEEDS.get(entry.situation, 0.0))
            started = time.monotonic()
            crossings, _ = run_agent(entry.situation, entry.path, workdir, broker, speed)
            agent_rows[entry.situation] = score(truth, crossings)
            print(
                row(entry.situation, agent_rows[entry.situation])
                + f"   ({time.monotonic() - started:.0f} s at speed {speed:g})",
                flush=True,
            )
            if args.core:
                core_rows[entry.situation] = score(truth, core(entry.scenario))
            if not args.no_baseline:
                baseline_rows[entry.situation] = score(
                    truth, baseline(args.baseline_rev, entry.scenario, workdir)
                )
    if baseline_rows:
        subprocess.run(
            [
                "git",
                "worktree",
                "remove",
                "--force",
                str(workdir / f"baseline-{args.baseline_rev}"),
            ],
            cwd=ROOT,
            check=False,
        )
    print()
    print(table("agent end to end (simulate + run + Mosquitto)", agent_rows))
    if core_rows:
        print()
        print(table("today's lane core in-process, same plan", core_rows))
    if baseline_rows:
        print()
        print(table(f"baseline: the correlator of {args.baseline_rev}, same plan", baseline_rows))
    if args.failures:
        for name, result in agent_rows.items():
            for failure in result.failures:
                print(f"{name}: {failure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
