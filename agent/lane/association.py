"""Occupant association: is a card in this vehicle, the next one, another lane, or uncertain?

A UHF reader at a booth reads more than the vehicle at the booth: the car queued behind it, cars
in the neighbouring lanes, the car that just left. No single signal-strength floor separates
them (a card shielded in a wallet reads as weakly as one in the next lane), but how a card is
read over the vehicle's stay does. This module turns a card's reads into :class:`CardEvidence`
(counts, timing against the vehicle's arrival and close, strength, its trend, the antenna
zones) and applies a short list of named rules, in order, to reach an :class:`Association`.
The rule that decided is kept with the evidence, so every decision can be explained in the
crossing event (docs/fusion.md tells the whole story).

The rules, first match wins:

1. ``late_approach`` — first read only late in the stay (after ``settle_s`` and within
   ``late_onset_s`` of the close): rising, or weaker than ``strong_rssi_dbm``, it is the next
   vehicle pulling up behind and goes to the next crossing, never to this one (a short burst
   that fades is a neighbour's: ``other_lane``); strong and steady, it may be a card of this
   vehicle brought out late: ``uncertain``.
2. ``strong_at_booth`` — at least two reads at ``strong_rssi_dbm`` or better on a booth
   antenna, during the stay or just before the arrival: only a card at the booth reads that
   strongly. Unless they span only a moment of a long stay (``brief_at_booth``: a card in
   the vehicle all that time would have been read all along): ``uncertain``.
3. ``steady_presence`` — read all through the stay (``steady_spread`` of it), however weakly,
   and not rising: a shielded card.
4. ``read_on_approach_only`` — never read at the booth: another lane's, unless it was read
   strongly right up to the arrival (then ``uncertain``).
5. ``short_weak_burst`` — a few weak reads within ``burst_max_s``: a neighbouring lane.
6. ``weaker_than_peers`` — ``peer_gap_db`` weaker than the strongest attached card of the same
   vehicle and not steady: a neighbouring lane.
7. ``single_read`` / ``inconclusive`` — anything else: ``uncertain``.

``attached`` cards are matched and may earn an EXPEDITE; ``uncertain`` cards are matched and
shown but make the crossing a REFER (policy); ``next_vehicle`` and ``other_lane`` cards are
listed apart and never matched as this vehicle's.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


class AntennaZone(enum.StrEnum):
    """Where an antenna looks (config ``lane.antennas``)."""

    BOOTH = "booth"
    """At the stop point: reads the vehicle at the booth best."""
    APPROACH = "approach"
    """Up the lane: reads the queue; strength there says nothing about being at the booth."""
    EXIT = "exit"
    """Past the booth: reads vehicles leaving."""


class Association(enum.StrEnum):
    """Where a card is judged to be."""

    ATTACHED = "attached"
    UNCERTAIN = "uncertain"
    NEXT_VEHICLE = "next_vehicle"
    OTHER_LANE = "other_lane"

    @property
    def carried(self) -> bool:
        """Carried by this vehicle's crossing (matched against the cache)."""
        return self in (Association.ATTACHED, Association.UNCERTAIN)


class Rule(enum.StrEnum):
    """The rule that decided a card's association (in the event, for the officer and central)."""

    STRONG_AT_BOOTH = "strong_at_booth"
    STEADY_PRESENCE = "steady_presence"
    READ_ON_APPROACH_ONLY = "read_on_approach_only"
    LATE_APPROACH = "late_approach"
    SHORT_WEAK_BURST = "short_weak_burst"
    WEAKER_THAN_PEERS = "weaker_than_peers"
    BRIEF_AT_BOOTH = "brief_at_booth"
    NOT_TOGETHER = "not_together"
    """Never read at the same time as another attached card of the crossing (the correlator's
    check across cards): two vehicles the loop could not tell apart."""
    SINGLE_READ = "single_read"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class AssociationSettings:
    """Thresholds of the association rules (config ``lane.association``; defaults measured with
    ``bench/bench_fusion.py``, see docs/fusion.md)."""

    strong_rssi_dbm: float = -65.0
    steady_min_reads: int = 4
    steady_spread: float = 0.5
    settle_s: float = 1.5
    late_onset_s: float = 6.0
    rising_db: float = 4.0
    weak_margin_db: float = 6.0
    """A late card weaker than ``strong_rssi_dbm`` by this much counts as weak."""
    burst_max_s: float = 2.5
    peer_gap_db: float = 15.0
    approach_gap_s: float = 3.0
    """A card read only before the arrival counts as read up to it if it was read this close."""
    brief_max_s: float = 5.0
    """Strong reads spanning less than this (and a quarter of the stay) are only a moment."""
    antenna_zones: tuple[tuple[int, AntennaZone], ...] = ()
    """Antenna → zone; an antenna not listed is a booth antenna."""

    def zone(self, antenna: int) -> AntennaZone:
        return _zone_map(self.antenna_zones).get(antenna, AntennaZone.BOOTH)


