"""Typed inputs of the lane core.

Every input carries ``at``: seconds on the engine's clock (the service passes wall-clock epoch
seconds). The core never reads a clock itself, so tests drive time with plain numbers.
"""

from __future__ import annotations

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


LaneInput = TagRead | LoopChanged | Tick
