"""Synthetic lane camera: the simulator's vehicles, with their plates, as camera frames.

The demo and the integration tests run the real plate pipeline (capture → detector → reader →
voting → event) without a camera. Each frame is a vehicle-like scene: road, a car body, a
bumper and lamps, and the scenario's plate text on a plate with its jurisdiction written above
the characters, seen in perspective, blurred and with sensor noise, like a fixed lane camera
looking at a car that creeps up to the booth and stops.

:class:`ScenarioCamera` follows a running :class:`~firmware_bridge.simulator.ControllerSimulator`:
it shows the vehicle whose presence-loop edge the controller has sent and nothing (an empty
lane) between vehicles, so the frames stay in step with the loop at any simulator speed.
:func:`write_scenario_frames` renders a whole scenario to an image folder at a fixed frame rate
instead, for the capture's folder source.

The renderer lives here, not in ``firmware_bridge``, so the bridge stays free of OpenCV.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from agent.vision.capture import Image
from firmware_bridge.codec import Loop
from firmware_bridge.scenario import Scenario
from firmware_bridge.scenario_plan import plan_scenario

FRAME_SIZE = (640, 480)
"""Width, height of synthetic frames (a typical lane camera substream)."""

_JURISDICTION_NAMES = {
    "CA": "CALIFORNIA",
    "AZ": "ARIZONA",
    "TX": "TEXAS",
    "NM": "NEW MEXICO",
    "BC": "BRITISH COLUMBIA",
    "ON": "ONTARIO",
    "MX-BCN": "BAJA CALIFORNIA",
    "MX-SON": "SONORA",
}


def render_scene(
    plate: str | None,
    jurisdiction: str | None,
    *,
    rng: random.Random,
    approach: float = 1.0,
    size: tuple[int, int] = FRAME_SIZE,
) -> Image:
    """One BGR frame; ``plate`` None renders the empty lane. ``approach`` 0..1: far → at booth."""
    width, height = size
    frame = _road(width, height, rng)
    if plate is not None:
        _draw_vehicle(frame, plate, jurisdiction, rng, min(max(approach, 0.0), 1.0))
    sigma = rng.uniform(0.4, 1.1)
    blurred = cv2.GaussianBlur(frame, (0, 0), sigma).astype(np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(
        0.0, rng.uniform(2.0, 6.0), frame.shape
    )
    noisy: Image = np.clip(blurred + noise, 0, 255).astype(np.uint8)
    return noisy


def _road(width: int, height: int, rng: random.Random) -> Image:
    shade = np.linspace(70, 120, height, dtype=np.float32)[:, None]
    base = np.repeat(shade, width, axis=1) + rng.uniform(-10, 10)
    frame = np.stack([base, base * 1.02, base * 1.04], axis=2).clip(0, 255).astype(np.uint8)
    for x in (int(width * 0.08), int(width * 0.92)):
        cv2.line(frame, (x, 0), (x + (x - width // 2) // 3, height), (200, 200, 200), 6)
    return frame


def _vehicle_colour(plate: str) -> tuple[int, int, int]:
    digest = hashlib.sha256(plate.encode()).digest()
    return (40 + digest[0] % 150, 40 + digest[1] % 150, 40 + digest[2] % 150)


def _draw_vehicle(
    frame: Image, plate: str, jurisdiction: str | None, rng: random.Random, approach: float
) -> None:
    height, width = frame.shape[:2]
    scale = 0.7 + 0.3 * approach
    car_w = int(width * 0.62 * scale)
    car_h = int(height * 0.62 * scale)
    cx = width // 2 + rng.randint(-6, 6)
    bottom = int(height * (0.78 + 0.17 * approach))
    top = bottom - car_h
    left, right = cx - car_w // 2, cx + car_w // 2
    colour = _vehicle_colour(plate)
    cv2.rectangle(frame, (left, top + car_h // 5), (right, bottom), colour, -1)
    cv2.rectangle(
        frame,
        (left + car_w // 8, top),
        (right - car_w // 8, top + car_h // 3),
        tuple(int(c * 0.6) for c in colour),
        -1,
    )
    cv2.rectangle(
        frame,
        (left + car_w // 6, top + car_h // 20),
        (right - car_w // 6, top + car_h // 4),
        (60, 50, 40),
        -1,
    )
    lamp_y = top + car_h // 2
    for lamp_x in (left + car_w // 10, right - car_w // 10 - car_w // 8):
        cv2.rectangle(
            frame, (lamp_x, lamp_y), (lamp_x + car_w // 8, lamp_y + car_h // 10), (30, 30, 170), -1
        )
    bumper_y = bottom - car_h // 6
    cv2.rectangle(frame, (left - 4, bumper_y), (right + 4, bottom), (35, 35, 35), -1)
    plate_w = int(car_w * 0.36)
    plate_h = plate_w // 2
    plate_image = render_plate(plate, jurisdiction, (plate_w, plate_h))
    px = cx - plate_w // 2
    py = bumper_y - plate_h - car_h // 40
    _paste_in_perspective(frame, plate_image, px, py, rng)


def render_plate(plate: str, jurisdiction: str | None, size: tuple[int, int]) -> Image:
    """A flat plate: white with a dark border, jurisdiction above, characters large and dark."""
    plate_w, plate_h = size
    image = np.full((plate_h, plate_w, 3), 235, dtype=np.uint8)
    cv2.rectangle(image, (1, 1), (plate_w - 2, plate_h - 2), (40, 40, 40), max(1, plate_h // 30))
    name = _JURISDICTION_NAMES.get(jurisdiction or "", jurisdiction or "")
    if name:
        scale = plate_h / 150
        (text_w, _), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.putText(
            image,
            name,
            ((plate_w - text_w) // 2, int(plate_h * 0.2)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (60, 40, 150),
            1,
            cv2.LINE_AA,
        )
    thickness = max(2, plate_h // 14)
    scale = 1.0
    (text_w, text_h), _ = cv2.getTextSize(plate, cv2.FONT_HERSHEY_DUPLEX, scale, thickness)
    scale = min(plate_w * 0.86 / text_w, plate_h * 0.5 / text_h)
    (text_w, text_h), _ = cv2.getTextSize(plate, cv2.FONT_HERSHEY_DUPLEX, scale, thickness)
    cv2.putText(
        image,
        plate,
        ((plate_w - text_w) // 2, int(plate_h * 0.3) + text_h),
        cv2.FONT_HERSHEY_DUPLEX,
        scale,
        (90, 30, 20),
        thickness,
        cv2.LINE_AA,
    )
    return image


def _paste_in_perspective(frame: Image, plate: Image, x: int, y: int, rng: random.Random) -> None:
    plate_h, plate_w = plate.shape[:2]
    source = np.array([[0, 0], [plate_w, 0], [plate_w, plate_h], [0, plate_h]], dtype=np.float32)
    skew = plate_h * 0.12
    jitter = [rng.uniform(-skew, skew) for _ in range(4)]
    target = source + np.array(
        [
            [x + jitter[0], y],
            [x + jitter[1], y + jitter[2] * 0.5],
            [x, y + jitter[3] * 0.3],
            [x, y],
        ],
        dtype=np.float32,
    )
    transform = cv2.getPerspectiveTransform(source, target)
    height, width = frame.shape[:2]
    warped = cv2.warpPerspective(plate, transform, (width, height))
    mask = cv2.warpPerspective(
        np.full((plate_h, plate_w), 255, np.uint8), transform, (width, height)
    )
    frame[mask > 0] = warped[mask > 0]


def vehicle_at_booth(sent: Sequence[object], presence_loop_id: int = 1) -> int | None:
    """Index of the scenario vehicle on the presence loop, from the events the controller sent."""
    arrivals = 0
    occupied = False
    for event in sent:
        if isinstance(event, Loop) and event.loop_id == presence_loop_id:
            if event.occupied:
                arrivals += 1
            occupied = event.occupied
    return arrivals - 1 if occupied and arrivals else None


class ScenarioCamera:
    """A :class:`~agent.vision.capture.FrameSource` showing the scenario vehicle at the booth.

    ``presence`` returns the index of the vehicle on the loop or None (use
    :func:`vehicle_at_booth` over ``simulator.sent_events()``). Frames are paced at ``fps`` by
    the capture; the car creeps forward during its first second at the booth.
    """

    def __init__(
        self,
        scenario: Scenario,
        presence: Callable[[], int | None],
        *,
        fps: float = 8.0,
        seed: int = 0,
        size: tuple[int, int] = FRAME_SIZE,
    ) -> None:
        self.scenario = scenario
        self.presence = presence
        self.fps = fps
        self.size = size
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._arrived: tuple[int, float] | None = None

    @property
    def description(self) -> str:
        return f"synthetic camera for scenario {self.scenario.name!r}"

    @property
    def pace_fps(self) -> float | None:
        return self.fps

    def open(self) -> None:
        """Nothing to connect to."""

    def read(self) -> Image:
        index = self.presence()
        with self._lock:
            if index is None or not 0 <= index < len(self.scenario.vehicles):
                self._arrived = None
                return render_scene(None, None, rng=self._rng, size=self.size)
            if self._arrived is None or self._arrived[0] != index:
                self._arrived = (index, time.monotonic())
            approach = min(1.0, (time.monotonic() - self._arrived[1]) * 1.5)
            vehicle = self.scenario.vehicles[index]
            return render_scene(
                vehicle.plate,
                vehicle.jurisdiction,
                rng=self._rng,
                approach=approach,
                size=self.size,
            )

    def close(self) -> None:
        """Nothing to release."""


def write_scenario_frames(
    scenario: Scenario, folder: Path, *, fps: float = 5.0, seed: int = 0
) -> int:
    """Render the whole scenario to ``folder`` as numbered JPEGs, ``fps`` frames per scenario
    second (vehicles on the loop between their LOOP edges); returns the number of frames."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    windows: list[tuple[float, float, int]] = []
    arrived: dict[int, float] = {}
    index = -1
    for planned in plan_scenario(scenario):
        message = planned.message
        if isinstance(message, Loop) and message.occupied:
            index += 1
            arrived[index] = planned.at_s
        elif isinstance(message, Loop) and index in arrived:
            windows.append((arrived.pop(index), planned.at_s, index))
    end_s = max((leave for _, leave, _ in windows), default=0.0) + 1.0
    count = int(end_s * fps)
    for number in range(count):
        at_s = number / fps
        present = next(((start, i) for start, leave, i in windows if start <= at_s < leave), None)
        if present is None:
            image = render_scene(None, None, rng=rng)
        else:
            start, vehicle_index = present
            vehicle = scenario.vehicles[vehicle_index]
            image = render_scene(
                vehicle.plate, vehicle.jurisdiction, rng=rng, approach=(at_s - start) * 1.5
            )
        cv2.imwrite(str(folder / f"frame-{number:06d}.jpg"), image)
    return count
