"""Text-line detector: finds the lines of text in a frame, plate characters among them.

The network is a DB (differentiable binarisation) segmenter: it returns, per pixel, the
probability that the pixel lies on text. Everything around it is numpy/OpenCV here: scaling the
frame to a multiple of 32, turning the probability map into rotated boxes, growing each box by
the margin the network was trained to shrink it by, and mapping it back to frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime

FloatArray = npt.NDArray[np.float32]

_STRIDE = 32
"""The network downsamples five times; inputs must be a multiple of 2**5 on each side."""


@dataclass(frozen=True, slots=True)
class TextBox:
    """A rotated text-line box in frame pixels.

    ``quad`` holds four corners clockwise from the top-left of the text as it reads, so that
    warping the quad onto a rectangle gives upright text.
    """

    quad: FloatArray
    score: float

    @property
    def height(self) -> float:
        return float(np.linalg.norm(self.quad[3] - self.quad[0]))

    @property
    def width(self) -> float:
        return float(np.linalg.norm(self.quad[1] - self.quad[0]))

    @property
    def centre(self) -> tuple[float, float]:
        cx, cy = self.quad.mean(axis=0)
        return float(cx), float(cy)


class TextDetector:
    """Runs the DB text detector on a BGR frame."""

    def __init__(
        self,
        session: onnxruntime.InferenceSession,
        *,
        max_side: int = 1280,
        max_pixels: int = 1280 * 736,
        pixel_threshold: float = 0.3,
        box_threshold: float = 0.5,
        unclip_ratio: float = 1.6,
        min_height: float = 6.0,
    ) -> None:
        self.session = session
        self._input_name = session.get_inputs()[0].name
        self.max_side = max_side
        # The detector's working memory grows with its input's area: the cap is a 720p
        # frame's, so a 4:3 frame at 1280 px on its long side costs no more than 720p does
        # (docs/models.md, Memory).
        self.max_pixels = max_pixels
        self.pixel_threshold = pixel_threshold
        self.box_threshold = box_threshold
        self.unclip_ratio = unclip_ratio
        self.min_height = min_height

    def detect(
        self, image_bgr: npt.NDArray[np.uint8], *, max_side: int | None = None
    ) -> list[TextBox]:
        """Return the text lines found in ``image_bgr``, in no particular order.

        ``max_side`` overrides the scale for this call: the frame is shrunk (never enlarged)
        so that its longer side is at most that many pixels, and its area at most
        ``max_pixels``.
        """
        tensor, scale_x, scale_y = self._preprocess(image_bgr, max_side or self.max_side)
        (prob,) = self.session.run(None, {self._input_name: tensor})
        return self._boxes(np.asarray(prob[0, 0], dtype=np.float32), scale_x, scale_y)

    def _preprocess(
        self, image_bgr: npt.NDArray[np.uint8], max_side: int
    ) -> tuple[FloatArray, float, float]:
        height, width = image_bgr.shape[:2]
        ratio = min(1.0, max_side / max(height, width), (self.max_pixels / (height * width)) ** 0.5)
        new_h = max(_STRIDE, round(height * ratio / _STRIDE) * _STRIDE)
        new_w = max(_STRIDE, round(width * ratio / _STRIDE) * _STRIDE)
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        # The network was trained on (pixel / 255 - 0.5) / 0.5, channels first.
        tensor = resized.astype(np.float32) * (2.0 / 255.0) - 1.0
        return tensor.transpose(2, 0, 1)[np.newaxis], width / new_w, height / new_h

    def _boxes(self, prob: FloatArray, scale_x: float, scale_y: float) -> list[TextBox]:
        mask = (prob > self.pixel_threshold).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        boxes: list[TextBox] = []
        for contour in contours:
            if len(contour) < 4:
                continue
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < 2:
                continue
            score = _mean_inside(prob, contour)
            if score < self.box_threshold:
                continue
            # DB shrinks text regions during training by area * (1 - r^2) / perimeter; the
            # inverse offset with ratio `unclip_ratio` restores the full line.
            offset = rw * rh * self.unclip_ratio / (2 * (rw + rh))
            corners = np.asarray(
                cv2.boxPoints(((cx, cy), (rw + 2 * offset, rh + 2 * offset), angle)),
                dtype=np.float32,
            )
            corners[:, 0] *= scale_x
            corners[:, 1] *= scale_y
            quad = order_reading(corners)
            box = TextBox(quad=quad, score=score)
            if box.height >= self.min_height:
                boxes.append(box)
        return boxes


def _mean_inside(prob: FloatArray, contour: npt.NDArray[Any]) -> float:
    x, y, w, h = cv2.boundingRect(contour)
    patch_mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(patch_mask, [contour - np.array([x, y], dtype=contour.dtype)], 1)
    return float(cv2.mean(prob[y : y + h, x : x + w], mask=patch_mask)[0])


def order_reading(corners: FloatArray) -> FloatArray:
    """Order four corners top-left, top-right, bottom-right, bottom-left of horizontal text.

    A line is read along its longer side; a box taller than wide is a stack of characters or
    noise and keeps its geometric order (the reader then sees it as short and wide-ratio-poor).
    """
    by_x = corners[np.argsort(corners[:, 0])]
    left = by_x[:2][np.argsort(by_x[:2, 1])]
    right = by_x[2:][np.argsort(by_x[2:, 1])]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)
