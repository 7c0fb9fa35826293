"""The crossing event on the wire: schema-valid for every decision, time-ordered ids, no extras."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime

import jsonschema
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
    Crossing,
    LoopAnomaly,
    OpenedBy,
    SetAsideCard,
)
from agent.lane.credentials import Credential, CredentialStatus, DocumentType, Program
from agent.lane.policy import LanePolicy, LaneType, Reason, decide
from agent.wire.crossing_event import (
    CacheInfo,
    LaneIdentity,
    build_crossing_event,
    encode,
    iso,
    uuid7,
)
from agent.wire.live_event import crossing_id
from agent.wire.schema import load_schema

SCHEMA = load_schema("lane-agent/crossing-event/2")
LANE = LaneIdentity(
    port_id="SYS-0250", lane_id="L03", lane_type=LaneType.TRUSTED_TRAVELLER, agent_version="0.1.0"
)
AT = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
CROSSING_ID = crossing_id(LANE.port_id, LANE.lane_id, 1, AT - 4.5)
POLICY = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}))
KNOWN = Credential(
    ref="E280689400005003A4B1C201",
    document_type=DocumentType.TRUSTED_TRAVELLER_CARD,
    program=Program.SENTRI,
    status=CredentialStatus.REVOKED,
    valid_from=datetime(2024, 1, 1, tzinfo=UTC),
    valid_until=datetime(2029, 1, 1, tzinfo=UTC),
    holder_ref="H-0001",
)


def crossing(
    refs: list[str], *, vehicle: bool = True, closed_by: ClosedBy = ClosedBy.DEPARTURE
) -> Crossing:
    return Crossing(
        opened_at=AT - 4.5,
        closed_at=AT,
        opened_by=OpenedBy.LOOP,
        closed_by=closed_by,
        vehicle_detected=vehicle,
        cards=tuple(
            CardObservation(
                ref=r,
                reads=2,
                first_at=AT - 3,
                last_at=AT - 2,
                best_rssi_dbm=-51.25,
                antennas=(1, 2),
                tid="E2003412",
            )
            for r in refs
        ),
    )


@pytest.mark.parametrize(
    "decision_input",
    [
        crossing([]),
        crossing(
            [KNOWN.ref, "E2806894000050039999F001"], vehicle=False, closed_by=ClosedBy.MAX_DURATION
        ),
        crossing(["E2806894000050039999F001"], closed_by=ClosedBy.NEXT_ARRIVAL),
    ],
)
def test_events_for_every_kind_of_decision_validate_against_the_schema(
    decision_input: Crossing,
) -> None:
    decision = decide(decision_input, {KNOWN.ref: KNOWN}.get, POLICY)
    event = build_crossing_event(
        decision,
        seq=7,
        event_id=uuid7(),
        crossing_id=CROSSING_ID,
        lane=LANE,
        cache=CacheInfo(data_version="sha256:ab", imported_at=datetime(2026, 11, 1, tzinfo=UTC)),
        committed_at=AT + 0.002,
    )
    jsonschema.validate(json.loads(encode(event)), SCHEMA)


def test_every_reason_and_closed_by_is_allowed_by_the_schema() -> None:
    """A new reason code in the core without a schema update would break central's consumers."""
    assert SCHEMA["properties"]["reasons"]["items"]["enum"] == [r.value for r in Reason]
    assert SCHEMA["properties"]["closed_by"]["enum"] == [c.value for c in ClosedBy]


def test_event_carries_match_results_but_not_the_chip_id() -> None:
    decision = decide(crossing([KNOWN.ref]), {KNOWN.ref: KNOWN}.get, POLICY)
    event = build_crossing_event(
        decision,
        seq=1,
        event_id=uuid7(),
        crossing_id=CROSSING_ID,
        lane=LANE,
        cache=CacheInfo(None, None),
        committed_at=AT,
    )
    (card,) = event["cards"]
    assert card == {
        "ref": KNOWN.ref,
        "result": "revoked",
        "document_type": "TRUSTED_TRAVELLER_CARD",
        "program": "SENTRI",
        "holder_ref": "H-0001",
        "valid_until": "2029-01-01T00:00:00.000Z",
        "reads": 2,
        "best_rssi_dbm": -51.2,
        "antennas": [1, 2],
        "first_read_at": iso(AT - 3),
        "association": "attached",
        "evidence": {"rule": "strong_at_booth"},
    }
    assert "E2003412" not in encode(event).decode()
    assert event["recommendation"] == "ALERT"
    assert event["opened_at"] == "2026-11-28T11:59:55.500Z"


