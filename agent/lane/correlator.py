"""Crossing correlation: turn a stream of loop edges and tag reads into one crossing per vehicle.

An inspection lane is a stop point: one vehicle at the booth at a time. A crossing opens when
the presence loop becomes occupied or, when the reader sees a card before the vehicle reaches
the loop, at the first read. It collects de-duplicated cards and closes when the loop clears
(departure), when a tag-only crossing sees no vehicle and no reads for ``idle_timeout_s``, or
after ``max_open_s`` as a safety net against a stuck loop.

Plate readings carry the time their frame was captured, not the time inference finished, so a
reading that arrives late still goes where its frame belongs: to the open crossing, or, when it
was captured up to ``plate_preroll_s`` before the crossing opened (the camera sees the plate
before the vehicle reaches the loop), to the next one. A reading of a frame captured before the
last crossing closed arrives too late for it and is dropped (counted); so is a reading of the
plate of the vehicle that just left, within ``straggler_window_s``, like a straggler card read.

A card of the vehicle that just left is often read again while the next vehicle pulls up
(reader fields reach past the booth). Such straggler reads within ``straggler_window_s`` of the
close are dropped rather than attributed to the next vehicle, because a card cannot
physically belong to two consecutive vehicles within seconds.

A restart of the agent is not idle time: :class:`~agent.lane.events.Resumed` tells the
correlator when the agent is running again, and the time since its last input is taken out of
every timer (the idle timeout and the longest stay of the open crossing, the straggler window of
the crossings closed just before). The times a crossing reports are never shifted: only the
deadlines move. When the controller restarted too (``Resumed.excise`` False) it lost what it
had not delivered, so nothing is excised: the downtime is a plain advance of time.

The correlator's state can be exported as plain JSON-compatible data and restored
(:meth:`CrossingCorrelator.export_state`, :meth:`CrossingCorrelator.restore`): the agent's input
journal stores it with each committed crossing and, after a crash, replays the journalled inputs
on top of it. Because the correlator reads no clock, a replay of the same inputs with the same
times closes the same crossings, which :attr:`CrossingCorrelator.closed_count` numbers.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.lane.events import (
    LaneInput,
    LoopChanged,
    PlateSeen,
    Resumed,
    TagRead,
    VisionChanged,
    VisionFault,
)
from agent.lane.plates import fold_lookalikes


class OpenedBy(enum.StrEnum):
    """What opened a crossing."""

    LOOP = "loop"
    TAG = "tag"


class ClosedBy(enum.StrEnum):
    """What closed a crossing."""

    DEPARTURE = "departure"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    NEXT_ARRIVAL = "next_arrival"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class CorrelationSettings:
    """Lane geometry and timing the correlator needs (validated by the config layer)."""

    presence_loop_id: int = 1
    idle_timeout_s: float = 8.0
    max_open_s: float = 300.0
    straggler_window_s: float = 3.0
    min_rssi_dbm: float = -85.0
    plate_preroll_s: float = 2.0
    max_plate_readings: int = 200


@dataclass(frozen=True, slots=True)
class CardObservation:
    """Everything seen of one card during one crossing."""

    ref: str
    reads: int
    first_at: float
    last_at: float
    best_rssi_dbm: float
    antennas: tuple[int, ...]
    tid: str | None


@dataclass(frozen=True, slots=True)
class Crossing:
    """A closed crossing: one vehicle (or one burst of reads with no vehicle) at the booth."""

    opened_at: float
    closed_at: float
    opened_by: OpenedBy
    closed_by: ClosedBy
    vehicle_detected: bool
    cards: tuple[CardObservation, ...]
    plates: tuple[PlateSeen, ...] = ()
    """Plate readings of this vehicle, in arrival order (empty without a camera)."""
    vision_faults: tuple[VisionFault, ...] = ()
    """Camera or plate reader faults in force at any time while the crossing was open."""


@dataclass(slots=True)
class _CardAccumulator:
    ref: str
    reads: int
    first_at: float
    last_at: float
    best_rssi_dbm: float
    antennas: set[int]
    tid: str | None

    def freeze(self) -> CardObservation:
        return CardObservation(
            ref=self.ref,
            reads=self.reads,
            first_at=self.first_at,
            last_at=self.last_at,
            best_rssi_dbm=self.best_rssi_dbm,
            antennas=tuple(sorted(self.antennas)),
            tid=self.tid,
        )


@dataclass(slots=True)
class _OpenCrossing:
    opened_at: float
    opened_by: OpenedBy
    vehicle_detected: bool
    last_activity_at: float
    cards: dict[str, _CardAccumulator] = field(default_factory=dict)
    plates: list[PlateSeen] = field(default_factory=list)
    vision_faults: set[VisionFault] = field(default_factory=set)
    paused_s: float = 0.0
    """Agent downtime while this crossing was open: it does not count against ``max_open_s``."""

    def add_read(self, read: TagRead) -> None:
        self.last_activity_at = read.at
        card = self.cards.get(read.epc)
        if card is None:
            self.cards[read.epc] = _CardAccumulator(
                ref=read.epc,
                reads=1,
                first_at=read.at,
                last_at=read.at,
                best_rssi_dbm=read.rssi_dbm,
                antennas={read.antenna},
                tid=read.tid,
            )
            return
        card.reads += 1
        card.last_at = read.at
        card.best_rssi_dbm = max(card.best_rssi_dbm, read.rssi_dbm)
        card.antennas.add(read.antenna)
        if card.tid is None:
            card.tid = read.tid

    def close(self, at: float, closed_by: ClosedBy) -> Crossing:
        return Crossing(
            opened_at=self.opened_at,
            closed_at=at,
            opened_by=self.opened_by,
            closed_by=closed_by,
            vehicle_detected=self.vehicle_detected,
            cards=tuple(c.freeze() for c in sorted(self.cards.values(), key=lambda c: c.first_at)),
            plates=tuple(self.plates),
            vision_faults=tuple(sorted(self.vision_faults)),
        )


@dataclass(slots=True)
class CorrelatorCounters:
    """What the correlator dropped, and why (exposed on the status topic)."""

    weak_reads: int = 0
    straggler_reads: int = 0
    other_loop_events: int = 0
    unmatched_clears: int = 0
    out_of_order_events: int = 0
    straggler_plates: int = 0
    late_plates: int = 0
    plates_over_limit: int = 0


class CrossingCorrelator:
    """Owns the open crossing; feed it inputs in time order, collect closed crossings."""

    def __init__(self, settings: CorrelationSettings) -> None:
        self.settings = settings
        self.counters = CorrelatorCounters()
        self._open: _OpenCrossing | None = None
        self._recently_closed: dict[str, float] = {}
        self._last_at = float("-inf")
        self._vision_fault: VisionFault | None = None
        self._plate_preroll: deque[PlateSeen] = deque()
        self._recently_closed_plates: dict[str, float] = {}
        self._last_closed_at = float("-inf")
        self._closed_count = 0

    @property
    def has_open_crossing(self) -> bool:
        """True while a vehicle (or a burst of reads) is being collected."""
        return self._open is not None

    @property
    def last_at(self) -> float | None:
        """The latest time of an input applied (None before the first)."""
        return _finite_or_none(self._last_at)

    @property
    def closed_count(self) -> int:
        """Crossings closed so far, counting those before the state was restored.

        The n-th crossing closed is crossing number n: a replay from a restored state numbers
        the crossings it closes the same way the original run did.
        """
        return self._closed_count

    def export_state(self) -> dict[str, Any]:
        """What shapes how later inputs are correlated, as plain JSON-compatible data.

        Plate readings waiting for a crossing and those of the open crossing are left out: their
        crops are large and plate readings are not journalled, so a restored correlator
        continues without them. Counters are per run and left out too.
        """
        current = self._open
        return {
            "version": _STATE_VERSION,
            "closed_count": self._closed_count,
            "last_at": _finite_or_none(self._last_at),
            "last_closed_at": _finite_or_none(self._last_closed_at),
            "recently_closed": dict(self._recently_closed),
            "recently_closed_plates": dict(self._recently_closed_plates),
            "vision_fault": None if self._vision_fault is None else self._vision_fault.value,
            "open": None
            if current is None
            else {
                "opened_at": current.opened_at,
                "paused_s": current.paused_s,
                "opened_by": current.opened_by.value,
                "vehicle_detected": current.vehicle_detected,
                "last_activity_at": current.last_activity_at,
                "vision_faults": sorted(fault.value for fault in current.vision_faults),
                "cards": [
                    {
                        "ref": card.ref,
                        "reads": card.reads,
                        "first_at": card.first_at,
                        "last_at": card.last_at,
                        "best_rssi_dbm": card.best_rssi_dbm,
                        "antennas": sorted(card.antennas),
                        "tid": card.tid,
                    }
                    for card in current.cards.values()
                ],
            },
        }

    @classmethod
    def restore(cls, settings: CorrelationSettings, state: Mapping[str, Any]) -> CrossingCorrelator:
        """A correlator in the state :meth:`export_state` described.

        Raises ``ValueError`` for a state of another version or of the wrong shape.
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"correlator state is not an object: {type(state).__name__}")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"correlator state version {state.get('version')!r} is not supported")
        correlator = cls(settings)
        try:
            correlator._closed_count = int(state["closed_count"])
            correlator._last_at = _float_or_minus_inf(state["last_at"])
            correlator._last_closed_at = _float_or_minus_inf(state["last_closed_at"])
            correlator._recently_closed = {
                str(ref): float(at) for ref, at in state["recently_closed"].items()
            }
            correlator._recently_closed_plates = {
                str(text): float(at) for text, at in state["recently_closed_plates"].items()
            }
            fault = state["vision_fault"]
            correlator._vision_fault = None if fault is None else VisionFault(fault)
            current = state["open"]
            if current is not None:
                opened = _OpenCrossing(
                    opened_at=float(current["opened_at"]),
                    opened_by=OpenedBy(current["opened_by"]),
                    vehicle_detected=bool(current["vehicle_detected"]),
                    last_activity_at=float(current["last_activity_at"]),
                    vision_faults={VisionFault(f) for f in current["vision_faults"]},
                    # Absent in states written before restarts were excised: nothing paused.
                    paused_s=float(current.get("paused_s", 0.0)),
                )
                for card in current["cards"]:
                    opened.cards[str(card["ref"])] = _CardAccumulator(
                        ref=str(card["ref"]),
                        reads=int(card["reads"]),
                        first_at=float(card["first_at"]),
                        last_at=float(card["last_at"]),
                        best_rssi_dbm=float(card["best_rssi_dbm"]),
                        antennas={int(a) for a in card["antennas"]},
                        tid=None if card["tid"] is None else str(card["tid"]),
                    )
                correlator._open = opened
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"correlator state is malformed: {error!r}") from error
        return correlator

    def handle(self, event: LaneInput) -> list[Crossing]:
        """Apply one input; return the crossings it closed (zero, one or two)."""
        if isinstance(event, PlateSeen):
            # Stamped with its frame's capture time, which inference makes late by design: it
            # neither moves the clock nor counts as out of order.
            self._on_plate(event)
            return []
        if isinstance(event, Resumed) and event.excise:
            self._resume(event.at)
            return []
        at = event.at
        if at < self._last_at:
            # Inputs come from one queue in arrival order; a clock step backwards must not
            # reopen or lengthen anything, so the event is applied at the latest time seen.
            self.counters.out_of_order_events += 1
            at = self._last_at
        self._last_at = at
        # Expiry is the whole effect of a Tick, and of a Resumed that excises nothing: both
        # only advance time.
        closed = self._expire(at)
        match event:
            case TagRead():
                closed.extend(self._on_read(event, at))
            case LoopChanged():
                closed.extend(self._on_loop(event, at))
            case VisionChanged():
                self._vision_fault = event.fault
                if self._open is not None and event.fault is not None:
                    self._open.vision_faults.add(event.fault)
        return closed

    def close_all(self, at: float) -> list[Crossing]:
        """Close whatever is open (clean shutdown): nothing collected is lost.

        Its cards and plates count as just departed, like those of any close: the checkpoint
        keeps them, so the vehicle's reads right after the next start are stragglers, not a
        second crossing.
        """
        if self._open is None:
            return []
        return [self._close(max(at, self._open.opened_at), ClosedBy.SHUTDOWN)]

    def _resume(self, at: float) -> None:
        """Take the downtime from the last input to ``at`` out of every timer.

        The recorded times (opened, read, closed) stay as they were; only the anchors of the
        deadlines move. Nothing expires here: at the last input nothing was due, and after the
        shift the same time remains.
        """
        gap = at - self._last_at
        if not gap > 0 or gap == float("inf"):
            return  # a clock step back, or a correlator that never saw an input
        self._last_at = at
        self._recently_closed = {ref: when + gap for ref, when in self._recently_closed.items()}
        self._recently_closed_plates = {
            text: when + gap for text, when in self._recently_closed_plates.items()
        }
        current = self._open
        if current is not None:
            current.last_activity_at += gap
            current.paused_s += gap

    def _expire(self, at: float) -> list[Crossing]:
        window = self.settings.straggler_window_s
        self._recently_closed = {
            ref: closed_at
            for ref, closed_at in self._recently_closed.items()
            if at - closed_at <= window
        }
        self._recently_closed_plates = {
            text: closed_at
            for text, closed_at in self._recently_closed_plates.items()
            if at - closed_at <= window
        }
        preroll = self.settings.plate_preroll_s
        while self._plate_preroll and at - self._plate_preroll[0].at > preroll:
            self._plate_preroll.popleft()
        current = self._open
        if current is None:
            return []
        if at - current.paused_s - current.opened_at >= self.settings.max_open_s:
            deadline = current.opened_at + current.paused_s + self.settings.max_open_s
            return [self._close(deadline, ClosedBy.MAX_DURATION)]
        if (
            not current.vehicle_detected
            and at - current.last_activity_at >= self.settings.idle_timeout_s
        ):
            return [
                self._close(
                    current.last_activity_at + self.settings.idle_timeout_s, ClosedBy.IDLE_TIMEOUT
                )
            ]
        return []

    def _close(self, at: float, closed_by: ClosedBy) -> Crossing:
        assert self._open is not None
        crossing = self._open.close(at, closed_by)
        self._open = None
        self._last_closed_at = at
        self._closed_count += 1
        for card in crossing.cards:
            self._recently_closed[card.ref] = at
        for plate in crossing.plates:
            self._recently_closed_plates[fold_lookalikes(plate.text)] = at
        return crossing

    def _begin(self, at: float, opened_by: OpenedBy, vehicle_detected: bool) -> _OpenCrossing:
        """Open a crossing, taking the plate readings of the moments before it opened."""
        opened = self._open = _OpenCrossing(
            opened_at=at,
            opened_by=opened_by,
            vehicle_detected=vehicle_detected,
            last_activity_at=at,
        )
        if self._vision_fault is not None:
            opened.vision_faults.add(self._vision_fault)
        earliest = at - self.settings.plate_preroll_s
        opened.plates.extend(p for p in self._plate_preroll if p.at >= earliest)
        self._plate_preroll.clear()
        return opened

    def _on_plate(self, seen: PlateSeen) -> None:
        current = self._open
        earliest = self._last_closed_at
        if current is not None:
            earliest = max(earliest, current.opened_at - self.settings.plate_preroll_s)
        if seen.at < earliest:
            self.counters.late_plates += 1  # its frame belongs to a crossing already decided
            return
        left_at = self._recently_closed_plates.get(fold_lookalikes(seen.text))
        if left_at is not None and seen.at - left_at <= self.settings.straggler_window_s:
            # Still in view after it left, even if the next vehicle's crossing has opened.
            self.counters.straggler_plates += 1
            return
        if current is None:
            self._plate_preroll.append(seen)
            while len(self._plate_preroll) > self.settings.max_plate_readings:
                self._plate_preroll.popleft()
            return
        if len(current.plates) >= self.settings.max_plate_readings:
            # A vehicle parked in view for minutes: keep the most confident readings.
            weakest = min(range(len(current.plates)), key=lambda i: current.plates[i].confidence)
            self.counters.plates_over_limit += 1
            if current.plates[weakest].confidence >= seen.confidence:
                return
            del current.plates[weakest]
        current.plates.append(seen)

    def _on_read(self, read: TagRead, at: float) -> list[Crossing]:
        if read.rssi_dbm < self.settings.min_rssi_dbm:
            self.counters.weak_reads += 1
            return []
        current = self._open
        already_in_current = current is not None and read.epc in current.cards
        if not already_in_current and read.epc in self._recently_closed:
            self.counters.straggler_reads += 1
            return []
        if current is None:
            current = self._begin(at, OpenedBy.TAG, vehicle_detected=False)
        current.add_read(read if read.at == at else _retimed(read, at))
        return []

    def _on_loop(self, change: LoopChanged, at: float) -> list[Crossing]:
        if change.loop_id != self.settings.presence_loop_id:
            self.counters.other_loop_events += 1
            return []
        current = self._open
        if change.occupied:
            if current is None:
                self._begin(at, OpenedBy.LOOP, vehicle_detected=True)
                return []
            if not current.vehicle_detected:
                current.vehicle_detected = True
                current.last_activity_at = at
                return []
            # Occupied twice without a clear: the clear was lost, so the first vehicle left.
            closed = self._close(at, ClosedBy.NEXT_ARRIVAL)
            self._begin(at, OpenedBy.LOOP, vehicle_detected=True)
            return [closed]
        if current is None:
            self.counters.unmatched_clears += 1
            return []
        return [self._close(at, ClosedBy.DEPARTURE)]


_STATE_VERSION = 1


def _finite_or_none(value: float) -> float | None:
    return None if value == float("-inf") else value


def _float_or_minus_inf(value: object) -> float:
    if value is None:
        return float("-inf")
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"expected a number or null, got {value!r}")


def _retimed(read: TagRead, at: float) -> TagRead:
    return TagRead(at=at, epc=read.epc, antenna=read.antenna, rssi_dbm=read.rssi_dbm, tid=read.tid)
