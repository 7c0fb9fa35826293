"""Reading lane messages: schema by the payload's own ``schema`` id, lane by the topic, refusals
with a reason and a detail that never quotes a value."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest

from agent.status import StatusBoard
from agent.wire.schema import load_schema
from central import messages
from central.messages import Availability, Crossing, LaneStatus, MessageReader, PlateImage, Refused
from tests.central.events import (
    PREFIX,
    SCHEMA_V1,
    crossing_event,
    encode,
    jpeg,
    status_document,
    topics,
)

READER = MessageReader(PREFIX)
LANE = topics("SYS-0250", "L03")


def refusal(topic: str, payload: bytes) -> Refused:
    record = READER.read(topic, payload)
    assert isinstance(record, Refused), record
    return record


def test_a_valid_crossing_event_is_read_into_its_core_fields_and_kept_whole() -> None:
    event = crossing_event("SYS-0250", "L03", 7, cards=2, plate_image=jpeg(1))
    record = READER.read(LANE.crossing, encode(event))
    assert isinstance(record, Crossing)
    assert (record.lane.port_id, record.lane.lane_id, record.seq) == ("SYS-0250", "L03", 7)
    assert record.event_id == uuid.UUID(event["event_id"])
    assert record.card_refs == tuple(card["ref"] for card in event["cards"])
    assert record.plate_text == event["plate"]["text"]
    assert record.plate_image_sha256 == event["plate"]["image_sha256"]
    assert json.loads(record.payload) == event


def test_a_payload_naming_another_lane_than_its_topic_is_refused_as_a_topic_mismatch() -> None:
    forged = encode(crossing_event("SYS-0250", "L04", 1))
    refused = refusal(LANE.crossing, forged)
    assert refused.reason == messages.TOPIC_MISMATCH
    assert refused.detail == "payload names lane SYS-0250/L04, the topic is lane SYS-0250/L03"
    assert refused.payload == forged


def test_an_invalid_event_is_refused_naming_the_field_and_rule_but_never_the_value() -> None:
    event = crossing_event("SYS-0250", "L03", 1)
    card_ref = event["cards"][0]["ref"]
    event["cards"][0]["ref"] = card_ref.lower()  # the schema wants upper-case hex
    event["seq"] = 0
    refused = refusal(LANE.crossing, encode(event))
    assert refused.reason == messages.SCHEMA_INVALID
    assert "cards/0/ref: fails 'pattern'" in refused.detail
    assert "seq: fails 'minimum'" in refused.detail
    assert card_ref.lower() not in refused.detail


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not utf-8", messages.NOT_JSON),
        (b"{not json", messages.NOT_JSON),
        (b"[1, 2]", messages.NOT_JSON),
        (b'{"schema": "lane-agent/crossing-event/1", "seq": NaN}', messages.NOT_JSON),
        (b'{"schema": "lane-agent/crossing-event/1", "seq": 1e999999}', messages.NOT_JSON),
        (b'{"schema": "lane-agent/crossing-event/1", "x": "\\ud800"}', messages.NOT_JSON),
        (b'{"seq": 1}', messages.SCHEMA_MISSING),
        (b'{"schema": "lane-agent/crossing-event/99"}', messages.SCHEMA_UNKNOWN),
        (b'{"schema": "lane-agent/status/1"}', messages.SCHEMA_WRONG_KIND),
    ],
)
def test_what_is_not_a_known_crossing_event_is_refused_with_its_reason(
    payload: bytes, reason: str
) -> None:
    assert refusal(LANE.crossing, payload).reason == reason


def test_a_nul_character_postgresql_cannot_store_is_refused_before_the_database() -> None:
    event = crossing_event("SYS-0250", "L03", 1)
    event["cards"][0]["holder_ref"] = "H-\u0000"
    assert refusal(LANE.crossing, encode(event)).reason == messages.UNSTORABLE_TEXT


@pytest.mark.parametrize(
    "topic",
    [
        "lane-agent/v1/SYS-0250/L03/crossing/extra",
        "lane-agent/v1/SYS-0250/crossing",
        "lane-agent/v2/SYS-0250/L03/crossing",
        "lane-agent/v1/SYS-0250/L03/ack",
    ],
)
def test_a_topic_that_is_not_a_lane_topic_is_refused(topic: str) -> None:
    assert (
        refusal(topic, encode(crossing_event("SYS-0250", "L03", 1))).reason
        == messages.TOPIC_UNKNOWN
    )


def test_status_availability_and_plate_images_are_read_and_checked() -> None:
    status = READER.read(
        LANE.status,
        encode(
            status_document(
                "SYS-0250", "L03", depth=4, last_seq=9, acked_seq=5, faults=("outbox_full",)
            )
        ),
    )
    assert isinstance(status, LaneStatus)
    assert (status.outbox_depth, status.lane_last_seq, status.lane_acked_seq) == (4, 9, 5)
    assert (status.cache_version, status.faults) == (41, ("outbox_full",))
    assert (
        refusal(LANE.status, encode(status_document("SYS-0250", "L09"))).reason
        == messages.TOPIC_MISMATCH
    )
    assert READER.read(LANE.availability, b"offline") == Availability(
        LANE.availability, status.lane, "offline"
    )
    assert refusal(LANE.availability, b"maybe").reason == messages.AVAILABILITY_INVALID
    image = READER.read(LANE.plate_image, jpeg(3))
    assert isinstance(image, PlateImage)
    assert refusal(LANE.plate_image, b"GIF89a").reason == messages.NOT_JPEG


def test_the_status_document_the_agent_builds_validates_against_the_shipped_status_schema() -> None:
    board = StatusBoard({"port_id": "SYS-0250", "lane_id": "L03", "agent": "0.1.0"})
    board.contribute(
        "outbox",
        lambda: {
            "depth": 2,
            "oldest_unsent_age_s": 1.25,
            "rows": 5,
            "last_seq": {"crossing": 9},
            "acked_seq": {"crossing": 4},
        },
    )
    board.contribute("cache", lambda: {"bundle_version": None, "age_s": None, "stale": True})
    board.raise_fault("outbox_error", "reading rows failed")
    record = READER.read(LANE.status, board.encode())
    assert isinstance(record, LaneStatus), record
    assert record.faults == ("outbox_error",)


def test_the_compiled_validator_agrees_with_the_reference_jsonschema_implementation() -> None:
    """jsonschema-rs runs in the ingest for speed; the pure-Python jsonschema is the reference."""
    schema = load_schema(SCHEMA_V1)  # the version the events built here name
    reference = jsonschema.Draft202012Validator(schema)
    variants = []
    for seq in range(1, 30):
        event = crossing_event("SYS-0250", "L03", seq, cards=seq % 3)
        if seq % 4 == 1:
            event["recommendation"] = "WAVE_THROUGH"
        if seq % 5 == 2:
            event["cards"] = [{"ref": "E280"}]
        if seq % 7 == 3:
            event["plate"] = None
        if seq % 6 == 4:
            event["extra"] = True
        variants.append(event)
    for event in variants:
        read = READER.read(LANE.crossing, encode(event))
        assert isinstance(read, Crossing) == reference.is_valid(event), event