def _zone_map(pairs: tuple[tuple[int, AntennaZone], ...]) -> Mapping[int, AntennaZone]:
    return dict(pairs)


@dataclass(frozen=True, slots=True)
class Read:
    """One read of a card, in lane time."""

    at: float
    rssi_dbm: float
    antenna: int


@dataclass(frozen=True, slots=True)
class Stay:
    """The vehicle a card is judged against: when it arrived (or its crossing opened) and when
    its crossing closes (or now, for a provisional judgement)."""

    start: float
    end: float


@dataclass(frozen=True, slots=True)
class CardEvidence:
    """What the reads of one card say about one vehicle's stay (all times in lane seconds)."""

    reads: int
    """Reads counted for this vehicle (approach and stay)."""
    reads_at_booth: int
    """Reads during the stay."""
    first_at: float
    last_at: float
    onset_s: float
    """First read relative to the stay's start: negative when read on the approach."""
    end_gap_s: float
    """From the last read to the stay's end."""
    spread: float
    """Share of the stay's tenths in which the card was read (0..1)."""
    peak_rssi_dbm: float
    """Strongest read on a booth antenna during the stay or up to ``approach_gap_s`` before it,
    or of any read if there is none such."""
    strong_reads: int
    """Reads at ``strong_rssi_dbm`` or better on a booth antenna, during the stay or up to
    ``approach_gap_s`` before it (the vehicle rolling in)."""
    median_rssi_dbm: float
    rise_db: float
    """Median of the last third of the reads minus the median of the first third."""
    zones: tuple[AntennaZone, ...]
    antennas: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class CardJudgement:
    """A card's association with the rule that decided and the evidence it looked at."""

    association: Association
    rule: Rule
    evidence: CardEvidence


