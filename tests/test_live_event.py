"""The live crossing event on the wire: schema-valid in every phase, the crossing id stable and
shared with the final crossing, nothing in it the booth does not need."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest

from agent.lane.correlator import CorrelationSettings
from agent.lane.credentials import Credential, CredentialStatus, DocumentType, Program
from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, PlateSeen, Tick
from agent.lane.live import LiveChange, LiveCrossings, LivePhase, LiveUpdate, Pending
from agent.lane.plates import PlateCheck
from agent.lane.policy import LanePolicy, LaneType
from agent.wire.crossing_event import (
    CacheInfo,
    LaneIdentity,
    build_crossing_event,
    encode,
    uuid7,
)
from agent.wire.live_event import LIVE_SCHEMA_ID, build_live_event, crossing_id
from agent.wire.schema import load_schema
from agent.wire.topics import Topics, all_current_filter, all_live_filter
from tests.lane.kit import arrive, depart, reads

SCHEMA = load_schema(LIVE_SCHEMA_ID)
FINAL_SCHEMA = load_schema("lane-agent/crossing-event/2")
LANE = LaneIdentity("SYS-0250", "L03", LaneType.TRUSTED_TRAVELLER, "0.1.0")
CACHE = CacheInfo("sha256:ab", datetime(2026, 11, 1, tzinfo=UTC), bundle_version=4)
T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()
CARD = "E2801160000000000000000A"
CREDENTIAL = Credential(
    ref=CARD,
    document_type=DocumentType.TRUSTED_TRAVELLER_CARD,
    program=Program.SENTRI,
    status=CredentialStatus.ACTIVE,
    valid_from=datetime(2024, 1, 1, tzinfo=UTC),
    valid_until=datetime(2029, 1, 1, tzinfo=UTC),
    holder_ref="H-0001",
)
TID = "E2003412AABBCCDD"
"""The chip id the reader reports with each read: never in an event."""
WALL_OFFSET = 0.25
"""The agent's clock is this far ahead of lane time in these tests."""


def lane_run(*, camera: bool = False) -> list[LiveUpdate]:
    """One vehicle through the engine and the live tracker: every live update, closed last."""
    policy = LanePolicy(
        LaneType.TRUSTED_TRAVELLER,
        frozenset({Program.SENTRI}),
        plate_check=PlateCheck() if camera else None,
    )
    engine = LaneEngine(CorrelationSettings(), policy, {CARD: CREDENTIAL}.get, lambda: T0 - 60)
    live = LiveCrossings()
    updates: list[LiveUpdate] = []
    card_reads = [
        dataclasses.replace(r, tid=TID) for r in reads(CARD, T0 + 0.5, T0 + 4.0, every=0.25)
    ]
    inputs: list[LaneInput] = [arrive(T0), *card_reads, depart(T0 + 4.5)]
    if camera:
        plate = PlateSeen(at=T0 + 1.0, text="ABC1234", confidence=0.9, crop_jpeg=b"\xff\xd8crop")
        inputs[5:5] = [plate]
    for lane_input in [*inputs, Tick(T0 + 5.0)]:
        for decision in engine.handle(lane_input):
            updates.extend(live.closed(1, decision))
        current = engine.current(lane_input.at)
        if current is not None:
            update = live.view(*current, lane_input.at)
            if update is not None:
                updates.append(update)
    return updates


def event(update: LiveUpdate) -> dict[str, object]:
    built = build_live_event(
        update,
        lane=LANE,
        cache=CACHE,
        published_at=update.as_of + WALL_OFFSET + 0.003,
        wall=lambda lane_time: lane_time + WALL_OFFSET,
    )
    decoded: dict[str, object] = json.loads(encode(built))
    return decoded


@pytest.mark.parametrize("camera", [False, True], ids=["no camera", "camera"])
def test_every_live_event_of_a_vehicle_validates_against_the_schema(camera: bool) -> None:
    updates = lane_run(camera=camera)
    assert updates[0].phase is LivePhase.OPENED
    assert updates[-1].phase is LivePhase.CLOSED
    for update in updates:
        jsonschema.validate(event(update), SCHEMA, format_checker=jsonschema.FormatChecker())


