"""Synthetic lane-camera sequences: one vehicle creeping up to the booth, frame by frame.

The evaluation set for voting (``bench/bench_plate_voting.py``): each vehicle gets a plate of
one format family (:func:`training.plate_render.sample_plate`), a body, a bumper sticker and
sometimes a dealer badge (lettering that is not the plate), and sometimes the plate of the car
ahead at the edge of the frame. Each frame shows the vehicle a little closer, through the
camera degradations of :mod:`training.plate_render` (motion blur, defocus, noise, JPEG, infra-red
at night, glare). The whole frame goes to the agent's recognizer, as on a lane.

Seeds: an evaluation seed must never be a training seed (``training.train_reader`` draws its
batches from ``"<seed>:<step>"`` strings and its validation from ``VALIDATION_SEED``; the lane
sets use integer seeds with their own prefix, see :func:`vehicle_rng`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass

import cv2
import numpy as np

from training.plate_render import (
    Image,
    PlateSpec,
    RenderedPlate,
    _camera_effects,
    degrade_plate,
    render_plate,
    sample_camera,
    sample_plate,
)

FRAME_SIZE = (1280, 720)
STICKERS = ("HONK IF YOU LOVE TACOS", "MY OTHER CAR IS A BIKE", "GO ASTROS", "PROUD PARENT", "4X4")
BADGES = ("TOYOTA", "SILVERADO", "CIVIC", "F-150", "HYBRID", "AWD")


def vehicle_rng(seed: int, family: str, index: int) -> random.Random:
    """The generator of vehicle ``index`` of ``family`` in the lane set of ``seed``."""
    return random.Random(f"lane-set:{seed}:{family}:{index}")


@dataclass(frozen=True, slots=True)
class LaneVehicle:
    spec: PlateSpec
    frames: tuple[Image, ...]


def lane_vehicle(seed: int, family: str, index: int, *, frames: int = 6) -> LaneVehicle:
    """The frames of one vehicle of ``family`` approaching the booth."""
    rng = vehicle_rng(seed, family, index)
    spec = sample_plate(rng, family)
    plate = render_plate(spec, rng, height=120)
    # The plate's own state (dirt, a frame over its edge) does not change between frames.
    physical = dataclasses.replace(sample_camera(rng), glare=0.0)
    worn = RenderedPlate(degrade_plate(plate, physical, rng), plate.line, spec)
    night = rng.random() < 0.2
    body = tuple(rng.randint(20, 220) for _ in range(3))
    sticker = rng.choice(STICKERS) if rng.random() < 0.5 else ""
    badge = rng.choice(BADGES) if rng.random() < 0.5 else ""
    ahead = sample_plate(rng, family) if rng.random() < 0.25 else None
    ahead_plate = render_plate(ahead, rng, height=120) if ahead else None
    # Plates at 1280 x 720 on a lane: characters about 14 px far out, 34 px at the booth.
    near_px = rng.uniform(26.0, 38.0)
    far_px = rng.uniform(12.0, 17.0)
    images = []
    for step in range(frames):
        approach = step / max(1, frames - 1)
        char_px = far_px + (near_px - far_px) * approach
        camera = dataclasses.replace(
            sample_camera(rng),
            infrared=night,
            dirt=0.0,
            frame_cover=0.0,
            motion_px=rng.uniform(0.0, 2.5) * (1 - 0.6 * approach),
        )
        frame = _scene(rng, FRAME_SIZE, approach, body, worn, char_px, sticker, badge, ahead_plate)
        images.append(_camera_effects(frame, camera, rng))
    return LaneVehicle(spec, tuple(images))


def _scene(
    rng: random.Random,
    size: tuple[int, int],
    approach: float,
    body: tuple[int, ...],
    plate: RenderedPlate,
    char_px: float,
    sticker: str,
    badge: str,
    ahead: RenderedPlate | None,
) -> Image:
    width, height = size
    shade = np.linspace(60, 125, height, dtype=np.float32)[:, None]
    road = np.repeat(shade, width, axis=1) + rng.uniform(-8, 8)
    frame = np.stack([road, road * 1.02, road * 1.05], axis=2).clip(0, 255).astype(np.uint8)
    for x in (int(width * 0.1), int(width * 0.9)):
        cv2.line(frame, (x, 0), (x + (x - width // 2) // 3, height), (200, 200, 200), 8)
    _, y0_, _, y1_ = plate.line
    plate_h, plate_w = plate.image.shape[:2]
    scale = char_px / (y1_ - y0_)
    target_w = plate_w * scale
    car_w = target_w * rng.uniform(4.2, 4.8)
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    bottom = height * (0.72 + 0.22 * approach)
    car_h = car_w * 0.62
    left, top = int(cx - car_w / 2), int(bottom - car_h)
    colour = tuple(int(c) for c in body)
    cv2.rectangle(
        frame, (left, top + int(car_h * 0.2)), (int(cx + car_w / 2), int(bottom)), colour, -1
    )
    cv2.rectangle(
        frame,
        (left + int(car_w * 0.15), top),
        (int(cx + car_w / 2 - car_w * 0.15), top + int(car_h * 0.35)),
        (50, 45, 40),
        -1,
    )
    lamp_y = top + int(car_h * 0.45)
    for lx in (left + int(car_w * 0.05), int(cx + car_w * 0.33)):
        cv2.rectangle(
            frame,
            (lx, lamp_y),
            (lx + int(car_w * 0.12), lamp_y + int(car_h * 0.1)),
            (30, 30, 170),
            -1,
        )
    bumper_top = int(bottom - car_h * 0.2)
    cv2.rectangle(
        frame, (left - 6, bumper_top), (int(cx + car_w / 2) + 6, int(bottom)), (35, 35, 35), -1
    )
    if badge:
        size_ = max(0.4, char_px / 30)
        cv2.putText(
            frame,
            badge,
            (int(cx + car_w * 0.12), top + int(car_h * 0.42)),
            cv2.FONT_HERSHEY_SIMPLEX,
            size_,
            (200, 200, 200),
            max(1, int(size_ * 2)),
            cv2.LINE_AA,
        )
    if sticker:
        size_ = max(0.3, char_px / 45)
        (tw, th), _ = cv2.getTextSize(sticker, cv2.FONT_HERSHEY_DUPLEX, size_, 1)
        sx, sy = left + int(car_w * 0.05), bumper_top + int(car_h * 0.08)
        cv2.rectangle(frame, (sx - 4, sy - th - 4), (sx + tw + 4, sy + 6), (240, 240, 240), -1)
        cv2.putText(
            frame,
            sticker,
            (sx, sy),
            cv2.FONT_HERSHEY_DUPLEX,
            size_,
            (30, 30, 200),
            max(1, int(size_ * 2)),
            cv2.LINE_AA,
        )
    px = cx - target_w / 2
    py = bumper_top - plate_h * scale * 0.55
    _paste(frame, plate.image, px, py, scale, rng)
    if ahead is not None:
        # The car ahead, leaving: its plate high in the frame and smaller.
        a_scale = scale * rng.uniform(0.5, 0.7)
        _paste(frame, ahead.image, rng.choice((0.05, 0.7)) * width, height * 0.08, a_scale, rng)
    return frame


def _paste(
    frame: Image, plate: Image, x: float, y: float, scale: float, rng: random.Random
) -> None:
    plate_h, plate_w = plate.shape[:2]
    small = cv2.resize(
        plate,
        (max(2, int(plate_w * scale)), max(2, int(plate_h * scale))),
        interpolation=cv2.INTER_AREA,
    )
    sh, sw = small.shape[:2]
    source = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    skew = sh * 0.1
    tilt = math.radians(rng.gauss(0, 2))
    target = source + np.array(
        [
            [x + rng.uniform(-skew, skew), y],
            [x + rng.uniform(-skew, skew), y + sw * math.sin(tilt)],
            [x, y + sw * math.sin(tilt)],
            [x, y],
        ],
        np.float32,
    )
    transform = cv2.getPerspectiveTransform(source, target)
    height, width = frame.shape[:2]
    warped = cv2.warpPerspective(small, transform, (width, height))
    mask = cv2.warpPerspective(np.full((sh, sw), 255, np.uint8), transform, (width, height))
    frame[mask > 127] = warped[mask > 127]
