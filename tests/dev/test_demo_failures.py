"""``lane-agent demo`` fails, saying which part, when a part it shows is broken: a demo that
prints every crossing with ``plate - reader_unavailable`` and exits 0 hides a broken install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.dev.demo import broken_parts
from tests.support.broker import find_mosquitto

ROOT = Path(__file__).resolve().parents[2]


def _crossing(match: str | None) -> dict[str, object]:
    plate = None if match is None else {"text": None, "confidence": None, "match": match}
    return {"event_id": "e", "plate": plate}


def test_broken_parts_names_the_plate_reader_and_the_camera_with_their_counts() -> None:
    crossings = [
        _crossing("reader_unavailable"),
        _crossing("reader_unavailable"),
        _crossing("camera_unavailable"),
        _crossing("exact"),
        _crossing("not_read"),
        _crossing(None),
    ]
    assert broken_parts(crossings) == [
        "the plate reader was unavailable for 2 of 6 crossings",
        "the camera was unavailable for 1 of 6 crossings",
    ]
    assert broken_parts([_crossing("exact"), _crossing("not_read")]) == []


@pytest.mark.broker
def test_demo_with_no_models_exits_1_naming_the_plate_reader(tmp_path: Path) -> None:
    find_mosquitto()
    empty = tmp_path / "no-models"
    empty.mkdir()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "agent.cli", "demo", "--vehicles", "1", "--seed", "11"),
            *("--speed", "10", "--models", str(empty)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == (
        "demo failed: the plate reader was unavailable for 1 of 1 crossings "
        "(the agent's log on stderr says why)"
    )
    assert "manifest not found" in result.stderr
