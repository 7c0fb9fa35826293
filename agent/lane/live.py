"""The live crossing: what the booth is shown while the vehicle is there.

The final crossing is published once the vehicle has left, but the officer needs the cards, the
plate and the recommendation while the vehicle is at the booth, and cards are read on approach
precisely so that the screen is ready when it stops. So the lane also publishes the crossing as
it forms: *opened* when the open crossing is first seen, *updated* whenever something an officer
would act on changes, *closed* when it closes (the final, durable crossing follows under the same
crossing number).

"Something an officer would act on" is the crossing's :class:`Summary`: whether a vehicle is
detected, which cards it carries with their association and match result, the voted plate and how
it matched, the recommendation and its reasons. Another read of a card already shown, or a
stronger RSSI, changes none of that and publishes nothing; a card attached, set aside, a plate
read or re-voted, a recommendation that changed do, and each update names what changed
(:class:`LiveChange`).

Every view is provisional until *closed*: the cards of a vehicle still at the booth can still be
read, judged again (a card read only briefly so far may turn out to be the next vehicle's), a
plate can still be re-voted. :class:`Pending` says what may still change it.

This module only decides *what* to publish and when it changed; it is pure, like the rest of the
lane core: decisions and lane times in, :class:`LiveUpdate` out. The wire format is
``agent/wire/live_event.py``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from agent.lane.association import Association
from agent.lane.plates import PlateMatchKind
from agent.lane.policy import Decision, Reason, Recommendation


class LivePhase(enum.StrEnum):
    """Where in its life a live crossing is."""

    OPENED = "opened"
    UPDATED = "updated"
    CLOSED = "closed"


class LiveChange(enum.StrEnum):
    """What changed since the previous live event of the same crossing."""

    OPENED = "opened"
    """First event of the crossing (a vehicle on the loop, or cards strong at the booth)."""
    RESUMED = "resumed"
    """First event after an agent restart: earlier events of this crossing may have been seen."""
    VEHICLE_DETECTED = "vehicle_detected"
    """The loop (or the cards) now say a vehicle is at the booth."""
    CARD_ADDED = "card_added"
    """A card is carried that was not before."""
    CARD_ATTACHED = "card_attached"
    """A carried card went from uncertain to attached."""
    CARD_UNCERTAIN = "card_uncertain"
    """A carried card went from attached to uncertain."""
    CARD_REMOVED = "card_removed"
    """A card shown before is no longer carried: judged the next vehicle's or another lane's,
    or it went with a vehicle the cards told apart from this one."""
    CARD_RESULT_CHANGED = "card_result_changed"
    """A card's match result changed (the credential cache was updated meanwhile)."""
    PLATE_READ = "plate_read"
    """The first plate vote."""
    PLATE_CHANGED = "plate_changed"
    """The voted plate text, or how it matched the registered vehicles, changed."""
    RECOMMENDATION_CHANGED = "recommendation_changed"
    REASONS_CHANGED = "reasons_changed"
    CLOSED = "closed"
    """The crossing closed; the final crossing follows."""


class Pending(enum.StrEnum):
    """Why a live view may still change (empty once closed)."""

    VEHICLE_AT_BOOTH = "vehicle_at_booth"
    """The crossing is open: more reads, plates and time at the booth can change it."""
    DEPARTURE_CONFIRMING = "departure_confirming"
    """The loop cleared and the departure is being confirmed: it closes in a moment, unless
    the vehicle is still there."""
    CARDS_UNCERTAIN = "cards_uncertain"
    """At least one card is not (yet) known to be in this vehicle."""
    PLATE_NOT_READ = "plate_not_read"
    """A lane with a camera has no plate vote for the vehicle yet."""


@dataclass(frozen=True, slots=True)
class CardSummary:
    ref: str
    association: Association
    result: str


@dataclass(frozen=True, slots=True)
class Summary:
    """What of a decision an officer acts on; two decisions with equal summaries look the same."""

    vehicle_detected: bool
    cards: tuple[CardSummary, ...]
    plate_text: str | None
    plate_match: PlateMatchKind | None
    recommendation: Recommendation
    reasons: tuple[Reason, ...]

    @classmethod
    def of(cls, decision: Decision) -> Summary:
        plate = decision.plate
        vote = plate.vote if plate is not None else None
        return cls(
            vehicle_detected=decision.crossing.vehicle_detected,
            cards=tuple(
                CardSummary(m.observation.ref, m.observation.association, m.result.value)
                for m in decision.matches
            ),
            plate_text=vote.text if vote is not None else None,
            plate_match=plate.match.kind if plate is not None else None,
            recommendation=decision.recommendation,
            reasons=decision.reasons,
        )


