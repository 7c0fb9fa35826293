"""Value types shared by the plate models and the plate thread.

Kept free of onnxruntime and OpenCV imports so that code which only passes
readings around (matching, events, tests) can import them cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One licence plate found in one image.

    The agent recommends and an officer decides, so the reading carries its
    confidence and alternatives rather than a bare string: the voting and
    matching code downstream needs them to weigh one frame against another.
    """

    text: str
    """Best reading, characters from [A-Z0-9] only."""
    confidence: float
    """Confidence of ``text`` in 0..1."""
    char_confidences: tuple[float, ...]
    """One confidence per character of ``text``."""
    box: tuple[int, int, int, int]
    """x, y, w, h of the plate in pixels of the input image."""
    candidates: tuple[tuple[str, float], ...]
    """Top-N alternative readings with confidence, best first (may be just the best)."""
