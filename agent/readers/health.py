"""Whether the lane can hear its reader, said the same way by every family.

A lane whose reader is unplugged looks, from the outside, like a quiet lane: no reads, no
crossings, an agent that is up. So the reader's link is part of the lane's health: every family
records when its link comes up and goes down, and why (a port that cannot be opened, a silent
controller, a refused connection), and the agent raises :data:`READER_DOWN` on the status topic
and in systemd's ``STATUS=`` once the link has been down for :data:`READER_DOWN_AFTER_S`. The
grace keeps a controller that restarts (down, then up again within a second) from flapping the
fault; a link that never came up since the agent started counts as down from the start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.status import iso_time

READER_DOWN = "reader_down"
"""Fault code: the agent cannot hear its reader (no reads, no loop edges reach the lane)."""

READER_DOWN_AFTER_S = 3.0
"""How long the link must stay down before the fault is raised."""


@dataclass(frozen=True, slots=True)
class LinkState:
    """A snapshot of :class:`LinkHealth`."""

    up: bool
    reason: str | None
    """Why the link is down (None while up)."""
    since_wall: float
    """Agent-clock time the link last went up or down (or the start, if it never came up)."""
    down_for_s: float
    """Seconds the link has been down (0 while up)."""

    @property
    def is_fault(self) -> bool:
        """Down for :data:`READER_DOWN_AFTER_S` or longer: the ``reader_down`` fault."""
        return not self.up and self.down_for_s >= READER_DOWN_AFTER_S


class LinkHealth:
    """The link state of one reader, written by its family's thread, read from any thread."""

    def __init__(
        self,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._up = False
        self._reason: str | None = "not connected yet"
        self._since_wall = wall_clock()
        self._since = monotonic()
        self.link_ups = 0
        self.link_losses = 0

    def up(self) -> None:
        with self._lock:
            if self._up:
                return
            self._up, self._reason = True, None
            self._since_wall, self._since = self._wall_clock(), self._monotonic()
            self.link_ups += 1

    def down(self, reason: str) -> None:
        """The link went down, or (already down) the reason it stays down changed."""
        with self._lock:
            if self._up:
                self._since_wall, self._since = self._wall_clock(), self._monotonic()
                self.link_losses += 1
            self._up, self._reason = False, reason

    def state(self) -> LinkState:
        with self._lock:
            down_for = 0.0 if self._up else max(0.0, self._monotonic() - self._since)
            return LinkState(self._up, self._reason, self._since_wall, down_for)

    def fault(self) -> str | None:
        """The READER_DOWN message while the link has been down long enough, else None."""
        state = self.state()
        if not state.is_fault:
            return None
        # No running duration here: the fault's own ``since`` says it, and a message that
        # changed every second would republish the status document every second.
        return f"reader link down: {state.reason}"

    def status(self) -> dict[str, Any]:
        """The link part of the ``reader`` status section."""
        state = self.state()
        return {
            "up": state.up,
            "down_reason": state.reason,
            "since": iso_time(state.since_wall),
            "link_ups": self.link_ups,
            "link_losses": self.link_losses,
        }
