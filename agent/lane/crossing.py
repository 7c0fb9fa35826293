"""What the correlator hands out: crossings, the cards they carry and set aside, and the
settings and counters of the lane's correlation (the story is in docs/fusion.md)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agent.lane.association import (
    Association,
    AssociationSettings,
    CardEvidence,
    Rule,
)
from agent.lane.events import PlateSeen, VisionFault


class OpenedBy(enum.StrEnum):
    """What opened a crossing."""

    LOOP = "loop"
    TAG = "tag"
    """Cards read strongly at the booth with no vehicle on the loop."""
    EVIDENCE = "evidence"
    """Split from the vehicle before it without a loop edge (the cards changed)."""


class ClosedBy(enum.StrEnum):
    """What closed a crossing."""

    DEPARTURE = "departure"
    IDLE_TIMEOUT = "idle_timeout"
    MAX_DURATION = "max_duration"
    NEXT_ARRIVAL = "next_arrival"
    EVIDENCE_SPLIT = "evidence_split"
    SHUTDOWN = "shutdown"


class LoopAnomaly(enum.StrEnum):
    """Something the presence loop got wrong while a crossing was open (in the event)."""

    CHATTER = "chatter"
    """Clears shorter than the departure confirmation were ignored."""
    MISSING_CLEAR = "missing_clear"
    """The loop never reported this vehicle's departure; the next arrival closed it."""
    STUCK_OCCUPIED = "stuck_occupied"
    """The loop stayed occupied past the longest stay."""
    SPLIT_BY_CARDS = "split_by_cards"
    """Separated from the vehicle before or after it by its cards, not by a loop edge."""


class LoopFault(enum.StrEnum):
    """Loop problems raised on the status topic."""

    STUCK_OCCUPIED = "loop_stuck_occupied"
    EDGE_MISSING = "loop_edge_missing"
    CHATTER = "loop_chatter"


@dataclass(frozen=True, slots=True)
class CorrelationSettings:
    """Lane geometry and timing the correlator needs (validated by the config layer)."""

    presence_loop_id: int = 1
    idle_timeout_s: float = 8.0
    max_open_s: float = 300.0
    straggler_window_s: float = 8.0
    handed_back_after_s: float = 1.5
    handed_back_margin_db: float = 8.0
    infer_after_s: float = 4.0
    min_rssi_dbm: float = -85.0
    plate_preroll_s: float = 2.0
    max_plate_readings: int = 200
    approach_window_s: float = 15.0
    departure_confirm_s: float = 0.2
    min_stay_s: float = 2.0
    short_stay_confirm_s: float = 0.6
    rejoin_window_s: float = 2.0
    tail_max_s: float = 1.5
    split_quiet_s: float = 3.0
    stuck_occupied_s: float = 600.0
    fault_hold_s: float = 600.0
    chatter_fault_count: int = 5
    max_reads_per_card: int = 1000
    association: AssociationSettings = field(default_factory=AssociationSettings)


@dataclass(frozen=True, slots=True)
class CardObservation:
    """A card carried by a crossing: its reads for this vehicle and why it is carried."""

    ref: str
    reads: int
    first_at: float
    last_at: float
    best_rssi_dbm: float
    antennas: tuple[int, ...]
    tid: str | None
    association: Association = Association.ATTACHED
    rule: Rule = Rule.STRONG_AT_BOOTH
    evidence: CardEvidence | None = None


@dataclass(frozen=True, slots=True)
class SetAsideCard:
    """A card read around a crossing that is not this vehicle's (next vehicle, another lane)."""

    ref: str
    association: Association
    rule: Rule
    evidence: CardEvidence


@dataclass(frozen=True, slots=True)
class Crossing:
    """A closed crossing: one vehicle at the booth (or one a loop missed)."""

    opened_at: float
    closed_at: float
    opened_by: OpenedBy
    closed_by: ClosedBy
    vehicle_detected: bool
    cards: tuple[CardObservation, ...]
    """Cards carried by the crossing: attached or uncertain, by first read."""
    plates: tuple[PlateSeen, ...] = ()
    """Plate readings of this vehicle, in arrival order (empty without a camera)."""
    vision_faults: tuple[VisionFault, ...] = ()
    """Camera or plate reader faults in force at any time while the crossing was open."""
    set_aside: tuple[SetAsideCard, ...] = ()
    """Cards read around the stay judged to be the next vehicle's or another lane's."""
    anomalies: tuple[LoopAnomaly, ...] = ()
    provisional: bool = False
    """A snapshot of a crossing still open (:meth:`CrossingCorrelator.current`)."""


@dataclass(slots=True)
class CorrelatorCounters:
    """What the correlator saw and decided (exposed on the status topic)."""

    weak_reads: int = 0
    straggler_reads: int = 0
    other_loop_events: int = 0
    unmatched_clears: int = 0
    out_of_order_events: int = 0
    straggler_plates: int = 0
    late_plates: int = 0
    plates_over_limit: int = 0
    chatter: int = 0
    tails_absorbed: int = 0
    continuations: int = 0
    missing_clears: int = 0
    evidence_splits: int = 0
    stuck_closes: int = 0
    vehicles_without_loop: int = 0
    cards_attached: int = 0
    cards_uncertain: int = 0
    cards_next_vehicle: int = 0
    cards_other_lane: int = 0
