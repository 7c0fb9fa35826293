"""Synthetic camera frames for the demo and the tests: in step with the simulated loop, readable
by the capture, and kept out of firmware_bridge."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import numpy as np

from agent.dev.synthetic_camera import (
    FRAME_SIZE,
    ScenarioCamera,
    render_scene,
    vehicle_at_booth,
    write_scenario_frames,
)
from agent.vision.capture import CameraCapture, ImageFolderSource
from firmware_bridge.codec import Loop, TagRead
from firmware_bridge.scenario import generate_scenario

ROOT = Path(__file__).resolve().parents[2]


def test_vehicle_at_booth_follows_the_presence_loop_edges() -> None:
    occupied, clear = Loop(0, 1, occupied=True), Loop(0, 1, occupied=False)
    other_loop = Loop(0, 2, occupied=True)
    read = TagRead(0, 1, -500, bytes(12), None)
    assert vehicle_at_booth([]) is None
    assert vehicle_at_booth([occupied, read]) == 0
    assert vehicle_at_booth([occupied, clear]) is None
    assert vehicle_at_booth([occupied, clear, occupied, other_loop]) == 1
    assert vehicle_at_booth([occupied, clear, other_loop], presence_loop_id=2) == 0


def test_scenes_are_frames_of_the_camera_size_and_differ_with_and_without_a_vehicle() -> None:
    empty = render_scene(None, None, rng=random.Random(1))
    car = render_scene("7ABC123", "CA", rng=random.Random(1))
    assert empty.shape == car.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)
    assert empty.dtype == np.uint8
    assert float(np.abs(empty.astype(int) - car.astype(int)).mean()) > 10.0


def test_scenario_camera_shows_the_vehicle_on_the_loop_and_an_empty_lane_otherwise() -> None:
    scenario = generate_scenario(2, [], seed=5)
    present: list[int | None] = [None]
    camera = ScenarioCamera(scenario, lambda: present[0], seed=3)
    camera.open()
    empty = camera.read()
    present[0] = 1
    with_car = camera.read()
    present[0] = 7  # beyond the scenario: treated as an empty lane, never an error
    beyond = camera.read()
    camera.close()
    assert float(np.abs(empty.astype(int) - with_car.astype(int)).mean()) > 10.0
    assert float(np.abs(empty.astype(int) - beyond.astype(int)).mean()) < 10.0


def test_a_rendered_scenario_plays_through_the_folder_source(tmp_path: Path) -> None:
    scenario = generate_scenario(1, [], seed=9, gap_s=(0.5, 0.5), dwell_s=(1.0, 1.0))
    count = write_scenario_frames(scenario, tmp_path / "frames", fps=4.0)
    assert count == len(list((tmp_path / "frames").glob("frame-*.jpg")))
    assert count == int((0.5 + 1.0 + 1.0) * 4.0)
    capture = CameraCapture(ImageFolderSource(tmp_path / "frames", fps=30.0))
    capture.start()
    try:
        frame = capture.latest(newer_than=0, timeout_s=2.0)
    finally:
        capture.stop()
    assert frame is not None
    assert frame.image.shape == (FRAME_SIZE[1], FRAME_SIZE[0], 3)


def test_firmware_bridge_imports_neither_the_agent_nor_opencv() -> None:
    for path in (ROOT / "firmware_bridge").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"agent", "cv2", "numpy"}, path.name
