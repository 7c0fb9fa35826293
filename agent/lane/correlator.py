"""Crossing correlation: turn a stream of loop edges and tag reads into one crossing per vehicle.

An inspection lane is a stop point: one vehicle at the booth at a time. A crossing opens when
the presence loop becomes occupied or, when the reader sees a card before the vehicle reaches
the loop, at the first read. It collects de-duplicated cards and closes when the loop clears
(departure), when a tag-only crossing sees no vehicle and no reads for ``idle_timeout_s``, or
after ``max_open_s`` as a safety net against a stuck loop.

A card of the vehicle that just left is often read again while the next vehicle pulls up
(reader fields reach past the booth). Such straggler reads within ``straggler_window_s`` of the
close are dropped rather than attributed to the next vehicle, because a card cannot
physically belong to two consecutive vehicles within seconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.lane.events import LaneInput, LoopChanged, TagRead, Tick


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
        )


@dataclass(slots=True)
class CorrelatorCounters:
    """What the correlator dropped, and why (exposed on the status topic)."""

    weak_reads: int = 0
    straggler_reads: int = 0
    other_loop_events: int = 0
    unmatched_clears: int = 0
    out_of_order_events: int = 0


class CrossingCorrelator:
    """Owns the open crossing; feed it inputs in time order, collect closed crossings."""

    def __init__(self, settings: CorrelationSettings) -> None:
        self.settings = settings
        self.counters = CorrelatorCounters()
        self._open: _OpenCrossing | None = None
        self._recently_closed: dict[str, float] = {}
        self._last_at = float("-inf")

    @property
    def has_open_crossing(self) -> bool:
        """True while a vehicle (or a burst of reads) is being collected."""
        return self._open is not None

    def handle(self, event: LaneInput) -> list[Crossing]:
        """Apply one input; return the crossings it closed (zero, one or two)."""
        at = event.at
        if at < self._last_at:
            # Inputs come from one queue in arrival order; a clock step backwards must not
            # reopen or lengthen anything, so the event is applied at the latest time seen.
            self.counters.out_of_order_events += 1
            at = self._last_at
        self._last_at = at
        closed = self._expire(at)
        match event:
            case TagRead():
                closed.extend(self._on_read(event, at))
            case LoopChanged():
                closed.extend(self._on_loop(event, at))
            case Tick():
                pass
        return closed

    def close_all(self, at: float) -> list[Crossing]:
        """Close whatever is open (clean shutdown): nothing collected is lost."""
        if self._open is None:
            return []
        crossing = self._open.close(max(at, self._open.opened_at), ClosedBy.SHUTDOWN)
        self._open = None
        return [crossing]

    def _expire(self, at: float) -> list[Crossing]:
        window = self.settings.straggler_window_s
        self._recently_closed = {
            ref: closed_at
            for ref, closed_at in self._recently_closed.items()
            if at - closed_at <= window
        }
        current = self._open
        if current is None:
            return []
        if at - current.opened_at >= self.settings.max_open_s:
            return [
                self._close(current.opened_at + self.settings.max_open_s, ClosedBy.MAX_DURATION)
            ]
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
        for card in crossing.cards:
            self._recently_closed[card.ref] = at
        return crossing

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
            current = self._open = _OpenCrossing(
                opened_at=at, opened_by=OpenedBy.TAG, vehicle_detected=False, last_activity_at=at
            )
        current.add_read(read if read.at == at else _retimed(read, at))
        return []

    def _on_loop(self, change: LoopChanged, at: float) -> list[Crossing]:
        if change.loop_id != self.settings.presence_loop_id:
            self.counters.other_loop_events += 1
            return []
        current = self._open
        if change.occupied:
            if current is None:
                self._open = _OpenCrossing(
                    opened_at=at,
                    opened_by=OpenedBy.LOOP,
                    vehicle_detected=True,
                    last_activity_at=at,
                )
                return []
            if not current.vehicle_detected:
                current.vehicle_detected = True
                current.last_activity_at = at
                return []
            # Occupied twice without a clear: the clear was lost, so the first vehicle left.
            closed = self._close(at, ClosedBy.NEXT_ARRIVAL)
            self._open = _OpenCrossing(
                opened_at=at, opened_by=OpenedBy.LOOP, vehicle_detected=True, last_activity_at=at
            )
            return [closed]
        if current is None:
            self.counters.unmatched_clears += 1
            return []
        return [self._close(at, ClosedBy.DEPARTURE)]


def _retimed(read: TagRead, at: float) -> TagRead:
    return TagRead(at=at, epc=read.epc, antenna=read.antenna, rssi_dbm=read.rssi_dbm, tid=read.tid)
