"""The live crossing in the lane core: which views of the open crossing reach the booth, and
what each says changed. Driven through the real engine (correlator + policy) with plain data."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from agent.lane.association import Association
from agent.lane.correlator import CorrelationSettings
from agent.lane.credentials import Credential, CredentialStatus, DocumentType, Program
from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, Tick
from agent.lane.live import (
    LiveChange,
    LiveCrossings,
    LivePhase,
    LiveUpdate,
    Pending,
    Summary,
    changes_between,
)
from agent.lane.plates import PlateMatchKind
from agent.lane.policy import LanePolicy, LaneType, Reason, Recommendation
from tests.lane.kit import arrive, depart, in_time_order, read, reads

T0 = 1_800_000_000.0
MOMENT = datetime.fromtimestamp(T0, UTC)
CARD_A = "E2801160000000000000000A"
CARD_B = "E2801160000000000000000B"
REVOKED = "E280116000000000000000DD"


def credential(ref: str, status: CredentialStatus = CredentialStatus.ACTIVE) -> Credential:
    return Credential(
        ref=ref,
        document_type=DocumentType.TRUSTED_TRAVELLER_CARD,
        program=Program.SENTRI,
        status=status,
        valid_from=MOMENT - timedelta(days=365),
        valid_until=MOMENT + timedelta(days=365),
        holder_ref=f"H-{ref[-4:]}",
    )


CACHE = {
    CARD_A: credential(CARD_A),
    CARD_B: credential(CARD_B),
    REVOKED: credential(REVOKED, CredentialStatus.REVOKED),
}


class Booth:
    """The engine and the live tracker, refreshed after every input as the service does."""

    def __init__(self, cache: dict[str, Credential] | None = None) -> None:
        lookup = (cache if cache is not None else CACHE).get
        self.engine = LaneEngine(
            CorrelationSettings(),
            LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI})),
            lookup,
        )
        self.live = LiveCrossings()
        self.updates: list[LiveUpdate] = []

    def feed(self, *inputs: LaneInput | list[LaneInput]) -> list[LiveUpdate]:
        before = len(self.updates)
        flat: list[LaneInput] = []
        for item in inputs:
            flat.extend(item if isinstance(item, list) else [item])
        for lane_input in flat:
            number = self.engine.closed_count + 1
            for offset, decision in enumerate(self.engine.handle(lane_input)):
                self.updates.extend(self.live.closed(number + offset, decision))
            self.refresh(lane_input.at)
        return self.updates[before:]

    def refresh(self, at: float) -> None:
        current = self.engine.current(at)
        if current is None:
            self.live.empty()
            return
        number, decision = current
        update = self.live.view(
            number, decision, at, departing=self.engine.correlator.departure_pending
        )
        if update is not None:
            self.updates.append(update)

    def idle(self, start: float, end: float, step: float = 0.25) -> list[LiveUpdate]:
        at, ticks = start, []
        while at + step <= end:
            at += step
            ticks.append(Tick(at))
        return self.feed(*ticks)


def test_an_arrival_opens_the_live_crossing_before_any_card_is_read() -> None:
    booth = Booth()
    [opened] = booth.feed(arrive(T0))
    assert opened.phase is LivePhase.OPENED
    assert opened.changes == (LiveChange.OPENED,)
    assert (opened.number, opened.revision) == (1, 1)
    assert opened.decision.recommendation is Recommendation.REFER
    assert opened.decision.reasons == (Reason.NO_CARD_READ,)
    assert opened.provisional
    assert opened.pending == (Pending.VEHICLE_AT_BOOTH,)


def test_repeated_reads_of_a_card_already_shown_publish_nothing() -> None:
    booth = Booth()
    booth.feed(arrive(T0), reads(CARD_A, T0 + 0.5, T0 + 3.0, every=0.25))
    shown = len(booth.updates)
    quiet = booth.feed(reads(CARD_A, T0 + 3.25, T0 + 8.0, every=0.25, rssi=-44.0))
    assert quiet == [], [u.changes for u in quiet]
    assert shown >= 2


def test_a_valid_card_attached_at_the_booth_turns_the_recommendation_to_expedite() -> None:
    booth = Booth()
    booth.feed(arrive(T0))
    updates = booth.feed(reads(CARD_A, T0 + 0.5, T0 + 4.0, every=0.25))
    last = updates[-1]
    assert last.decision.recommendation is Recommendation.EXPEDITE
    assert [(m.observation.ref, m.observation.association) for m in last.decision.matches] == [
        (CARD_A, Association.ATTACHED)
    ]
    changed = [u for u in updates if LiveChange.RECOMMENDATION_CHANGED in u.changes]
    assert changed, [u.changes for u in updates]
    assert changed[-1].decision.recommendation is Recommendation.EXPEDITE
    assert [u.revision for u in booth.updates] == list(range(1, len(booth.updates) + 1))
    assert {u.number for u in booth.updates} == {1}
    # The card was first shown as added, then as attached (or attached at once).
    seen = {change for u in updates for change in u.changes}
    assert LiveChange.CARD_ADDED in seen


def test_a_revoked_card_in_the_vehicle_shows_as_alert_while_the_vehicle_is_there() -> None:
    booth = Booth()
    booth.feed(arrive(T0), reads(REVOKED, T0 + 0.5, T0 + 4.0, every=0.25))
    assert booth.updates[-1].decision.recommendation is Recommendation.ALERT
    assert booth.updates[-1].phase is LivePhase.UPDATED


def test_the_departure_closes_the_live_crossing_with_the_final_decision_and_number() -> None:
    booth = Booth()
    booth.feed(arrive(T0), reads(CARD_A, T0 + 0.5, T0 + 4.0, every=0.25), depart(T0 + 4.5))
    before_confirm = booth.updates[-1]
    assert before_confirm.phase is not LivePhase.CLOSED
    closing = booth.idle(T0 + 4.5, T0 + 5.5)
    assert [u.phase for u in closing] == [LivePhase.CLOSED]
    [closed] = closing
    assert closed.number == 1
    assert closed.changes[-1] is LiveChange.CLOSED
    assert not closed.provisional
    assert closed.pending == ()
    assert closed.revision == before_confirm.revision + 1
    assert closed.decision.recommendation is Recommendation.EXPEDITE
    assert closed.decision.crossing.closed_at == pytest.approx(T0 + 4.5)
    assert booth.live.showing is None


def test_the_next_vehicle_opens_under_the_next_number_at_revision_one() -> None:
    booth = Booth()
    booth.feed(arrive(T0), reads(CARD_A, T0 + 0.5, T0 + 3.0), depart(T0 + 3.5))
    booth.idle(T0 + 3.5, T0 + 6.0)
    [opened] = booth.feed(arrive(T0 + 6.0))
    assert (opened.number, opened.revision, opened.phase) == (2, 1, LivePhase.OPENED)


def test_a_crossing_that_opens_and_closes_between_two_refreshes_is_shown_opened_then_closed() -> (
    None
):
    live = LiveCrossings()
    booth = Booth()
    booth.engine.handle(arrive(T0))
    for r in reads(CARD_A, T0 + 0.5, T0 + 3.0):
        booth.engine.handle(r)
    [decision] = booth.engine.handle(Tick(T0 + 310.0))  # closed by the longest stay
    updates = live.closed(1, decision)
    assert [u.phase for u in updates] == [LivePhase.OPENED, LivePhase.CLOSED]
    assert [u.revision for u in updates] == [1, 2]
    assert updates[1].changes == (LiveChange.CLOSED,)


def test_a_restored_crossing_resumes_as_an_update_that_says_so() -> None:
    booth = Booth()
    booth.feed(arrive(T0), reads(CARD_A, T0 + 0.5, T0 + 2.0))
    restarted = LiveCrossings()
    restarted.resume(1)
    current = booth.engine.current(T0 + 2.0)
    assert current is not None
    update = restarted.view(*current, T0 + 2.0)
    assert update is not None
    assert (update.phase, update.changes, update.revision) == (
        LivePhase.UPDATED,
        (LiveChange.RESUMED,),
        1,
    )
    # A vehicle that left while the agent was down: its closed event says it resumed too.
    other = LiveCrossings()
    other.resume(1)
    [decision] = booth.engine.shutdown(T0 + 3.0)
    [closed] = other.closed(1, decision)
    assert closed.changes == (LiveChange.RESUMED, LiveChange.CLOSED)


def test_a_card_that_turns_out_to_be_the_next_vehicles_leaves_this_crossing_as_removed() -> None:
    """Two vehicles on a loop that never cleared between them: the second one's card is first
    shown on the crossing at the booth (uncertain, it came late), then the cards tell the two
    vehicles apart: the first closes without it, the second opens with it."""
    booth = Booth()
    booth.feed(arrive(T0))
    booth.feed(
        in_time_order(
            reads(CARD_A, T0 + 0.5, T0 + 6.0, every=0.25),
            reads(CARD_B, T0 + 10.0, T0 + 16.0, every=0.25, rssi=-48.0),
        )
    )
    first = [u for u in booth.updates if u.number == 1]
    shown_b = [u for u in first if CARD_B in {m.observation.ref for m in u.decision.matches}]
    assert shown_b, "the late card was never shown on the first crossing"
    assert shown_b[0].decision.recommendation is Recommendation.REFER
    closed = first[-1]
    assert closed.phase is LivePhase.CLOSED
    assert LiveChange.CARD_REMOVED in closed.changes
    assert [m.observation.ref for m in closed.decision.matches] == [CARD_A]
    second = [u for u in booth.updates if u.number == 2]
    assert second[0].phase is LivePhase.OPENED
    assert [m.observation.ref for m in second[0].decision.matches] == [CARD_B]


def test_pending_says_what_may_still_change_the_view() -> None:
    booth = Booth()
    booth.feed(arrive(T0), read(T0 + 0.5, CARD_A))  # one read: not yet known to be in it
    update = booth.updates[-1]
    assert [m.observation.association for m in update.decision.matches] == [Association.UNCERTAIN]
    assert update.pending == (Pending.VEHICLE_AT_BOOTH, Pending.CARDS_UNCERTAIN)
    booth.feed(reads(CARD_A, T0 + 1.0, T0 + 3.0, every=0.25), depart(T0 + 3.2))
    assert booth.engine.correlator.departure_pending
    current = booth.engine.current(T0 + 3.2)
    assert current is not None
    again = LiveCrossings().view(*current, T0 + 3.2, departing=True)
    assert again is not None
    assert again.pending == (Pending.DEPARTURE_CONFIRMING,)


def test_changes_between_names_each_kind_of_change_once_in_a_fixed_order() -> None:
    booth = Booth()
    booth.feed(arrive(T0), reads(CARD_A, T0 + 0.5, T0 + 4.0, every=0.25))
    decision = booth.updates[-1].decision
    before = Summary.of(decision)
    match = decision.matches[0]
    uncertain = dataclasses.replace(
        match,
        observation=dataclasses.replace(match.observation, association=Association.UNCERTAIN),
    )
    after = dataclasses.replace(
        Summary.of(dataclasses.replace(decision, matches=(uncertain,))),
        recommendation=Recommendation.REFER,
        reasons=(Reason.CARD_ASSOCIATION_UNCERTAIN,),
    )
    assert changes_between(before, after) == (
        LiveChange.CARD_UNCERTAIN,
        LiveChange.RECOMMENDATION_CHANGED,
        LiveChange.REASONS_CHANGED,
    )
    assert changes_between(before, before) == ()
    emptied = dataclasses.replace(before, cards=())
    assert changes_between(before, emptied) == (LiveChange.CARD_REMOVED,)
    assert changes_between(emptied, before) == (LiveChange.CARD_ADDED,)
    revoked = dataclasses.replace(
        before, cards=(dataclasses.replace(before.cards[0], result="revoked"),)
    )
    assert changes_between(before, revoked) == (LiveChange.CARD_RESULT_CHANGED,)
    unseen = dataclasses.replace(before, vehicle_detected=False)
    assert changes_between(unseen, before) == (LiveChange.VEHICLE_DETECTED,)
    assert changes_between(before, unseen) == ()  # a vehicle once detected stays so
    read_plate = dataclasses.replace(before, plate_text="ABC123", plate_match=PlateMatchKind.EXACT)
    assert changes_between(before, read_plate) == (LiveChange.PLATE_READ,)
    revoted = dataclasses.replace(read_plate, plate_text="A8C123")
    assert changes_between(read_plate, revoted) == (LiveChange.PLATE_CHANGED,)
    rematched = dataclasses.replace(read_plate, plate_match=PlateMatchKind.LOOKALIKE)
    assert changes_between(read_plate, rematched) == (LiveChange.PLATE_CHANGED,)
