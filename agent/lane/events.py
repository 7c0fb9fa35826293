"""Typed inputs of the lane core.

Every input carries ``at``: lane time, in seconds (:mod:`agent.lane.clock`: the controller's own
clock mapped to Unix time per controller boot; plate readings converted from the agent's clock).
The core never reads a clock itself, so tests drive time with plain numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TagRead:
    """One read of one tag by the lane's RFID reader, as the controller reported it."""

    at: float
    epc: str
    antenna: int
    rssi_dbm: float
    tid: str | None = None


@dataclass(frozen=True, slots=True)
class LoopChanged:
    """A vehicle loop changed state, as the controller reported it (chatter and lost edges
    included: the correlator copes with both)."""

    at: float
    loop_id: int
    occupied: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed with nothing to report: lets timeouts fire when the lane is quiet."""

    at: float


@dataclass(frozen=True, slots=True)
class PlateSeen:
    """The plate thread read a licence plate in one camera frame.

    ``crop_jpeg`` is the plate region as JPEG bytes (opaque to the core): the best reading's
    crop is published with the crossing event.
    """

    at: float
    text: str
    confidence: float
    char_confidences: tuple[float, ...] = ()
    candidates: tuple[tuple[str, float], ...] = ()
    crop_jpeg: bytes = b""


class VisionFault(enum.StrEnum):
    """Why the lane cannot read plates right now (it runs RFID-only meanwhile)."""

    CAMERA_UNAVAILABLE = "camera_unavailable"
    READER_UNAVAILABLE = "reader_unavailable"


@dataclass(frozen=True, slots=True)
class VisionChanged:
    """The plate thread's health changed; ``fault`` None means plates are being read again."""

    at: float
    fault: VisionFault | None


LaneInput = TagRead | LoopChanged | Tick | PlateSeen | VisionChanged