def test_event_carries_the_cache_version_and_age_the_decision_used() -> None:
    stale = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}), max_cache_age_s=60)
    decision = decide(crossing([KNOWN.ref]), {KNOWN.ref: KNOWN}.get, stale, AT - 90.25)
    info = CacheInfo("bundle:7", datetime(2026, 11, 28, tzinfo=UTC), bundle_version=7)
    event = build_crossing_event(
        decision,
        seq=1,
        event_id=uuid7(),
        crossing_id=CROSSING_ID,
        lane=LANE,
        cache=info,
        committed_at=AT,
    )
    jsonschema.validate(event, SCHEMA)
    assert event["cache"] == {
        "data_version": "bundle:7",
        "imported_at": "2026-11-28T00:00:00.000Z",
        "bundle_version": 7,
        "age_s": 90.25,
    }
    assert "CACHE_STALE" in event["reasons"]


def test_uuid7_is_version_7_and_ordered_by_time() -> None:
    first = uuid7(now_ns=1_700_000_000_000_000_000)
    later = uuid7(now_ns=1_700_000_000_001_000_000)
    assert first.version == 7
    assert first.variant == uuid.RFC_4122
    assert str(first) < str(later)
    assert first.int >> 80 == 1_700_000_000_000
    assert len({uuid7() for _ in range(1000)}) == 1000


def test_encoding_is_compact_sorted_utf8() -> None:
    assert encode({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_event_explains_each_cards_association_and_lists_the_cards_set_aside() -> None:
    """What occupant association decided, and from what, travels with the crossing."""
    stay = Stay(AT - 10, AT)
    settings = AssociationSettings()
    attached = evidence_of([Read(AT - 8 + i, -50.0, 1) for i in range(6)], stay, settings)
    faint = evidence_of([Read(AT - 1.5, -78.0, 2), Read(AT - 0.8, -72.0, 2)], stay, settings)
    decision = decide(
        dataclasses.replace(
            crossing([KNOWN.ref]),
            cards=(
                CardObservation(
                    ref=KNOWN.ref,
                    reads=6,
                    first_at=AT - 8,
                    last_at=AT - 3,
                    best_rssi_dbm=-50.0,
                    antennas=(1,),
                    tid=None,
                    association=Association.UNCERTAIN,
                    rule=Rule.SINGLE_READ,
                    evidence=attached,
                ),
            ),
            set_aside=(
                SetAsideCard(
                    "E2801160600002000000FF01", Association.NEXT_VEHICLE, Rule.LATE_APPROACH, faint
                ),
            ),
            anomalies=(LoopAnomaly.CHATTER,),
        ),
        {KNOWN.ref: KNOWN}.get,
        POLICY,
    )
    event = build_crossing_event(
        decision,
        seq=3,
        event_id=uuid7(),
        crossing_id=CROSSING_ID,
        lane=LANE,
        cache=CacheInfo(None, None),
        committed_at=AT,
    )
    jsonschema.validate(event, SCHEMA)
    (card,) = event["cards"]
    assert card["association"] == "uncertain"
    assert card["evidence"] == {
        "rule": "single_read",
        "reads": 6,
        "reads_at_booth": 6,
        "onset_s": 2.0,
        "end_gap_s": 3.0,
        "spread": 0.6,
        "peak_rssi_dbm": -50.0,
        "strong_reads": 6,
        "median_rssi_dbm": -50.0,
        "rise_db": 0.0,
        "zones": ["booth"],
    }
    assert event["set_aside"] == [
        {
            "ref": "E2801160600002000000FF01",
            "association": "next_vehicle",
            "evidence": {
                "rule": "late_approach",
                "reads": 2,
                "reads_at_booth": 2,
                "onset_s": 8.5,
                "end_gap_s": 0.8,
                "spread": 0.2,
                "peak_rssi_dbm": -72.0,
                "strong_reads": 0,
                "median_rssi_dbm": -75.0,
                "rise_db": 6.0,
                "zones": ["booth"],
            },
        }
    ]
    assert event["loop_anomalies"] == ["chatter"]
    assert "CARD_ASSOCIATION_UNCERTAIN" in event["reasons"]
    assert event["recommendation"] == "REFER"


def test_event_times_are_the_agents_wall_clock_converted_from_lane_time() -> None:
    decision = decide(crossing([KNOWN.ref]), {KNOWN.ref: KNOWN}.get, POLICY)
    event = build_crossing_event(
        decision,
        seq=1,
        event_id=uuid7(),
        crossing_id=CROSSING_ID,
        lane=LANE,
        cache=CacheInfo(None, None),
        committed_at=AT,
        wall=lambda lane: lane + 2.0,  # the controller's clock runs 2 s behind the agent's
    )
    assert event["closed_at"] == iso(AT + 2.0)
    assert event["cards"][0]["first_read_at"] == iso(AT - 3 + 2.0)