def evidence_of(reads: Sequence[Read], stay: Stay, settings: AssociationSettings) -> CardEvidence:
    """Summarise ``reads`` (oldest first, already limited to this vehicle) against ``stay``."""
    if not reads:
        raise ValueError("a card with no reads has no evidence")
    zones = {read.antenna: settings.zone(read.antenna) for read in reads}
    at_booth = [read for read in reads if read.at >= stay.start]
    near = stay.start - settings.approach_gap_s
    booth_reads = [
        read
        for read in reads
        if zones[read.antenna] is not AntennaZone.APPROACH and read.at >= near
    ]
    strength_reads = booth_reads or list(reads)
    length = max(stay.end - stay.start, 1e-9)
    tenths = {min(9, int((read.at - stay.start) / length * 10)) for read in at_booth}
    third = max(1, len(reads) // 3)
    rise = statistics.median(r.rssi_dbm for r in reads[-third:]) - statistics.median(
        r.rssi_dbm for r in reads[:third]
    )  # with two reads: the second minus the first
    return CardEvidence(
        reads=len(reads),
        reads_at_booth=len(at_booth),
        first_at=reads[0].at,
        last_at=reads[-1].at,
        onset_s=reads[0].at - stay.start,
        end_gap_s=stay.end - reads[-1].at,
        spread=len(tenths) / 10,
        peak_rssi_dbm=max(read.rssi_dbm for read in strength_reads),
        strong_reads=sum(1 for r in booth_reads if r.rssi_dbm >= settings.strong_rssi_dbm),
        median_rssi_dbm=statistics.median(read.rssi_dbm for read in reads),
        rise_db=rise if len(reads) >= 2 else 0.0,
        zones=tuple(sorted(set(zones.values()))),
        antennas=tuple(sorted(zones)),
    )


def judge(
    evidence: CardEvidence,
    stay: Stay,
    settings: AssociationSettings,
    *,
    peer_peak_dbm: float | None = None,
) -> CardJudgement:
    """Apply the rules of the module docstring, in order.

    ``peer_peak_dbm`` is the strongest booth read of the cards of the same vehicle that are
    attached by strength (None: none), for ``weaker_than_peers``.
    """
    ev = evidence
    rising = ev.rise_db >= settings.rising_db
    late = (
        ev.onset_s > settings.settle_s
        and stay.end - ev.first_at <= settings.late_onset_s
        and ev.reads_at_booth == ev.reads
    )
    strong = ev.strong_reads >= 2 and ev.reads_at_booth > 0
    weak = ev.peak_rssi_dbm < settings.strong_rssi_dbm - settings.weak_margin_db

    def verdict(association: Association, rule: Rule) -> CardJudgement:
        return CardJudgement(association, rule, evidence)

    if late:
        # First read only at the end of the stay: the next vehicle pulling up behind (rising or
        # not strong), or a neighbour's short burst; strong and steady, perhaps a card of this
        # vehicle brought out late. Never attached.
        if rising:
            return verdict(Association.NEXT_VEHICLE, Rule.LATE_APPROACH)
        if ev.peak_rssi_dbm < settings.strong_rssi_dbm:
            if (
                ev.rise_db <= -settings.rising_db
                and ev.last_at - ev.first_at <= settings.burst_max_s
            ):
                return verdict(Association.OTHER_LANE, Rule.SHORT_WEAK_BURST)
            return verdict(Association.NEXT_VEHICLE, Rule.LATE_APPROACH)
        return verdict(Association.UNCERTAIN, Rule.LATE_APPROACH)
    if strong:
        if _brief(ev, stay, settings):
            # Read strongly, but only for a moment of a long stay while the reader kept
            # reading: a neighbour's card swinging into the beam, or a card of this vehicle
            # held badly. Shown, never trusted.
            return verdict(Association.UNCERTAIN, Rule.BRIEF_AT_BOOTH)
        return verdict(Association.ATTACHED, Rule.STRONG_AT_BOOTH)
    steady = (
        ev.reads_at_booth >= settings.steady_min_reads
        and ev.spread >= settings.steady_spread
        and not rising
    )
    if steady:
        return verdict(Association.ATTACHED, Rule.STEADY_PRESENCE)
    if ev.reads_at_booth == 0:
        if (
            ev.peak_rssi_dbm >= settings.strong_rssi_dbm
            and -ev.onset_s >= 0
            and (stay.start - ev.last_at <= settings.approach_gap_s)
        ):
            return verdict(Association.UNCERTAIN, Rule.READ_ON_APPROACH_ONLY)
        return verdict(Association.OTHER_LANE, Rule.READ_ON_APPROACH_ONLY)
    if ev.last_at - ev.first_at <= settings.burst_max_s and ev.peak_rssi_dbm < (
        settings.strong_rssi_dbm
    ):
        if ev.reads == 1 and not weak:
            return verdict(Association.UNCERTAIN, Rule.SINGLE_READ)
        return verdict(Association.OTHER_LANE, Rule.SHORT_WEAK_BURST)
    if peer_peak_dbm is not None and peer_peak_dbm - ev.peak_rssi_dbm >= settings.peer_gap_db:
        return verdict(Association.OTHER_LANE, Rule.WEAKER_THAN_PEERS)
    if ev.reads == 1:
        return verdict(Association.UNCERTAIN, Rule.SINGLE_READ)
    return verdict(Association.UNCERTAIN, Rule.INCONCLUSIVE)


def _brief(evidence: CardEvidence, stay: Stay, settings: AssociationSettings) -> bool:
    """Read over less than a quarter of a stay at least three bursts long (and never for more
    than ``brief_max_s``): a card at the booth all that time would have been read all along."""
    length = stay.end - stay.start
    span = evidence.last_at - max(evidence.first_at, stay.start - settings.approach_gap_s)
    return length >= 3 * settings.burst_max_s and span < min(0.25 * length, settings.brief_max_s)


def judge_all(
    reads_by_card: Mapping[str, Sequence[Read]], stay: Stay, settings: AssociationSettings
) -> dict[str, CardJudgement]:
    """Judge every card of one vehicle: strength first, so peers can be compared."""
    evidence = {
        ref: evidence_of(reads, stay, settings) for ref, reads in reads_by_card.items() if reads
    }
    first_pass = {ref: judge(ev, stay, settings) for ref, ev in evidence.items()}
    strong_peaks = [
        j.evidence.peak_rssi_dbm for j in first_pass.values() if j.rule is Rule.STRONG_AT_BOOTH
    ]
    if not strong_peaks:
        return first_pass
    peak = max(strong_peaks)
    return {ref: judge(ev, stay, settings, peer_peak_dbm=peak) for ref, ev in evidence.items()}


@dataclass(slots=True)
class JudgementTally:
    """How many cards each rule decided (status topic, bench)."""

    by_rule: dict[str, int] = field(default_factory=dict)

    def add(self, judgements: Iterable[CardJudgement]) -> None:
        for judgement in judgements:
            key = f"{judgement.association.value}:{judgement.rule.value}"
            self.by_rule[key] = self.by_rule.get(key, 0) + 1
