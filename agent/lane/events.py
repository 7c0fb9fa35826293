"""Typed inputs of the lane core.

Every input carries ``at``: seconds on the engine's clock (the service passes wall-clock epoch
seconds). The core never reads a clock itself, so tests drive time with plain numbers.
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
    """A vehicle loop changed state (the controller debounces; we see clean edges)."""

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


@dataclass(frozen=True, slots=True)
class Resumed:
    """The agent is running again after a restart, and the controller link is back, at ``at``.

    Between the engine's last input before the restart and ``at`` the agent was down: the
    controller buffered every event it could not deliver and resends it now, stamped with its
    new arrival time. That downtime is no time the lane was idle, so the correlator takes it out
    of its timers (idle timeout, longest stay, straggler window) instead of letting it close the
    vehicle that was at the booth.

    That holds only while the controller kept its events: ``excise`` is False when it restarted
    meanwhile (a new boot id; a power cut to the lane cabinet restarts both), because a rebooted
    controller has lost what it had not delivered (PROTOCOL.md §5), the restored vehicle's loop
    clear included. Then ``Resumed`` is a plain advance of time to ``at``, like a tick: the
    restored crossing's timers run on the downtime and close it as they would have.
    """

    at: float
    excise: bool = True


LaneInput = TagRead | LoopChanged | Tick | PlateSeen | VisionChanged | Resumed
