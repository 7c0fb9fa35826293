"""Generated lane situations end to end, driven the way an outside suite drives the lane: only
``lane-agent scenarios generate``, ``cache import``, ``simulate --truth`` and ``run``, a real
Mosquitto and subscribers. Every vehicle must be one right crossing, schema-valid, and no
crossing may earn an EXPEDITE with a card not in its vehicle; and every vehicle must have been
shown to the booth, with its cards, while it was there, under the id its final crossing carries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from agent.dev.scoring import from_event, score
from agent.wire.schema import load_schema
from firmware_bridge.scenario import load_scenario
from firmware_bridge.scenario_plan import scenario_truth
from tests.support.broker import MosquittoBroker, Subscriber

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parent.parent
LANE = [sys.executable, "-m", "agent.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "ORT_DISABLE_TELEMETRY": "1"}
SPEED = 20.0


def reader_section(family: str, where: str) -> str:
    """The ``[reader]`` section for what ``lane-agent simulate`` printed first."""
    if family == "llrp":
        host, port = where.rsplit(":", 1)
        return (
            f'type = "llrp"\nhost = "{host}"\nport = {port}\nantennas = [1, 2, 3, 4]\n'
            "keepalive_s = 0.5\nsilence_timeout_s = 3.0\nreconnect_min_s = 0.2\n"
        )
    return f'type = "lane_controller"\ndevice = "{where}"\nping_interval_s = 0.5\n' + (
        "silence_timeout_s = 3.0\n"
    )


def lane_config(directory: Path, family: str, where: str, port: int) -> Path:
    path = directory / "lane.toml"
    path.write_text(
        f"""
[lane]
port_id = "FUSION"
lane_id = "L01"
allowed_programs = ["SENTRI"]

[reader]
{reader_section(family, where)}

[cache]
path = "credentials.db"

[outbox]
path = "outbox.db"

[mqtt]
port = {port}
reconnect_min_s = 0.2
reconnect_max_s = 2.0

[logging]
level = "WARNING"
format = "text"
"""
    )
    return path


def cli(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [*LANE, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("situation", "family", "vehicles", "speed"),
    [
        ("rush_hour", "lane_controller", 8, SPEED),
        ("loop_faults", "lane_controller", 8, SPEED),
        # An LLRP reader's clock gives the agent a reading with its reports only (no heartbeat):
        # slower, so that the rate is measured before the first vehicle leaves.
        ("queue", "llrp", 4, 4.0),
    ],
)
def test_a_generated_situation_gives_one_right_crossing_per_vehicle(
    situation: str,
    family: str,
    vehicles: int,
    speed: float,
    tmp_path: Path,
    mosquitto: MosquittoBroker,
) -> None:
    """Through either reader family: the lane controller on a pty, an LLRP reader on TCP."""
    suite = tmp_path / "suite"
    assert "credentials" in cli(
        "scenarios", "generate", str(suite), "--vehicles", str(vehicles), "--seed", "4",
        "--situation", situation, cwd=tmp_path,
    )  # fmt: skip
    scenario_path = suite / f"{situation}.toml"
    truth_path = tmp_path / "truth.json"
    simulator = subprocess.Popen(
        [
            *LANE,
            "simulate",
            "--scenario",
            str(scenario_path),
            "--speed",
            str(speed),
            "--truth",
            str(truth_path),
            "--reader",
            family,
        ],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    agent: subprocess.Popen[str] | None = None
    try:
        assert simulator.stdout is not None
        where = simulator.stdout.readline().strip()
        config = lane_config(tmp_path, family, where, mosquitto.port)
        cli(
            "cache",
            "import",
            "--config",
            str(config),
            str(suite / "credentials.ndjson"),
            cwd=tmp_path,
        )
        with (
            Subscriber(mosquitto.host, mosquitto.port, "lane-agent/v1/+/+/crossing") as crossings,
            Subscriber(mosquitto.host, mosquitto.port, "lane-agent/v1/+/+/live") as live,
        ):
            agent = subprocess.Popen(
                [*LANE, "run", "--config", str(config)],
                cwd=tmp_path,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            assert simulator.wait(120) == 0, simulator.stderr.read() if simulator.stderr else ""
            time.sleep(2.0)  # the last departure confirmed and published
            agent.send_signal(signal.SIGTERM)
            assert agent.wait(30) == 0
            events = [json.loads(m.payload) for m in crossings.barrier()]
            live_events = [json.loads(m.payload) for m in live.barrier()]
    finally:
        for process in (simulator, agent):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    schema = json.loads((ROOT / "agent/wire/schemas/crossing-event.v2.schema.json").read_text())
    for event in events:
        jsonschema.validate(event, schema)
    truth = json.loads(truth_path.read_text())
    assert truth["speed"] == speed
    result = score(
        scenario_truth(load_scenario(scenario_path)),
        [from_event(event, truth["wall_time_origin"], truth["speed"]) for event in events],
    )
    assert result.wrong_expedite == 0, result.failures
    assert result.failures == []
    assert result.correct == result.vehicles == len(truth["vehicles"])
    assert_every_vehicle_was_shown_while_at_the_booth(events, live_events)


def assert_every_vehicle_was_shown_while_at_the_booth(
    events: list[dict[str, Any]], live_events: list[dict[str, Any]]
) -> None:
    """Each final crossing's id was opened live before the crossing closed, its cards were
    shown before it closed, and its closed live event agrees with it."""
    live_schema = load_schema("lane-agent/live-crossing/1")
    by_crossing: dict[str, list[dict[str, Any]]] = {}
    for event in live_events:
        jsonschema.validate(event, live_schema)
        by_crossing.setdefault(event["crossing_id"], []).append(event)
    for final in events:
        shown = by_crossing.get(final["crossing_id"])
        assert shown, f"crossing seq {final['seq']} was never shown live"
        first = shown[0]
        assert first["phase"] == "opened", first
        assert first["published_at"] <= final["closed_at"], "opened only after it closed"
        provisional = [e for e in shown if e["phase"] != "closed"]
        assert all(e["provisional"] for e in provisional)
        cards_shown = {card["ref"] for e in provisional for card in e["cards"]}
        assert {card["ref"] for card in final["cards"]} <= cards_shown, (
            f"crossing seq {final['seq']}: a card of it was never shown while it was open"
        )
        revisions = [e["revision"] for e in shown]
        assert revisions == sorted(set(revisions)), "live events out of order or repeated"
        [closed] = [e for e in shown if e["phase"] == "closed"]
        assert (closed["recommendation"], closed["reasons"], closed["closed_by"]) == (
            final["recommendation"],
            final["reasons"],
            final["closed_by"],
        )
    assert set(by_crossing) == {final["crossing_id"] for final in events}, (
        "a crossing shown live never had a final crossing"
    )