def test_open_and_closed_events_differ_in_what_only_a_closed_crossing_has() -> None:
    updates = lane_run()
    opened, closed = event(updates[0]), event(updates[-1])
    assert (opened["phase"], opened["provisional"], opened["closed_at"], opened["closed_by"]) == (
        "opened",
        True,
        None,
        None,
    )
    assert opened["pending"] == [Pending.VEHICLE_AT_BOOTH.value]
    assert (closed["phase"], closed["provisional"], closed["closed_by"], closed["pending"]) == (
        "closed",
        False,
        "departure",
        [],
    )
    assert closed["changes"][-1] == LiveChange.CLOSED.value
    assert closed["closed_at"] == "2026-11-28T12:00:04.750Z"  # lane time + the agent's offset
    assert opened["opened_at"] == "2026-11-28T12:00:00.250Z"
    assert closed["recommendation"] == "EXPEDITE"


def test_every_event_of_a_crossing_and_its_final_crossing_carry_one_id() -> None:
    updates = lane_run()
    ids = {event(update)["crossing_id"] for update in updates}
    assert len(ids) == 1
    [shown] = ids
    final = build_crossing_event(
        updates[-1].decision,
        seq=1,
        event_id=uuid7(),
        crossing_id=crossing_id(
            LANE.port_id, LANE.lane_id, updates[-1].number, updates[-1].decision.crossing.opened_at
        ),
        lane=LANE,
        cache=CACHE,
        committed_at=T0 + 5.0,
    )
    jsonschema.validate(json.loads(encode(final)), FINAL_SCHEMA)
    assert final["crossing_id"] == shown
    assert uuid.UUID(str(shown)).version == 5


def test_the_crossing_id_depends_on_the_lane_the_number_and_the_opening_time_only() -> None:
    base = crossing_id("SYS-0250", "L03", 12, T0)
    assert base == crossing_id("SYS-0250", "L03", 12, T0 + 0.0001)  # same millisecond
    assert (
        len(
            {
                base,
                crossing_id("SYS-0250", "L04", 12, T0),
                crossing_id("SYS-0251", "L03", 12, T0),
                crossing_id("SYS-0250", "L03", 13, T0),
                crossing_id("SYS-0250", "L03", 12, T0 + 0.002),  # numbering restarted on a new disk
            }
        )
        == 5
    )


def test_the_live_event_carries_no_chip_id_no_plate_image_and_no_set_aside_cards() -> None:
    updates = lane_run(camera=True)
    with_plate = [u for u in updates if u.decision.plate and u.decision.plate.vote]
    assert with_plate, "the plate was never voted"
    text = json.dumps(event(with_plate[-1]))
    assert TID not in text
    shown = event(with_plate[-1])
    assert "image_sha256" not in shown["plate"]
    assert "set_aside" not in shown
    assert set(shown) == set(SCHEMA["required"])


def test_the_schema_lists_every_phase_change_and_pending_value_of_the_core() -> None:
    properties = SCHEMA["properties"]
    assert properties["phase"]["enum"] == [phase.value for phase in LivePhase]
    assert properties["changes"]["items"]["enum"] == [change.value for change in LiveChange]
    assert properties["pending"]["items"]["enum"] == [pending.value for pending in Pending]


def test_live_topics_sit_beside_the_crossing_topic_of_the_lane() -> None:
    topics = Topics("lane-agent/v1", "SYS-0250", "L03")
    assert topics.live == "lane-agent/v1/SYS-0250/L03/live"
    assert topics.current == "lane-agent/v1/SYS-0250/L03/current"
    assert all_live_filter() == "lane-agent/v1/+/+/live"
    assert all_current_filter("ops/v1") == "ops/v1/+/+/current"


def test_the_cache_age_is_the_age_as_of_the_view() -> None:
    updates = lane_run()
    first = event(updates[0])
    assert first["cache"] == {"data_version": "sha256:ab", "bundle_version": 4, "age_s": 60.0}
    assert timedelta(seconds=float(event(updates[-1])["cache"]["age_s"])) > timedelta(seconds=60)