def changes_between(before: Summary, after: Summary) -> tuple[LiveChange, ...]:
    """What changed from ``before`` to ``after``, in :class:`LiveChange` order."""
    found: set[LiveChange] = set()
    if after.vehicle_detected and not before.vehicle_detected:
        found.add(LiveChange.VEHICLE_DETECTED)
    old = {card.ref: card for card in before.cards}
    new = {card.ref: card for card in after.cards}
    for ref, card in new.items():
        previous = old.get(ref)
        if previous is None:
            found.add(LiveChange.CARD_ADDED)
            continue
        if previous.association is not card.association:
            found.add(
                LiveChange.CARD_ATTACHED
                if card.association is Association.ATTACHED
                else LiveChange.CARD_UNCERTAIN
            )
        if previous.result != card.result:
            found.add(LiveChange.CARD_RESULT_CHANGED)
    if old.keys() - new.keys():
        found.add(LiveChange.CARD_REMOVED)
    if after.plate_text != before.plate_text or after.plate_match is not before.plate_match:
        if before.plate_text is None and after.plate_text is not None:
            found.add(LiveChange.PLATE_READ)
        else:
            found.add(LiveChange.PLATE_CHANGED)
    if after.recommendation is not before.recommendation:
        found.add(LiveChange.RECOMMENDATION_CHANGED)
    if after.reasons != before.reasons:
        found.add(LiveChange.REASONS_CHANGED)
    order = list(LiveChange)
    return tuple(sorted(found, key=order.index))


def pending_of(decision: Decision, *, departing: bool) -> tuple[Pending, ...]:
    """What may still change an open crossing's view."""
    pending = [Pending.DEPARTURE_CONFIRMING if departing else Pending.VEHICLE_AT_BOOTH]
    if any(m.observation.association is not Association.ATTACHED for m in decision.matches):
        pending.append(Pending.CARDS_UNCERTAIN)
    plate = decision.plate
    if plate is not None and plate.vote is None:
        pending.append(Pending.PLATE_NOT_READ)
    return tuple(pending)


@dataclass(frozen=True, slots=True)
class LiveUpdate:
    """One live event: crossing ``number`` as of lane time ``as_of``."""

    number: int
    """The crossing's number on this lane: the final crossing closed from it has the same."""
    phase: LivePhase
    revision: int
    """1, 2, 3… per crossing within one agent run (a restart begins again with ``resumed``)."""
    changes: tuple[LiveChange, ...]
    decision: Decision
    as_of: float
    pending: tuple[Pending, ...]

    @property
    def provisional(self) -> bool:
        return self.phase is not LivePhase.CLOSED


@dataclass(slots=True)
class _Shown:
    number: int
    summary: Summary
    revision: int


class LiveCrossings:
    """Which live events the lane's open crossing calls for (engine thread; no I/O).

    Feed it the open crossing's provisional decision whenever it may have changed
    (:meth:`view`) and every crossing as it closes (:meth:`closed`); each returns the events
    to publish, none when nothing an officer acts on changed.
    """

    def __init__(self) -> None:
        self._shown: _Shown | None = None
        self._resumed: int | None = None

    @property
    def showing(self) -> int | None:
        """The number of the crossing last shown as open (None: the lane is shown empty)."""
        return self._shown.number if self._shown is not None else None

    def resume(self, number: int) -> None:
        """Crossing ``number`` was restored at start: its next event says ``resumed``."""
        self._resumed = number

    def view(
        self, number: int, decision: Decision, at: float, *, departing: bool = False
    ) -> LiveUpdate | None:
        """The open crossing ``number`` as of lane time ``at``: an event if it is new to the
        booth or changed, else None. ``departing``: the loop cleared, departure not confirmed
        (said in ``pending`` when something else changed)."""
        summary = Summary.of(decision)
        shown = self._shown
        if shown is not None and shown.number == number:
            changes = changes_between(shown.summary, summary)
            if not changes:
                return None  # a departure being confirmed alone is no news: closed follows
            shown.summary = summary
            shown.revision += 1
            phase, revision = LivePhase.UPDATED, shown.revision
        else:
            # A crossing closed without its closed event being asked for is simply superseded.
            resumed = self._resumed == number
            self._resumed = None
            self._shown = _Shown(number, summary, 1)
            phase = LivePhase.UPDATED if resumed else LivePhase.OPENED
            changes = (LiveChange.RESUMED,) if resumed else (LiveChange.OPENED,)
            revision = 1
        return LiveUpdate(
            number=number,
            phase=phase,
            revision=revision,
            changes=changes,
            decision=decision,
            as_of=at,
            pending=pending_of(decision, departing=departing),
        )

    def closed(self, number: int, decision: Decision) -> list[LiveUpdate]:
        """Crossing ``number`` closed with ``decision``: its closed event (preceded by an opened
        one when it opened and closed before the booth was shown it)."""
        at = decision.crossing.closed_at
        shown = self._shown
        updates: list[LiveUpdate] = []
        if shown is None or shown.number != number:
            if self._resumed == number:
                self._resumed = None
                shown = _Shown(number, Summary.of(decision), 0)
                changes: tuple[LiveChange, ...] = (LiveChange.RESUMED,)
            else:
                opened = self.view(number, decision, at)
                assert opened is not None
                assert self._shown is not None
                updates.append(opened)
                shown = self._shown
                changes = ()
        else:
            changes = changes_between(shown.summary, Summary.of(decision))
        self._shown = None
        updates.append(
            LiveUpdate(
                number=number,
                phase=LivePhase.CLOSED,
                revision=shown.revision + 1,
                changes=(*changes, LiveChange.CLOSED),
                decision=decision,
                as_of=at,
                pending=(),
            )
        )
        return updates

    def empty(self) -> bool:
        """No crossing is open any more: True when the booth was showing one (forget it)."""
        if self._shown is None:
            return False
        self._shown = None
        return True
