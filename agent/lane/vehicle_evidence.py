"""What the cards say about vehicles when the loop cannot: the correlator's questions to the
card tracks, as plain functions (docs/fusion.md, section 3).

* Did the vehicle at the booth change while the loop stayed occupied? (:func:`find_split`)
* Is a vehicle at the booth that the loop never saw? (:func:`unseen_vehicle`)
* Did the vehicle that just departed really leave? (:func:`never_left`, :func:`lingers`,
  :func:`departed_seen`, :func:`new_card_in_tail`)
* Can these cards all be in one vehicle? (:func:`not_together`)
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from agent.lane.association import (
    AntennaZone,
    Association,
    AssociationSettings,
    CardJudgement,
    Read,
    Rule,
    Stay,
    judge_all,
)
from agent.lane.crossing import CorrelationSettings
from agent.lane.lane_state import Departed, Segment, Tail
from agent.lane.tracks import CardTracks


@dataclass(frozen=True, slots=True)
class Split:
    """Where the vehicle at the booth changed, by its cards."""

    at: float
    """Half-way between the last read of the vehicle that left and the first of the next."""
    arrived_at: float
    """When the next vehicle's cards were first read at the booth."""
    newcomers: frozenset[str]


def find_split(
    tracks: CardTracks, segment: Segment, at: float, settings: CorrelationSettings
) -> Split | None:
    """The vehicle changed when every card attached to it has been silent for
    ``split_quiet_s`` (or three of its usual read intervals) and a card that was not there
    before is read at booth strength — as strongly as ``strong_rssi_dbm``, or as the cards of
    the vehicle that was there — or on and on, however weakly, since."""
    assoc = settings.association
    quiet_since = at - settings.split_quiet_s
    if quiet_since <= segment.start + assoc.settle_s:
        return None
    arrival = segment.arrived_at
    before = tracks.eligible_by_card(
        segment.start - settings.approach_window_s, quiet_since, arrival
    )
    if not before:
        return None
    established = {
        ref
        for ref, judgement in judge_all(before, Stay(segment.start, quiet_since), assoc).items()
        if judgement.association is Association.ATTACHED
    }
    if not established:
        return None
    last_established = max(before[ref][-1].at for ref in established)
    gaps = [
        later.at - earlier.at
        for ref in established
        for earlier, later in zip(before[ref], before[ref][1:], strict=False)
    ]
    if gaps and at - last_established < 3 * statistics.median(gaps):
        return None  # sparse reads: a pause is no departure
    if last_established > quiet_since or any(
        tracks.eligible(ref, quiet_since, at, arrival) for ref in established
    ):
        return None  # the vehicle at the booth is still being read
    booth_level = min(
        assoc.strong_rssi_dbm,
        max(statistics.median(r.rssi_dbm for r in before[ref]) for ref in established)
        - assoc.weak_margin_db,
    )
    first_strong: float | None = None
    newcomers: set[str] = set()
    for ref, reads in tracks.eligible_by_card(last_established, at, arrival).items():
        if ref in established:
            continue
        seen = [r for r in before.get(ref, []) if r.at <= last_established]
        if seen and (
            seen[0].at < segment.start + assoc.settle_s
            or max(r.rssi_dbm for r in seen) >= booth_level
        ):
            continue  # read with this vehicle from the start, or strongly before: its own
        strong = [
            r.at
            for r in reads
            if r.rssi_dbm >= booth_level and assoc.zone(r.antenna) is AntennaZone.BOOTH
        ]
        if len(strong) < 2 and (
            len(reads) >= assoc.steady_min_reads
            and reads[-1].at - reads[0].at >= settings.split_quiet_s
        ):
            strong = [r.at for r in reads]  # read on and on since the vehicle before fell silent
        if len(strong) >= 2:
            newcomers.add(ref)
            if first_strong is None or strong[0] < first_strong:
                first_strong = strong[0]
    if first_strong is None:
        return None
    return Split((last_established + first_strong) / 2, first_strong, frozenset(newcomers))


