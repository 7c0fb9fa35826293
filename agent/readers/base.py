"""The seam between the lane and its readers: what every reader family gives the agent.

A reader family owns its device (a serial port, a TCP connection) and one or more threads of its
own. It turns what the device reports into typed lane inputs — :class:`~agent.lane.events.TagRead`
and :class:`~agent.lane.events.LoopChanged` — stamped in *lane time*: the device's own clock,
mapped by the family's :class:`~agent.readers.clock.ReaderClock`, never the time a report
happened to arrive. It hands each input, in the order the device saw them, to the agent's
:data:`InputSink` on its own thread and waits for it to return: the sink stores the input in the
input journal first, so a family that acknowledges inputs to its device (the lane controller
does) acknowledges only what is stored.

With each input goes a *resume token*: an opaque string the journal keeps for the last input
stored and hands back to the family at the next start (``resume``), so that a device that resends
what it was not told it had delivered is not heard twice (the lane controller's boot and event
sequence number), or so that the family knows which of its device's clocks and boots the journal's
last input came from. Only the family reads its tokens. With it goes the family's clock state
(plain data), which the journal keeps likewise, so a restarted agent maps the same device boot as
before.

The engine thread asks the family for lane time (:meth:`LaneReader.lane_now`, for ticks), for
conversions to and from the agent's clock (events, camera frames), for its faults and status, and
tells it what the lane signal must show (:meth:`LaneReader.set_signal`: the agent's fall-back to
manual processing). Nothing else of a family is visible to the rest of the agent: the engine,
the journal, the outbox and the fail-safe know only this module.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from agent.lane.events import LoopChanged, TagRead
from agent.readers.health import LinkHealth

ReaderInput = TagRead | LoopChanged
"""What a reader family delivers to the lane: a card read or a loop edge, in lane time."""


class LaneSignal(enum.Enum):
    """What the lane signal shows. The agent only ever asks for MANUAL (fall back to manual
    processing: it cannot store crossings) and OFF (no indication from the agent)."""

    OFF = "off"
    PROCEED = "proceed"
    STOP = "stop"
    MANUAL = "manual"


class InputSink(Protocol):
    """The agent's side of the seam, called on the family's thread with inputs in order.

    It returns once the inputs are stored (or, when the journal cannot store them, held in
    memory and the lane put on manual processing): the family may then acknowledge them to its
    device. A batch is stored in one transaction; ``resume`` and ``clock_state`` are those after
    its last input. A family that acknowledges input by input hands them over one at a time.
    """

    def __call__(
        self,
        inputs: Sequence[ReaderInput],
        resume: str | None,
        clock_state: dict[str, Any] | None,
    ) -> None: ...


class InputDeferred(Exception):
    """Raised inside a family when an input cannot be stamped yet (no time base for the device's
    boot): the family keeps it and offers it again, its device is not told it was delivered."""


class LaneReader(Protocol):
    """One reader family, as the agent sees it. Every method may be called from any thread."""

    family: str
    """The config ``type`` of the family (``lane_controller``, ``llrp``)."""

    health: LinkHealth
    """Whether the agent hears the device now, and why not (``READER_DOWN``)."""

    def start(self) -> None:
        """Open the device and begin delivering inputs to the sink (returns at once)."""

    def close(self) -> None:
        """Stop delivering, close the device, join the family's threads."""

    @property
    def is_running(self) -> bool:
        """False once the family's threads have ended (a bug: the agent restarts)."""

    def set_signal(self, signal: LaneSignal) -> None:
        """Show ``signal`` on the lane signal (kept and re-sent until the device confirms)."""

    def lane_now(self, wall: float, lag_s: float = 0.0) -> float | None:
        """Lane time for a tick at agent clock ``wall``, ``lag_s`` behind the device's clock;
        None while the device's clock is not known (no tick may run)."""

    def to_wall(self, lane: float) -> float:
        """The agent-clock time of lane time ``lane`` (times reported in events)."""

    def from_wall(self, wall: float) -> float:
        """The lane time of agent-clock time ``wall`` (camera frames)."""

    def time_known(self) -> bool:
        """The device was heard since start: lane time runs."""

    def clock_state(self) -> dict[str, Any] | None:
        """The clock's mapping as plain data, for the journal (None before any is known)."""

    def faults(self, wall: float) -> Mapping[str, str]:
        """Active faults of the reader and its clock: code → message."""

    def fault_codes(self) -> tuple[str, ...]:
        """Every fault code :meth:`faults` may raise (the agent clears the others)."""

    def status(self) -> Mapping[str, Any]:
        """The ``reader`` section of the status document."""

    def clock_status(self, wall: float) -> Mapping[str, Any]:
        """The ``controller_clock`` section of the status document (the device's clock)."""
