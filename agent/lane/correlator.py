"""Crossing correlation: loop edges, card reads and plates in; one crossing per vehicle out.

An inspection lane is a stop point: one vehicle at the booth at a time, the next one queued
behind it, other lanes alongside. The correlator keeps every recent read of every card
(:mod:`agent.lane.tracks`) and cuts the lane's timeline into vehicles, mostly at the presence
loop's edges and, when the loop fails, on the evidence of the cards. When a vehicle's crossing
closes, each card read around its stay is judged (:mod:`agent.lane.association`): carried by
the crossing (``attached`` or ``uncertain``), kept for the next vehicle, or set aside as another
lane's. docs/fusion.md tells the whole story; in short:

* **Arrival**: the loop becomes occupied. Reads in the ``approach_window_s`` before it count as
  the vehicle's approach.
* **Departure**: the loop clears and stays clear for ``departure_confirm_s`` (or, after an
  occupation shorter than ``min_stay_s``, ``short_stay_confirm_s``): a shorter clear is chatter
  and the vehicle stays. The crossing closes at the clear edge.
* **Tail**: the loop occupied again within ``rejoin_window_s`` of a departure may be the same
  vehicle (a trailer after the hitch gap, a loop that dropped out) or a tailgater. It becomes a
  crossing as soon as a new card is read strongly at the booth (or a new plate is read); if it
  clears within ``tail_max_s`` with nothing new it was the departed vehicle's tail; if it stays
  while the departed vehicle's cards keep being read at the booth, the loop dropped out under a
  vehicle that never left, and the rest of its occupation is a *continuation* that produces no
  second crossing.
* **Missing clear**: an occupied edge while already occupied closes the crossing
  (``next_arrival``): its clear was lost.
* **Split by evidence**: while the loop stays occupied (stuck, or a tailgater bumper to bumper),
  a card read strongly at the booth that was not there before, once every card of the vehicle
  at the booth has gone quiet for ``split_quiet_s``, means the vehicle changed: the crossing is
  closed between the two and a new one opened (``evidence_split``).
* **Longest stay**: a crossing open for ``max_open_s`` closes (``max_duration``); a loop still
  occupied then is not trusted until it clears.
* **No loop**: a card read strongly at the booth with no vehicle on the loop is a vehicle the
  loop missed; its crossing closes ``idle_timeout_s`` after its cards stop being read. Weak
  bursts with nobody on the loop (a neighbouring lane) make no crossing at all.

All times are lane time (:mod:`agent.lane.clock`): the controller's own clock, so a replayed
journal or resent events correlate as they happened. Plate readings carry the time their frame
was captured; a reading goes to the crossing open then, or, up to ``plate_preroll_s`` before
one opens, to the next one; a reading of the plate of the vehicle that just left, within
``straggler_window_s``, is dropped.

The state is exported as plain JSON-compatible data and restored
(:meth:`CrossingCorrelator.export_state`, :meth:`CrossingCorrelator.restore`): the agent's input
journal stores it with each committed crossing and, after a crash, replays the journalled
inputs on top of it; the n-th crossing closed is crossing number n.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from agent.lane.association import (
    Association,
    CardJudgement,
    Read,
    Stay,
    evidence_of,
    judge,
    judge_all,
)
from agent.lane.crossing import (
    CardObservation,
    ClosedBy,
    CorrelationSettings,
    CorrelatorCounters,
    Crossing,
    LoopAnomaly,
    LoopFault,
    OpenedBy,
    SetAsideCard,
)
from agent.lane.events import (
    LaneInput,
    LoopChanged,
    PlateSeen,
    TagRead,
    Tick,
    VisionChanged,
    VisionFault,
)
from agent.lane.lane_state import (
    STATE_VERSION,
    Departed,
    LoopState,
    Segment,
    Tail,
    departed_from,
    departed_state,
    finite_or_none,
    float_or_minus_inf,
    optional_float,
    segment_from,
    segment_state,
    tail_from,
    tail_state,
    upgrade_v1,
)
from agent.lane.plates import fold_lookalikes
from agent.lane.tracks import CardTracks, TrackSettings
from agent.lane.vehicle_evidence import (
    departed_seen,
    find_split,
    lingers,
    never_left,
    new_at_booth,
    new_card_in_tail,
    not_together,
    unseen_vehicle,
)

__all__ = [
    "CardObservation",
    "ClosedBy",
    "CorrelationSettings",
    "CorrelatorCounters",
    "Crossing",
    "CrossingCorrelator",
    "LoopAnomaly",
    "LoopFault",
    "OpenedBy",
    "SetAsideCard",
]
"""The crossing's types live in :mod:`agent.lane.crossing`; they are the correlator's interface
and are importable from here too."""


class CrossingCorrelator:
    """Owns the lane's timeline; feed it inputs in time order, collect closed crossings."""

    def __init__(self, settings: CorrelationSettings) -> None:
        self.settings = settings
        self.counters = CorrelatorCounters()
        self._tracks = CardTracks(
            TrackSettings(
                straggler_window_s=settings.straggler_window_s,
                handed_back_after_s=settings.handed_back_after_s,
                handed_back_margin_db=settings.handed_back_margin_db,
                max_reads_per_card=settings.max_reads_per_card,
            ),
            settings.association,
        )
        self._loop = LoopState()
        self._segment: Segment | None = None
        self._tail: Tail | None = None
        self._departed: Departed | None = None
        self._last_at = float("-inf")
        self._vision_fault: VisionFault | None = None
        self._plate_preroll: deque[PlateSeen] = deque()
        self._recently_closed_plates: dict[str, float] = {}
        self._last_closed_at = float("-inf")
        self._closed_count = 0

    # --- what the rest of the agent reads ---------------------------------------------------

    @property
    def has_open_crossing(self) -> bool:
        """True while a vehicle is being collected (or a tail decided)."""
        return self._segment is not None or self._tail is not None

    @property
    def departure_pending(self) -> bool:
        """The loop cleared under the open crossing and the departure is being confirmed."""
        return self._segment is not None and self._loop.clear_at is not None

    @property
    def last_at(self) -> float | None:
        """The latest time of an input applied (None before the first)."""
        return finite_or_none(self._last_at)

    @property
    def closed_count(self) -> int:
        """Crossings closed so far, counting those before the state was restored."""
        return self._closed_count

    def next_deadline(self) -> float | None:
        """The earliest lane time at which time alone would change something (None: nothing)."""
        s = self.settings
        deadlines: list[float] = []
        if self._loop.confirm_by is not None:
            deadlines.append(self._loop.confirm_by)
        if self._tail is not None:
            tail_deadline = self._tail.started_at + s.tail_max_s
            if self._last_at > tail_deadline:
                tail_deadline = self._tail.started_at + 2 * s.tail_max_s
            deadlines.append(tail_deadline)
        segment = self._segment
        if segment is not None:
            deadlines.append(segment.opened_at + s.max_open_s)
            if not segment.vehicle_detected:
                last = self._last_anchor_read(segment, self._last_at)
                if last is not None:
                    deadlines.append(last + s.idle_timeout_s)
        return min(deadlines) if deadlines else None

    def loop_faults(self, at: float) -> dict[LoopFault, str]:
        """Active loop faults with a message each."""
        s = self.settings
        loop = self._loop
        found: dict[LoopFault, str] = {}
        if loop.occupied and loop.since is not None:
            occupied_for = at - loop.since
            if loop.stuck or occupied_for >= s.stuck_occupied_s or loop.splits >= 2:
                found[LoopFault.STUCK_OCCUPIED] = (
                    f"presence loop occupied for {occupied_for:.0f} s "
                    f"({loop.splits} vehicles told apart by their cards meanwhile)"
                )
        if loop.edge_missing_at is not None and at - loop.edge_missing_at < s.fault_hold_s:
            found[LoopFault.EDGE_MISSING] = (
                f"presence loop missed a vehicle's departure {at - loop.edge_missing_at:.0f} s "
                f"ago ({self.counters.missing_clears} missing clears, "
                f"{self.counters.evidence_splits} splits by cards since start)"
            )
        recent = [t for t in loop.chatter_times if at - t < s.fault_hold_s]
        if len(recent) >= s.chatter_fault_count:
            found[LoopFault.CHATTER] = (
                f"presence loop chattered {len(recent)} times in {s.fault_hold_s:.0f} s"
            )
        return found

    def current(self, at: float) -> Crossing | None:
        """The open crossing as it would close now, marked provisional (None: none open)."""
        segment = self._segment
        if segment is None or segment.ghost:
            return None
        end = max(at, segment.start)
        crossing, _ = self._judged(segment, end, ClosedBy.DEPARTURE)
        return replace(crossing, provisional=True)

    # --- inputs ---------------------------------------------------------------------------

    def handle(self, event: LaneInput) -> list[Crossing]:
        """Apply one input; return the crossings it closed (zero or more)."""
        if isinstance(event, PlateSeen):
            # Stamped with its frame's capture time, which inference makes late by design: it
            # neither moves the clock nor counts as out of order.
            return self._on_plate(event)
        at = event.at
        if at < self._last_at:
            # A clock step backwards must not reopen or lengthen anything: the event is
            # applied at the latest time seen.
            if not isinstance(event, Tick):
                self.counters.out_of_order_events += 1
            at = self._last_at
        self._last_at = at
        closed = self._expire(at)
        match event:
            case TagRead():
                closed.extend(self._on_read(event, at))
            case LoopChanged():
                closed.extend(self._on_loop(event, at))
            case VisionChanged():
                self._vision_fault = event.fault
                if self._segment is not None and event.fault is not None:
                    self._segment.vision_faults.add(event.fault)
        closed.extend(self._after_input(at))
        return closed

    def close_all(self, at: float) -> list[Crossing]:
        """Close whatever is open (clean shutdown): nothing collected is lost.

        A tail not yet decided is the departed vehicle's (nothing new was read in it).
        """
        self._tail = None
        segment = self._segment
        if segment is None:
            return []
        return self._close(max(at, segment.start), ClosedBy.SHUTDOWN)

    # --- time -----------------------------------------------------------------------------

    def _expire(self, at: float) -> list[Crossing]:
        s = self.settings
        closed: list[Crossing] = []
        window = s.straggler_window_s
        self._recently_closed_plates = {
            text: when for text, when in self._recently_closed_plates.items() if at - when <= window
        }
        while self._plate_preroll and at - self._plate_preroll[0].at > s.plate_preroll_s:
            self._plate_preroll.popleft()
        loop = self._loop
        if loop.confirm_by is not None and at >= loop.confirm_by:
            clear_at = loop.clear_at
            loop.clear_at = loop.confirm_by = None
            if self._segment is not None and clear_at is not None:
                closed.extend(self._close(clear_at, ClosedBy.DEPARTURE))
        segment = self._segment
        if segment is not None and at - segment.opened_at >= s.max_open_s:
            deadline = segment.opened_at + s.max_open_s
            if loop.occupied:
                segment.anomalies.add(LoopAnomaly.STUCK_OCCUPIED)
                loop.stuck = True
                self.counters.stuck_closes += 1
            closed.extend(self._close(deadline, ClosedBy.MAX_DURATION))
        segment = self._segment
        if segment is not None and not segment.vehicle_detected:
            last = self._last_anchor_read(segment, at)
            if last is None or at - last >= s.idle_timeout_s:
                end = segment.start if last is None else last + s.idle_timeout_s
                if segment.ghost and last is not None:
                    end = last  # the departed vehicle was last seen then
                closed.extend(self._close(min(end, at), ClosedBy.IDLE_TIMEOUT))
        if self._tail is not None and at - self._tail.started_at > s.tail_max_s:
            self._resolve_tail(at)
        return closed

    def _after_input(self, at: float) -> list[Crossing]:
        """What the new state allows: a split by evidence, a vehicle that did not leave when the
        loop cleared, a vehicle the loop missed."""
        closed = self._check_split(at)
        if (
            self._segment is None
            and self._tail is None
            and (not self._loop.occupied or self._loop.stuck)
            and self._loop.clear_at is None
        ):
            self._linger(at)
        if (
            self._segment is None
            and self._tail is None
            and (not self._loop.occupied or self._loop.stuck)
            and self._loop.clear_at is None
        ):
            self._infer_vehicle(at)
        return closed

    def _linger(self, at: float) -> None:
        """The loop cleared but the departed vehicle lingers at the booth
        (:func:`~agent.lane.vehicle_evidence.lingers`): the rest of its stay is a ghost, no
        second crossing."""
        departed = self._departed
        s = self.settings
        if (
            departed is None
            or departed.by is not ClosedBy.DEPARTURE
            or not s.tail_max_s <= at - departed.at <= s.straggler_window_s
            or not lingers(self._tracks, departed, at, s.association)
        ):
            return
        segment = self._open(departed.at, OpenedBy.LOOP, detected=False, take_preroll=False)
        segment.ghost = True
        segment.anchors.update(departed.levels)
        self.counters.continuations += 1

    # --- reads ----------------------------------------------------------------------------

    def _on_read(self, read: TagRead, at: float) -> list[Crossing]:
        if read.rssi_dbm < self.settings.min_rssi_dbm:
            self.counters.weak_reads += 1
            return []
        compact = Read(at, read.rssi_dbm, read.antenna)
        if self._tracks.is_straggler(read.epc, compact):
            self.counters.straggler_reads += 1
        self._tracks.add(read.epc, compact, read.tid)
        tail = self._tail
        if tail is not None and new_at_booth(
            read.epc, compact, tail.departed, self.settings.association
        ):
            self._promote_tail(tail)
        return []

    # --- the loop -------------------------------------------------------------------------

    def _on_loop(self, change: LoopChanged, at: float) -> list[Crossing]:
        s = self.settings
        if change.loop_id != s.presence_loop_id:
            self.counters.other_loop_events += 1
            return []
        loop = self._loop
        if change.occupied:
            if loop.occupied:
                return self._missing_clear(at)
            loop.occupied = True
            if loop.clear_at is not None:
                # Cleared for less than the confirmation: chatter under a vehicle that stays.
                loop.clear_at = loop.confirm_by = None
                self._chatter(at)
                return []
            loop.since = at
            loop.splits = 0
            return self._arrival(at)
        if not loop.occupied:
            self.counters.unmatched_clears += 1
            return []
        loop.occupied = False
        loop.stuck = False
        if self._tail is not None and self._tail_clears(at):
            return []
        segment = self._segment
        if segment is None or not segment.vehicle_detected:
            return []
        stay = at - segment.start
        confirm = s.departure_confirm_s if stay >= s.min_stay_s else s.short_stay_confirm_s
        if confirm <= 0:
            return self._close(at, ClosedBy.DEPARTURE)
        loop.clear_at = at
        loop.confirm_by = at + confirm
        return []

    def _arrival(self, at: float) -> list[Crossing]:
        segment = self._segment
        closed: list[Crossing] = []
        if segment is not None and segment.ghost:
            # The vehicle that lingered past the loop has moved on: this is the next one.
            closed.extend(self._close(at, ClosedBy.IDLE_TIMEOUT))
            self._open(at, OpenedBy.LOOP, detected=True)
            return closed
        if segment is not None:
            last = self._last_anchor_read(segment, at)
            if last is not None and at - last <= self.settings.association.approach_gap_s:
                # A vehicle its cards announced (strong reads, no loop yet) reaches the loop.
                segment.vehicle_detected = True
                segment.arrived_at = at
                return []
            # The vehicle the loop missed has gone quiet: this arrival is another one. It was
            # last seen when its cards were last read.
            closed.extend(self._close(at if last is None else last, ClosedBy.IDLE_TIMEOUT))
        departed = self._departed
        if (
            departed is not None
            and departed.by is ClosedBy.DEPARTURE
            and at - departed.at <= self.settings.rejoin_window_s
        ):
            self._tail = Tail(at, departed)
            return closed
        self._open(at, OpenedBy.LOOP, detected=True)
        return closed

    def _missing_clear(self, at: float) -> list[Crossing]:
        """Occupied again without a clear: the vehicle at the booth left unseen."""
        loop = self._loop
        self.counters.missing_clears += 1
        loop.edge_missing_at = at
        loop.since = at
        loop.splits = 0
        loop.stuck = False
        closed: list[Crossing] = []
        if self._tail is not None:
            self._promote_tail(self._tail)
        segment = self._segment
        if segment is not None:
            if not segment.vehicle_detected:
                segment.vehicle_detected = True
                segment.arrived_at = at
                return []
            segment.anomalies.add(LoopAnomaly.MISSING_CLEAR)
            closed.extend(self._close(at, ClosedBy.NEXT_ARRIVAL))
        self._open(at, OpenedBy.LOOP, detected=True)
        return closed

    def _chatter(self, at: float) -> None:
        self.counters.chatter += 1
        times = self._loop.chatter_times
        times.append(at)
        while len(times) > 2 * self.settings.chatter_fault_count:
            times.popleft()
        if self._segment is not None:
            self._segment.anomalies.add(LoopAnomaly.CHATTER)

    # --- tails and continuations -----------------------------------------------------------

    def _tail_clears(self, at: float) -> bool:
        """The re-occupation cleared. Within ``tail_max_s`` and with no new card read in it
        (however weakly, at the booth) it was the departed vehicle's tail: True. Otherwise it
        was a vehicle of its own, now leaving: its crossing opens (False), and the clear is its
        departure."""
        tail = self._tail
        assert tail is not None
        if at - tail.started_at > self.settings.tail_max_s or new_card_in_tail(
            self._tracks, tail, at, self.settings.association
        ):
            self._promote_tail(tail)
            return False
        self._tail = None
        self.counters.tails_absorbed += 1
        self._chatter(at)
        self._extend_departure(tail.departed, at)
        return True

    def _resolve_tail(self, at: float) -> None:
        """The re-occupation outlasted ``tail_max_s``: a vehicle that never left, or a new one.

        It never left when its cards were read without a dip through the clear and into the
        re-occupation, as strongly as during its stay (the loop dropped out under it). A car
        that left and one that arrives (even with a card handed back) make the reads dip or
        stop in between: a new vehicle. With nothing read of the departed vehicle's cards at all
        yet (a card read every few seconds), it waits up to twice as long before deciding.
        """
        tail = self._tail
        assert tail is not None
        margin = self.settings.association.weak_margin_db
        seen = departed_seen(self._tracks, tail.departed, tail.started_at + 1.0, at, margin)
        if seen is None and at - tail.started_at <= 2 * self.settings.tail_max_s:
            return  # nothing read yet either way: wait (a clear meanwhile makes it a vehicle)
        self._tail = None
        segment = self._open(tail.started_at, OpenedBy.LOOP, detected=True, take_preroll=False)
        if never_left(self._tracks, tail.departed, tail.started_at + 1.0, margin):
            segment.ghost = True
            self.counters.continuations += 1
            self._chatter(at)

    def _promote_tail(self, tail: Tail) -> None:
        """The re-occupation is a vehicle of its own: its crossing opened when it arrived."""
        self._tail = None
        self._open(tail.started_at, OpenedBy.LOOP, detected=True)

    def _extend_departure(self, departed: Departed, at: float) -> None:
        """The departed vehicle was on the loop until ``at``: its reads until then are spent and
        its stragglers count from then."""
        for ref, level in departed.levels.items():
            self._tracks.consume(ref, at, carried_level=level)
        self._departed = replace(departed, at=at)

    # --- splits and vehicles the loop missed ------------------------------------------------

    def _check_split(self, at: float) -> list[Crossing]:
        """Close the crossing and open the next when the cards say the vehicle changed while
        the loop stayed occupied, was not trusted, or never saw either vehicle."""
        segment = self._segment
        if (
            segment is None
            or self._loop.clear_at is not None
            or at - segment.last_split_check < 0.5
        ):
            return []
        segment.last_split_check = at
        split = find_split(self._tracks, segment, at, self.settings)
        if split is None:
            return []
        self.counters.evidence_splits += 1
        self._loop.splits += 1
        self._loop.edge_missing_at = at
        segment.anomalies.add(LoopAnomaly.SPLIT_BY_CARDS)
        moved = [p for p in segment.plates if p.at > split.at]
        segment.plates = [p for p in segment.plates if p.at <= split.at]
        detected = segment.vehicle_detected
        closed = self._close(split.at, ClosedBy.EVIDENCE_SPLIT)
        opened = self._open(split.at, OpenedBy.EVIDENCE, detected=detected, take_preroll=False)
        if detected:
            opened.arrived_at = split.arrived_at
        else:
            opened.anchors.update(split.newcomers)  # the loop misses it too: its cards time it
        opened.anomalies.add(LoopAnomaly.SPLIT_BY_CARDS)
        opened.plates.extend(moved)
        return closed

    def _infer_vehicle(self, at: float) -> None:
        """Open a crossing for a vehicle the loop did not see
        (:func:`~agent.lane.vehicle_evidence.unseen_vehicle`)."""
        anchors = unseen_vehicle(self._tracks, at, self.settings)
        if not anchors:
            return
        segment = self._open(min(anchors.values()), OpenedBy.TAG, detected=False)
        segment.anchors.update(anchors)
        self.counters.vehicles_without_loop += 1

    def _last_anchor_read(self, segment: Segment, at: float) -> float | None:
        latest: float | None = None
        for ref in segment.anchors:
            if segment.ghost:  # its cards' reads are the departed vehicle's: stragglers
                reads = self._tracks.raw(ref, segment.start, at)
                last = reads[-1].at if reads else None
            else:
                last = self._tracks.last_eligible_at(ref, segment.start, at, segment.arrived_at)
            if last is not None and (latest is None or last > latest):
                latest = last
        return latest

    # --- opening and closing ----------------------------------------------------------------

    def _open(
        self, at: float, opened_by: OpenedBy, *, detected: bool, take_preroll: bool = True
    ) -> Segment:
        """Open a crossing, taking the plate readings of the moments before it opened."""
        segment = self._segment = Segment(
            opened_at=at,
            opened_by=opened_by,
            vehicle_detected=detected,
            arrived_at=at if detected else None,
        )
        if self._vision_fault is not None:
            segment.vision_faults.add(self._vision_fault)
        if take_preroll:
            earliest = at - self.settings.plate_preroll_s
            segment.plates.extend(p for p in self._plate_preroll if p.at >= earliest)
            self._plate_preroll.clear()
        return segment

    def _judged(
        self, segment: Segment, end: float, closed_by: ClosedBy
    ) -> tuple[Crossing, dict[str, CardJudgement]]:
        s = self.settings
        stay = Stay(segment.start, end)
        reads = self._tracks.eligible_by_card(
            segment.start - s.approach_window_s, end, segment.arrived_at
        )
        judged = judge_all(reads, stay, s.association)
        # A card the vehicle before carried can only count from handed_back_after_s into this
        # stay (its earlier reads are stragglers): judge its timing from there.
        handed_back = Stay(stay.start + s.handed_back_after_s, stay.end)
        for ref, judgement in judged.items():
            carried_at = self._tracks.carried_at.get(ref)
            if (
                judgement.association is not Association.ATTACHED
                and carried_at is not None
                and stay.start - s.straggler_window_s <= carried_at <= stay.start
                and handed_back.end > handed_back.start
            ):
                judged[ref] = judge(
                    evidence_of(reads[ref], handed_back, s.association), handed_back, s.association
                )
        judgements = not_together(judged, reads, s.split_quiet_s)
        carried: list[CardObservation] = []
        aside: list[SetAsideCard] = []
        for ref in sorted(judgements, key=lambda r: (judgements[r].evidence.first_at, r)):
            judgement = judgements[ref]
            ev = judgement.evidence
            if judgement.association.carried:
                carried.append(
                    CardObservation(
                        ref=ref,
                        reads=ev.reads,
                        first_at=ev.first_at,
                        last_at=ev.last_at,
                        best_rssi_dbm=max(r.rssi_dbm for r in reads[ref]),
                        antennas=ev.antennas,
                        tid=self._tracks.tid(ref),
                        association=judgement.association,
                        rule=judgement.rule,
                        evidence=ev,
                    )
                )
            else:
                aside.append(SetAsideCard(ref, judgement.association, judgement.rule, ev))
        crossing = Crossing(
            opened_at=segment.opened_at,
            closed_at=end,
            opened_by=segment.opened_by,
            closed_by=closed_by,
            vehicle_detected=segment.vehicle_detected,
            cards=tuple(carried),
            plates=tuple(segment.plates),
            vision_faults=tuple(sorted(segment.vision_faults)),
            set_aside=tuple(aside),
            anomalies=tuple(sorted(segment.anomalies)),
        )
        return crossing, judgements

    def _close(self, at: float, closed_by: ClosedBy) -> list[Crossing]:
        """Close the open segment at ``at``: its crossing, or nothing for a ghost."""
        segment = self._segment
        assert segment is not None
        self._segment = None
        if self._loop.clear_at is not None and closed_by is not ClosedBy.DEPARTURE:
            self._loop.clear_at = self._loop.confirm_by = None
        if segment.ghost:
            departed = self._departed
            if departed is not None:
                self._extend_departure(departed, at)
            return []
        crossing, judgements = self._judged(segment, at, closed_by)
        counters = self.counters
        levels: dict[str, float] = {}
        for ref, judgement in judgements.items():
            association = judgement.association
            if association is Association.ATTACHED:
                counters.cards_attached += 1
            elif association is Association.UNCERTAIN:
                counters.cards_uncertain += 1
            elif association is Association.NEXT_VEHICLE:
                counters.cards_next_vehicle += 1
                continue  # its reads are the next vehicle's approach
            else:
                counters.cards_other_lane += 1
            level = judgement.evidence.median_rssi_dbm if association.carried else None
            self._tracks.consume(ref, at, carried_level=level)
            if level is not None:
                levels[ref] = level
        best_plate = max(crossing.plates, key=lambda p: p.confidence, default=None)
        self._departed = Departed(
            at=at,
            by=closed_by,
            levels=levels,
            plate=None if best_plate is None else fold_lookalikes(best_plate.text),
        )
        self._last_closed_at = at
        self._closed_count += 1
        for plate in crossing.plates:
            self._recently_closed_plates[fold_lookalikes(plate.text)] = at
        self._tracks.prune(at - self.settings.approach_window_s - self.settings.straggler_window_s)
        return [crossing]

    # --- plates ---------------------------------------------------------------------------

    def _on_plate(self, seen: PlateSeen) -> list[Crossing]:
        s = self.settings
        current = self._segment
        earliest = self._last_closed_at
        if current is not None:
            earliest = max(earliest, current.opened_at - s.plate_preroll_s)
        if seen.at < earliest:
            self.counters.late_plates += 1  # its frame belongs to a crossing already decided
            return []
        folded = fold_lookalikes(seen.text)
        left_at = self._recently_closed_plates.get(folded)
        if left_at is not None and seen.at - left_at <= s.straggler_window_s:
            # Still in view after it left, even if the next vehicle's crossing has opened.
            self.counters.straggler_plates += 1
            return []
        tail = self._tail
        if tail is not None and current is None:
            if tail.departed.plate not in (None, folded) and seen.confidence >= 0.9:
                self._promote_tail(tail)  # a plate the departed vehicle did not have
                current = self._segment
            else:
                self.counters.straggler_plates += 1
                return []
        if current is not None and current.ghost:
            self.counters.straggler_plates += 1  # the departed vehicle, still in view
            return []
        if current is None:
            self._plate_preroll.append(seen)
            while len(self._plate_preroll) > s.max_plate_readings:
                self._plate_preroll.popleft()
            return []
        if len(current.plates) >= s.max_plate_readings:
            # A vehicle parked in view for minutes: keep the most confident readings.
            weakest = min(range(len(current.plates)), key=lambda i: current.plates[i].confidence)
            self.counters.plates_over_limit += 1
            if current.plates[weakest].confidence >= seen.confidence:
                return []
            del current.plates[weakest]
        current.plates.append(seen)
        return []

    # --- state ----------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """What shapes how later inputs are correlated, as plain JSON-compatible data.

        Plate readings waiting for a crossing and those of the open crossing are left out: their
        crops are large and plate readings are not journalled, so a restored correlator
        continues without them. Counters are per run and left out too.
        """
        loop = self._loop
        return {
            "version": STATE_VERSION,
            "closed_count": self._closed_count,
            "last_at": finite_or_none(self._last_at),
            "last_closed_at": finite_or_none(self._last_closed_at),
            "recently_closed_plates": dict(self._recently_closed_plates),
            "vision_fault": None if self._vision_fault is None else self._vision_fault.value,
            "loop": {
                "occupied": loop.occupied,
                "since": loop.since,
                "clear_at": loop.clear_at,
                "confirm_by": loop.confirm_by,
                "stuck": loop.stuck,
                "splits": loop.splits,
                "edge_missing_at": loop.edge_missing_at,
                "chatter_times": list(loop.chatter_times),
            },
            "tracks": self._tracks.export_state(),
            "segment": None if self._segment is None else segment_state(self._segment),
            "tail": None if self._tail is None else tail_state(self._tail),
            "departed": None if self._departed is None else departed_state(self._departed),
        }

    @classmethod
    def restore(cls, settings: CorrelationSettings, state: Mapping[str, Any]) -> CrossingCorrelator:
        """A correlator in the state :meth:`export_state` described (version 1 states, written
        before occupant association, are converted).

        Raises ``ValueError`` for a state of another version or of the wrong shape.
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"correlator state is not an object: {type(state).__name__}")
        version = state.get("version")
        if version == 1:
            state = upgrade_v1(state)
        elif version != STATE_VERSION:
            raise ValueError(f"correlator state version {version!r} is not supported")
        correlator = cls(settings)
        try:
            correlator._closed_count = int(state["closed_count"])
            correlator._last_at = float_or_minus_inf(state["last_at"])
            correlator._last_closed_at = float_or_minus_inf(state["last_closed_at"])
            correlator._recently_closed_plates = {
                str(text): float(at) for text, at in state["recently_closed_plates"].items()
            }
            fault = state["vision_fault"]
            correlator._vision_fault = None if fault is None else VisionFault(fault)
            loop = state["loop"]
            correlator._loop = LoopState(
                occupied=bool(loop["occupied"]),
                since=optional_float(loop["since"]),
                clear_at=optional_float(loop["clear_at"]),
                confirm_by=optional_float(loop["confirm_by"]),
                stuck=bool(loop["stuck"]),
                splits=int(loop["splits"]),
                edge_missing_at=optional_float(loop["edge_missing_at"]),
                chatter_times=deque(float(t) for t in loop["chatter_times"]),
            )
            correlator._tracks.restore(state["tracks"])
            segment = state["segment"]
            correlator._segment = None if segment is None else segment_from(segment)
            tail = state["tail"]
            correlator._tail = None if tail is None else tail_from(tail)
            departed = state["departed"]
            correlator._departed = None if departed is None else departed_from(departed)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"correlator state is malformed: {error!r}") from error
        return correlator
