"""A reader family's clock: the lane core's :class:`~agent.lane.clock.ControllerClock` behind a
lock, shared by the family's thread (which feeds it) and the engine thread (which reads it).

Every family stamps reads on its device's clock: the lane controller's uptime in milliseconds
with a heartbeat every second, an LLRP reader's uptime or UTC clock in microseconds with every
report and event. What a family knows of its device's boots and heartbeats it tells this clock;
the mapping to lane time, the watch for drift and steps, and what the rest of the agent reads
are the same for every family (docs/fusion.md, controller time).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from agent.lane.clock import ClockFault, ClockNotSynced, ClockSettings, ControllerClock
from agent.readers.base import InputDeferred

CLOCK_FAULT_CODES = tuple(fault.value for fault in ClockFault)


class ReaderClock:
    """Thread-safe lane time of one reader family."""

    def __init__(self, settings: ClockSettings, state: Mapping[str, Any] | None = None) -> None:
        """``state``: what :meth:`export_state` gave in an earlier run (the journal keeps it);
        ValueError if it is malformed (the caller starts afresh and says so)."""
        self._lock = threading.Lock()
        self._clock = ControllerClock.restore(state, settings)
        self._settings = settings

    @classmethod
    def restored(
        cls, settings: ClockSettings, state: Mapping[str, Any] | None
    ) -> tuple[ReaderClock, str | None]:
        """A clock from ``state``, or a fresh one and why the state could not be used."""
        try:
            return cls(settings, state), None
        except ValueError as error:
            return cls(settings), str(error)

    # --- the family's thread ------------------------------------------------------------------

    @property
    def boot_id(self) -> int | None:
        with self._lock:
            return self._clock.boot_id

    def on_boot(self, boot_id: int) -> None:
        """The device announced (or the family recognised) boot ``boot_id``."""
        with self._lock:
            self._clock.on_hello(boot_id)

    def on_heartbeat(self, timestamp_ms: int, received_at: float, pending: int = 0) -> None:
        """The device's clock read ``timestamp_ms`` when this arrived at ``received_at``."""
        with self._lock:
            self._clock.on_heartbeat(timestamp_ms, received_at, pending)

    def on_heard(self, received_at: float) -> None:
        """The device was heard without a timestamp (an LLRP keepalive): lane time may run on."""
        with self._lock:
            self._clock.on_heard(received_at)

    def lane_time(
        self, boot_id: int, timestamp_ms: int, received_at: float
    ) -> tuple[float, dict[str, Any] | None]:
        """The lane time of an input stamped ``timestamp_ms`` by boot ``boot_id``, and the
        clock's state to journal with it; :class:`InputDeferred` while the boot has no base."""
        with self._lock:
            return self._lane_time(boot_id, timestamp_ms, received_at), self._clock.export_state()

    def stamp(self, boot_id: int, timestamp_ms: int, received_at: float) -> float:
        """:meth:`lane_time` without the state (a family that journals a batch exports it once)."""
        with self._lock:
            return self._lane_time(boot_id, timestamp_ms, received_at)

    def _lane_time(self, boot_id: int, timestamp_ms: int, received_at: float) -> float:
        try:
            return self._clock.lane_time(boot_id, timestamp_ms, received_at)
        except ClockNotSynced as waiting:
            raise InputDeferred(str(waiting)) from None

    # --- any thread -----------------------------------------------------------------------------

    def lane_now(self, wall: float, lag_s: float = 0.0) -> float | None:
        with self._lock:
            return self._clock.lane_now(wall, lag_s)

    def to_wall(self, lane: float) -> float:
        with self._lock:
            return float(self._clock.to_wall(lane))

    def from_wall(self, wall: float) -> float:
        with self._lock:
            return float(self._clock.from_wall(wall))

    def time_known(self) -> bool:
        with self._lock:
            return self._clock.anchored

    def export_state(self) -> dict[str, Any] | None:
        with self._lock:
            return self._clock.export_state()

    def faults(self, wall: float) -> dict[str, str]:
        with self._lock:
            return {fault.value: text for fault, text in self._clock.faults(wall).items()}

    def status(self, wall: float) -> dict[str, Any]:
        with self._lock:
            return self._clock.status(wall)


class ReaderTimeMixin:
    """The seam's time methods (:class:`~agent.readers.base.LaneReader`), answered by the
    family's :class:`ReaderClock` (``self.clock``)."""

    clock: ReaderClock

    def lane_now(self, wall: float, lag_s: float = 0.0) -> float | None:
        return self.clock.lane_now(wall, lag_s)

    def to_wall(self, lane: float) -> float:
        return self.clock.to_wall(lane)

    def from_wall(self, wall: float) -> float:
        return self.clock.from_wall(wall)

    def time_known(self) -> bool:
        return self.clock.time_known()

    def clock_state(self) -> dict[str, Any] | None:
        return self.clock.export_state()

    def clock_status(self, wall: float) -> Mapping[str, Any]:
        return self.clock.status(wall)
