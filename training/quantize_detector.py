"""Quantise the text detector to 8 bits, calibrated on synthetic street-like frames.

The detector dominates the plate pipeline's time (about 0.6 ms per thousand input pixels in
float32 on one 2-core lane computer). Static int8 quantisation with per-channel weights runs
the same network on the CPU's integer dot-product units. Calibration frames are rendered here
(random backgrounds, shapes, text in OpenCV's fonts and plate-like panels), never the
evaluation photos.

Needs the ``onnx`` package in addition to onnxruntime, numpy and OpenCV; a training-time tool,
not a runtime dependency::

    python3 -m venv /tmp/qenv && /tmp/qenv/bin/pip install onnx onnxruntime numpy opencv-python-headless
    /tmp/qenv/bin/python training/quantize_detector.py models/PP-OCRv6_det_small.onnx \
        models/plate_text_detector_int8.onnx
"""

from __future__ import annotations

import argparse
import os
import random
import string
import tempfile
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import cv2
import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

FONTS = [
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
]


def synthetic_frame(rng: random.Random, height: int, width: int) -> np.ndarray:
    """A frame with the statistics the detector meets in a lane: a car-coloured gradient,
    clutter, lines of text of many sizes and one or two plate-like panels."""
    base = np.array([rng.randint(20, 230) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(-40, 40, width, dtype=np.float32)[None, :, None]
    frame = np.clip(base + ramp + np.zeros((height, 1, 1), np.float32), 0, 255).astype(np.uint8)
    for _ in range(rng.randint(3, 12)):
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randint(10, 300), y0 + rng.randint(10, 200)
        if rng.random() < 0.5:
            cv2.rectangle(frame, (x0, y0), (x1, y1), colour, -1)
        else:
            cv2.line(frame, (x0, y0), (x1, y1), colour, rng.randint(1, 6))
    for _ in range(rng.randint(1, 2)):
        pw = rng.randint(60, 260)
        ph = int(pw * rng.uniform(0.22, 0.55))
        px, py = rng.randrange(max(1, width - pw)), rng.randrange(max(1, height - ph))
        cv2.rectangle(frame, (px, py), (px + pw, py + ph), (230, 230, 230), -1)
        cv2.rectangle(frame, (px, py), (px + pw, py + ph), (30, 30, 30), 2)
        text = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(7))
        scale = ph / 45
        cv2.putText(
            frame,
            text,
            (px + 4, py + int(ph * 0.75)),
            rng.choice(FONTS),
            scale,
            (20, 20, 20),
            max(1, int(scale * 2.5)),
            cv2.LINE_AA,
        )
    for _ in range(rng.randint(2, 8)):
        text = "".join(
            rng.choice(string.ascii_letters + string.digits + " -.")
            for _ in range(rng.randint(3, 14))
        )
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        scale = rng.uniform(0.4, 2.0)
        cv2.putText(
            frame,
            text,
            (rng.randrange(width), rng.randrange(height)),
            rng.choice(FONTS),
            scale,
            colour,
            max(1, int(scale * 2)),
            cv2.LINE_AA,
        )
    frame = cv2.GaussianBlur(frame, (3, 3), rng.uniform(0.1, 1.2))
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(1, 8), frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


class SyntheticFrames(CalibrationDataReader):
    def __init__(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        sizes = [(352, 640), (416, 736), (288, 512)]
        self._items = []
        for index in range(count):
            height, width = sizes[index % len(sizes)]
            frame = synthetic_frame(rng, height, width)
            tensor = frame.astype(np.float32) * (2.0 / 255.0) - 1.0
            self._items.append({"x": tensor.transpose(2, 0, 1)[None]})
        self._iter = iter(self._items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(args.source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(args.target),
            SyntheticFrames(args.frames, args.seed),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    print(f"wrote {args.target} ({args.target.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
