"""Multi-frame voting benchmark: what the plate of a crossing gains from all its frames.

Renders synthetic lane scenes (agent/vision/synth.py) of vehicles with plates in the formats
the lane sees, degrades each frame the way a lane camera does (lower resolution, motion blur,
sensor noise, strong JPEG compression), reads every frame with the agent's plate recognizer
and compares, per vehicle:

* ``first frame``        — the reading of the vehicle's first frame (no multi-frame use);
* ``most confident``     — the single reading with the highest confidence (the baseline a
                           simple system would use);
* ``voted``              — ``agent.lane.plates.vote`` over all the vehicle's readings;
* ``voted top-5``        — the true plate among the vote's five candidates.

It also prints the median and p95 time of one ``vote()`` call over a crossing's readings (pure
Python on the engine thread) next to the median time of reading one frame.

Run from the repository root::

    nice -n 10 .venv/bin/python bench/bench_plate_voting.py                 # 40 vehicles x 6
    nice -n 10 .venv/bin/python bench/bench_plate_voting.py --vehicles 10 --frames 4
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import string
import sys
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # imported after the telemetry switch and the path above
import numpy as np

from agent.lane.events import PlateSeen
from agent.lane.plates import vote
from agent.vision.capture import Image
from agent.vision.reader import PlateRecognizer
from agent.vision.synth import render_scene

ROI = (144, 240, 352, 192)  # where synthetic plates appear (agent/demo.py DEMO_ROI)
FORMATS = (
    ("CA", "NLLLNNN"),
    ("TX", "LLLNNNN"),
    ("AZ", "LLLNNNN"),
    ("NM", "LLLNNN"),
    ("MX-BCN", "LLLNNNL"),
)
# Letters a plate reader confuses with digits are kept out: the benchmark measures voting
# against misreads, and look-alike ambiguity is a matching question (agent/lane/plates.py).
LETTERS = "".join(c for c in string.ascii_uppercase if c not in "OIBSZQ")
DIGITS = string.digits


def random_plate(rng: random.Random) -> tuple[str, str]:
    jurisdiction, pattern = rng.choice(FORMATS)
    text = "".join(rng.choice(LETTERS if p == "L" else DIGITS) for p in pattern)
    return text, jurisdiction


def degrade(image: Image, rng: random.Random, scales: tuple[float, float]) -> Image:
    """What a lane camera does to a frame: resolution, motion, noise, compression."""
    height, width = image.shape[:2]
    scale = rng.uniform(*scales)
    small = cv2.resize(
        image, (int(width * scale), int(height * scale)), interpolation=cv2.INTER_AREA
    )
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    length = rng.choice((1, 3, 5, 7))
    if length > 1:
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        image = cv2.filter2D(image, -1, kernel)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(6, 14), image.shape)
    image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(20, 45)])
    assert ok
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    assert decoded is not None
    return decoded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=40)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--scale",
        type=float,
        nargs=2,
        default=(0.45, 0.75),
        metavar=("MIN", "MAX"),
        help="resolution kept per frame (lower is harder)",
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    recognizer = PlateRecognizer.load(threads=args.threads)
    x, y, w, h = ROI
    read_ms: list[float] = []
    vote_us: list[float] = []
    frames_right = frames_total = 0
    first_right = confident_right = voted_right = top5_right = 0
    for _ in range(args.vehicles):
        plate, jurisdiction = random_plate(rng)
        readings: list[PlateSeen] = []
        for index in range(args.frames):
            approach = index / max(1, args.frames - 1)
            scene = render_scene(plate, jurisdiction, rng=rng, approach=approach)
            frame = degrade(scene, rng, tuple(args.scale))[y : y + h, x : x + w]
            started = time.perf_counter()
            found = recognizer.read(frame)
            read_ms.append((time.perf_counter() - started) * 1000)
            best = found[0] if found else None
            frames_total += 1
            frames_right += bool(best and best.text == plate)
            if index == 0:
                first_right += bool(best and best.text == plate)
            if best is not None:
                readings.append(
                    PlateSeen(
                        float(index),
                        best.text,
                        best.confidence,
                        best.char_confidences,
                        best.candidates,
                    )
                )
        if readings:
            confident = max(readings, key=lambda r: r.confidence)
            confident_right += confident.text == plate
        started = time.perf_counter()
        result = vote(readings, top_n=5)
        vote_us.append((time.perf_counter() - started) * 1e6)
        voted_right += bool(result and result.text == plate)
        top5_right += bool(result and plate in [c.text for c in result.candidates])

    n = args.vehicles
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )
    print(
        f"{n} vehicles x {args.frames} degraded frames, seed {args.seed}, "
        f"threads {args.threads}, scale {args.scale[0]}-{args.scale[1]}"
    )
    print(
        f"per-frame top-1 exact        {frames_right / frames_total:6.1%}  ({frames_total} frames)"
    )
    print(f"first frame, per vehicle      {first_right / n:6.1%}")
    print(f"most confident frame (base)   {confident_right / n:6.1%}")
    print(f"voted top-1                   {voted_right / n:6.1%}")
    print(f"voted top-5                   {top5_right / n:6.1%}")
    read_sorted = sorted(read_ms)
    vote_sorted = sorted(vote_us)
    print(
        f"read one frame: median {statistics.median(read_ms):.1f} ms, "
        f"p95 {read_sorted[int(0.95 * (len(read_sorted) - 1))]:.1f} ms"
    )
    print(
        f"vote one crossing ({args.frames} readings): median {statistics.median(vote_us):.0f} us, "
        f"p95 {vote_sorted[int(0.95 * (len(vote_sorted) - 1))]:.0f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
