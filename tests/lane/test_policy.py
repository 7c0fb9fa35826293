"""Matching rules and lane policy: every card result, every reason code, both lane types."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agent.lane.association import (
    Association,
    AssociationSettings,
    Read,
    Rule,
    Stay,
    evidence_of,
)
from agent.lane.correlator import (
    CardObservation,
    ClosedBy,
    CorrelationSettings,
    Crossing,
    LoopAnomaly,
    OpenedBy,
    SetAsideCard,
)
from agent.lane.credentials import (
    Credential,
    CredentialStatus,
    DocumentType,
    Program,
    RegisteredVehicle,
)
from agent.lane.engine import LaneEngine
from agent.lane.events import LoopChanged, TagRead, Tick
from agent.lane.policy import (
    CardResult,
    LanePolicy,
    LaneType,
    Reason,
    Recommendation,
    decide,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
TRUSTED = LanePolicy(
    lane_type=LaneType.TRUSTED_TRAVELLER,
    allowed_programs=frozenset({Program.SENTRI, Program.NEXUS}),
)
GENERAL = LanePolicy(lane_type=LaneType.GENERAL, allowed_programs=frozenset({Program.SENTRI}))


def credential(
    ref: str,
    *,
    status: CredentialStatus = CredentialStatus.ACTIVE,
    program: Program = Program.SENTRI,
    valid_from: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    valid_until: datetime = datetime(2029, 1, 1, tzinfo=UTC),
) -> Credential:
    return Credential(
        ref=ref,
        document_type=DocumentType.TRUSTED_TRAVELLER_CARD,
        program=program,
        status=status,
        valid_from=valid_from,
        valid_until=valid_until,
        holder_ref=f"H-{ref[-4:]}",
        vehicles=(RegisteredVehicle(plate="ABC1234", jurisdiction="CA"),),
    )


VALID = credential("AA000001")
REVOKED = credential("AA000002", status=CredentialStatus.REVOKED)
SUSPENDED = credential("AA000003", status=CredentialStatus.SUSPENDED)
EXPIRED = credential("AA000004", valid_until=datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
NOT_YET = credential("AA000005", valid_from=datetime(2026, 6, 1, 12, 0, 1, tzinfo=UTC))
GLOBAL_ENTRY = credential("AA000006", program=Program.GLOBAL_ENTRY)
NO_PROGRAM = credential("AA000007", program=Program.NONE)
UNKNOWN_REF = "AA0000FF"

CACHE = {c.ref: c for c in (VALID, REVOKED, SUSPENDED, EXPIRED, NOT_YET, GLOBAL_ENTRY, NO_PROGRAM)}


def crossing(
    *refs: str,
    vehicle: bool = True,
    closed_by: ClosedBy = ClosedBy.DEPARTURE,
    opened_by: OpenedBy = OpenedBy.LOOP,
    uncertain: tuple[str, ...] = (),
    anomalies: tuple[LoopAnomaly, ...] = (),
    set_aside: tuple[SetAsideCard, ...] = (),
) -> Crossing:
    cards = tuple(
        CardObservation(
            ref=ref,
            reads=3,
            first_at=NOW - 5,
            last_at=NOW - 1,
            best_rssi_dbm=-50,
            antennas=(1,),
            tid=None,
            association=Association.UNCERTAIN if ref in uncertain else Association.ATTACHED,
        )
        for ref in refs
    )
    return Crossing(
        opened_at=NOW - 10,
        closed_at=NOW,
        opened_by=opened_by,
        closed_by=closed_by,
        vehicle_detected=vehicle,
        cards=cards,
        anomalies=anomalies,
        set_aside=set_aside,
    )


@pytest.mark.parametrize(
    ("record", "ref", "result", "reason"),
    [
        (VALID, VALID.ref, CardResult.VALID, None),
        (None, UNKNOWN_REF, CardResult.UNKNOWN, Reason.UNKNOWN_CARD),
        (REVOKED, REVOKED.ref, CardResult.REVOKED, Reason.CARD_REVOKED),
        (SUSPENDED, SUSPENDED.ref, CardResult.SUSPENDED, Reason.CARD_SUSPENDED),
        (EXPIRED, EXPIRED.ref, CardResult.EXPIRED, Reason.CARD_EXPIRED),
        (NOT_YET, NOT_YET.ref, CardResult.NOT_YET_VALID, Reason.CARD_NOT_YET_VALID),
        (
            GLOBAL_ENTRY,
            GLOBAL_ENTRY.ref,
            CardResult.PROGRAM_NOT_ALLOWED,
            Reason.PROGRAM_NOT_ALLOWED,
        ),
        (NO_PROGRAM, NO_PROGRAM.ref, CardResult.PROGRAM_NOT_ALLOWED, Reason.PROGRAM_NOT_ALLOWED),
    ],
)
def test_each_card_result_maps_to_its_own_reason(
    record: Credential | None, ref: str, result: CardResult, reason: Reason | None
) -> None:
    decision = decide(crossing(ref), CACHE.get, TRUSTED)
    assert [m.result for m in decision.matches] == [result]
    assert decision.matches[0].credential == record
    assert decision.reasons == (() if reason is None else (reason,))


def test_trusted_lane_expedites_only_when_every_card_is_valid() -> None:
    assert decide(crossing(VALID.ref), CACHE.get, TRUSTED).recommendation is Recommendation.EXPEDITE
    mixed = decide(crossing(VALID.ref, UNKNOWN_REF), CACHE.get, TRUSTED)
    assert mixed.recommendation is Recommendation.REFER
    assert mixed.reasons == (Reason.UNKNOWN_CARD,)


@pytest.mark.parametrize(
    "ref", [UNKNOWN_REF, SUSPENDED.ref, EXPIRED.ref, NOT_YET.ref, GLOBAL_ENTRY.ref, NO_PROGRAM.ref]
)
def test_trusted_lane_refers_any_card_problem_short_of_revocation(ref: str) -> None:
    assert (
        decide(crossing(VALID.ref, ref), CACHE.get, TRUSTED).recommendation is Recommendation.REFER
    )


def test_revoked_card_alerts_in_both_lane_types_even_beside_valid_cards() -> None:
    for policy in (TRUSTED, GENERAL):
        decision = decide(crossing(VALID.ref, REVOKED.ref), CACHE.get, policy)
        assert decision.recommendation is Recommendation.ALERT
        assert Reason.CARD_REVOKED in decision.reasons


def test_no_card_read_is_referred_in_a_trusted_lane() -> None:
    decision = decide(crossing(), CACHE.get, TRUSTED)
    assert decision.recommendation is Recommendation.REFER
    assert decision.reasons == (Reason.NO_CARD_READ,)


def test_reads_without_a_vehicle_are_never_expedited() -> None:
    """A tag read alone never earns EXPEDITE: the loop must have seen a vehicle."""
    decision = decide(crossing(VALID.ref, vehicle=False), CACHE.get, TRUSTED)
    assert decision.recommendation is Recommendation.REFER
    assert decision.reasons == (Reason.NO_VEHICLE_DETECTED,)


@pytest.mark.parametrize("closed_by", [ClosedBy.MAX_DURATION, ClosedBy.NEXT_ARRIVAL])
def test_unseen_departure_is_referred_because_cards_may_belong_to_two_vehicles(
    closed_by: ClosedBy,
) -> None:
    decision = decide(crossing(VALID.ref, closed_by=closed_by), CACHE.get, TRUSTED)
    assert decision.recommendation is Recommendation.REFER
    assert decision.reasons == (Reason.DEPARTURE_NOT_SEEN,)


@pytest.mark.parametrize(
    "closed_by", [ClosedBy.DEPARTURE, ClosedBy.IDLE_TIMEOUT, ClosedBy.SHUTDOWN]
)
def test_seen_or_harmless_closes_add_no_reason(closed_by: ClosedBy) -> None:
    assert decide(crossing(VALID.ref, closed_by=closed_by), CACHE.get, TRUSTED).reasons == ()


def test_general_lane_is_informational_primary_with_reasons_and_ignores_programs() -> None:
    valid = decide(crossing(GLOBAL_ENTRY.ref), CACHE.get, GENERAL)
    assert valid.recommendation is Recommendation.PRIMARY
    assert valid.matches[0].result is CardResult.VALID
    problems = decide(crossing(UNKNOWN_REF, EXPIRED.ref), CACHE.get, GENERAL)
    assert problems.recommendation is Recommendation.PRIMARY
    assert problems.reasons == (Reason.UNKNOWN_CARD, Reason.CARD_EXPIRED)
    assert decide(crossing(), CACHE.get, GENERAL).recommendation is Recommendation.PRIMARY


def test_reasons_are_unique_and_in_declaration_order() -> None:
    decision = decide(
        crossing(EXPIRED.ref, UNKNOWN_REF, "AA0000FE", REVOKED.ref, vehicle=False),
        CACHE.get,
        TRUSTED,
    )
    assert decision.reasons == (
        Reason.UNKNOWN_CARD,
        Reason.CARD_REVOKED,
        Reason.CARD_EXPIRED,
        Reason.NO_VEHICLE_DETECTED,
    )


def test_validity_is_judged_at_the_crossing_close_not_at_the_read() -> None:
    """valid_until is exclusive: a card expiring at the close instant is expired."""
    assert decide(crossing(EXPIRED.ref), CACHE.get, TRUSTED).matches[0].result is CardResult.EXPIRED


def test_engine_turns_inputs_into_decisions_with_the_injected_lookup() -> None:
    looked_up: list[str] = []

    def lookup(ref: str) -> Credential | None:
        looked_up.append(ref)
        return CACHE.get(ref)

    engine = LaneEngine(CorrelationSettings(), TRUSTED, lookup)
    assert engine.handle(LoopChanged(at=NOW, loop_id=1, occupied=True)) == []
    for at in (1, 2, 3):
        assert engine.handle(TagRead(at=NOW + at, epc=VALID.ref, antenna=1, rssi_dbm=-40)) == []
    assert engine.handle(LoopChanged(at=NOW + 4, loop_id=1, occupied=False)) == []
    (decision,) = engine.handle(Tick(NOW + 5))
    assert decision.recommendation is Recommendation.EXPEDITE
    assert looked_up == [VALID.ref]
    assert engine.shutdown(NOW + 6) == []


def test_an_uncertain_card_makes_a_refer_with_its_own_reason_and_never_helps() -> None:
    decision = decide(crossing(VALID.ref, uncertain=(VALID.ref,)), CACHE.get, TRUSTED)
    assert decision.recommendation is Recommendation.REFER
    assert decision.reasons == (Reason.CARD_ASSOCIATION_UNCERTAIN,)
    assert decision.matches[0].result is CardResult.VALID  # matched and shown


def test_an_uncertain_revoked_card_is_no_alert_a_neighbours_card_must_not_raise_one() -> None:
    decision = decide(
        crossing(VALID.ref, REVOKED.ref, uncertain=(REVOKED.ref,)), CACHE.get, TRUSTED
    )
    assert decision.recommendation is Recommendation.REFER
    assert decision.reasons == (Reason.CARD_ASSOCIATION_UNCERTAIN,)
    assert [m.result for m in decision.matches] == [CardResult.VALID, CardResult.REVOKED]


def test_an_attached_revoked_card_still_alerts_next_to_an_uncertain_one() -> None:
    decision = decide(crossing(REVOKED.ref, VALID.ref, uncertain=(VALID.ref,)), CACHE.get, TRUSTED)
    assert decision.recommendation is Recommendation.ALERT
    assert decision.reasons == (Reason.CARD_REVOKED, Reason.CARD_ASSOCIATION_UNCERTAIN)


def test_cards_set_aside_as_another_lanes_or_the_next_vehicles_are_not_matched() -> None:
    evidence = evidence_of([Read(NOW - 2, -77.0, 1)], Stay(NOW - 10, NOW), AssociationSettings())
    aside = (
        SetAsideCard(REVOKED.ref, Association.OTHER_LANE, Rule.SHORT_WEAK_BURST, evidence),
        SetAsideCard(UNKNOWN_REF, Association.NEXT_VEHICLE, Rule.LATE_APPROACH, evidence),
    )
    looked_up: list[str] = []

    def lookup(ref: str) -> Credential | None:
        looked_up.append(ref)
        return CACHE.get(ref)

    decision = decide(crossing(VALID.ref, set_aside=aside), lookup, TRUSTED)
    assert decision.recommendation is Recommendation.EXPEDITE
    assert looked_up == [VALID.ref]


def test_a_vehicle_told_apart_by_its_cards_gets_no_expedite_but_nothing_against_it() -> None:
    split_off = crossing(
        VALID.ref, opened_by=OpenedBy.EVIDENCE, anomalies=(LoopAnomaly.SPLIT_BY_CARDS,)
    )
    decision = decide(split_off, CACHE.get, TRUSTED)
    assert (decision.recommendation, decision.reasons) == (
        Recommendation.PRIMARY,
        (Reason.LOOP_EDGE_MISSING,),
    )
    split_from = crossing(
        VALID.ref, closed_by=ClosedBy.EVIDENCE_SPLIT, anomalies=(LoopAnomaly.SPLIT_BY_CARDS,)
    )
    assert decide(split_from, CACHE.get, TRUSTED).reasons == (
        Reason.DEPARTURE_NOT_SEEN,
        Reason.LOOP_EDGE_MISSING,
    )