def unseen_vehicle(
    tracks: CardTracks, at: float, settings: CorrelationSettings
) -> dict[str, float]:
    """Cards read strongly at the booth in the approach window over at least ``infer_after_s``
    (a vehicle the loop will see is on it by then; a neighbour's burst is over sooner), with
    the time each was first read so; stragglers and spent reads left out."""
    assoc = settings.association
    anchors: dict[str, float] = {}
    for ref, reads in tracks.eligible_by_card(at - settings.approach_window_s, at).items():
        strong = [
            r.at
            for r in reads
            if r.rssi_dbm >= assoc.strong_rssi_dbm and assoc.zone(r.antenna) is AntennaZone.BOOTH
        ]
        if len(strong) >= 2 and strong[-1] - strong[0] >= settings.infer_after_s:
            anchors[ref] = strong[0]
    return anchors


def lingers(tracks: CardTracks, departed: Departed, at: float, assoc: AssociationSettings) -> bool:
    """A departed card is still read at the booth as strongly as during its stay, steadily
    (three reads over 1.5 s or more, the last within a second), from a second after the
    departure: the vehicle stopped just past the loop. Stragglers fade and stop."""
    for ref, level in departed.levels.items():
        reads = [
            r
            for r in tracks.raw(ref, departed.at + 1.0, at)
            if r.rssi_dbm >= level - assoc.weak_margin_db
        ]
        if len(reads) >= 3 and reads[-1].at - reads[0].at >= 1.5 and at - reads[-1].at <= 1.0:
            return True
    return False


def never_left(tracks: CardTracks, departed: Departed, until: float, margin_db: float) -> bool:
    """A departed card was read from its departure to ``until`` without a dip: every read
    within ``margin_db`` of its strength during the stay, at least one after the departure."""
    for ref, level in departed.levels.items():
        reads = tracks.raw(ref, departed.at, until)
        if reads and all(read.rssi_dbm >= level - margin_db for read in reads):
            return True
    return False


def departed_seen(
    tracks: CardTracks, departed: Departed, since: float, until: float, margin_db: float
) -> bool | None:
    """True: a departed card read at its stay's strength (within ``margin_db``) in
    ``[since, until]``; False: read, but only weaker; None: not read at all."""
    seen: bool | None = None
    for ref, level in departed.levels.items():
        for read in tracks.raw(ref, since, until):
            if read.rssi_dbm >= level - margin_db:
                return True
            seen = False
    return seen


def new_card_in_tail(tracks: CardTracks, tail: Tail, at: float, assoc: AssociationSettings) -> bool:
    """A card the departed vehicle did not carry was read in the re-occupation, not weakly
    (the queue behind or the next lane read faintly)."""
    floor = assoc.strong_rssi_dbm - assoc.weak_margin_db
    for ref, reads in tracks.eligible_by_card(tail.started_at, at, tail.started_at).items():
        if ref not in tail.departed.levels and any(r.rssi_dbm >= floor for r in reads):
            return True
    return False


def new_at_booth(ref: str, read: Read, departed: Departed, assoc: AssociationSettings) -> bool:
    """A card the departed vehicle did not carry, read strongly at the booth."""
    return (
        ref not in departed.levels
        and read.rssi_dbm >= assoc.strong_rssi_dbm
        and assoc.zone(read.antenna) is AntennaZone.BOOTH
    )


def not_together(
    judgements: dict[str, CardJudgement], reads: Mapping[str, list[Read]], quiet_s: float
) -> dict[str, CardJudgement]:
    """Attached cards that were never read at the same time (one fell silent for good more than
    ``quiet_s`` before the other was first read) cannot both be in one vehicle: two vehicles the
    loop and the cards could not tell apart. Both become uncertain, so such a crossing is never
    expedited."""
    attached = [ref for ref, j in judgements.items() if j.association is Association.ATTACHED]
    apart: set[str] = set()
    for index, first in enumerate(attached):
        for second in attached[index + 1 :]:
            a, b = reads[first], reads[second]
            if a[-1].at + quiet_s < b[0].at or b[-1].at + quiet_s < a[0].at:
                apart.update((first, second))
    if not apart:
        return judgements
    return {
        ref: CardJudgement(Association.UNCERTAIN, Rule.NOT_TOGETHER, judgement.evidence)
        if ref in apart
        else judgement
        for ref, judgement in judgements.items()
    }
