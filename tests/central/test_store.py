"""Batches into PostgreSQL: each event once, the watermark over contiguous seqs, gaps opened and
closed, conflicts quarantined — the same with either write mode."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from central import messages
from central.messages import LaneKey, MessageReader, Record
from central.store import IngestStore, WriteMode
from tests.central.events import PREFIX, crossing_event, encode, jpeg, topics

READER = MessageReader(PREFIX)
LANE = topics("P1", "L1")
KEY = LaneKey("P1", "L1")


@pytest.fixture(params=list(WriteMode), ids=lambda mode: mode.value)
def store(request: pytest.FixtureRequest, dsn: str) -> Iterator[IngestStore]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield IngestStore(connection, write_mode=request.param)


class Events:
    """The lane's events, each built once so that a re-send is byte for byte the same."""

    def __init__(self) -> None:
        self._made: dict[int, bytes] = {}

    def __call__(self, *seqs: int) -> list[Record]:
        for seq in seqs:
            self._made.setdefault(seq, encode(crossing_event("P1", "L1", seq)))
        return [READER.read(LANE.crossing, self._made[seq]) for seq in seqs]


def write(store: IngestStore, records: list[Record]):  # type: ignore[no-untyped-def]
    return store.write(records, datetime.now(UTC))


def scalar(store: IngestStore, query: str) -> object:
    row = store.connection.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def test_a_redelivered_event_is_stored_once_and_counted_as_a_duplicate(store: IngestStore) -> None:
    events = Events()
    first = write(store, events(1, 2, 2))
    again = write(store, events(1, 2, 3))
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (2, 1, 1, 2)
    assert scalar(store, "SELECT count(*) FROM crossings") == 3
    assert scalar(store, "SELECT duplicates FROM lanes") == 3
    assert again.watermarks == {KEY: 3}


def test_a_gap_opens_when_a_later_seq_arrives_first_and_closes_when_the_missing_ones_arrive(
    store: IngestStore,
) -> None:
    events = Events()
    opened = write(store, events(1, 2, 5, 7))
    assert (opened.watermarks, opened.gaps_opened) == ({KEY: 2}, 2)
    assert store.connection.execute(
        "SELECT first_seq, last_seq FROM gaps WHERE closed_at IS NULL ORDER BY 1"
    ).fetchall() == [(3, 4), (6, 6)]
    partly = write(store, events(4, 3))
    assert (partly.watermarks, partly.gaps_closed) == ({KEY: 5}, 1)
    closed = write(store, events(6))
    assert (closed.watermarks, closed.gaps_closed) == ({KEY: 7}, 1)
    assert scalar(store, "SELECT count(*) FROM gaps WHERE closed_at IS NULL") == 0
    assert scalar(store, "SELECT count(*) FROM lane_seqs_ahead") == 0


def test_another_event_claiming_a_stored_seq_is_quarantined_never_stored(
    store: IngestStore,
) -> None:
    events = Events()
    write(store, events(1, 2, 4))
    below = READER.read(
        LANE.crossing,
        encode(crossing_event("P1", "L1", 2, closed_at=datetime(2026, 1, 1, tzinfo=UTC))),
    )
    ahead = READER.read(
        LANE.crossing,
        encode(crossing_event("P1", "L1", 4, closed_at=datetime(2026, 1, 2, tzinfo=UTC))),
    )
    result = write(store, [below, ahead])
    assert (result.stored, result.quarantined) == (0, 2)
    assert result.refusals == {messages.SEQ_CONFLICT: 2}
    assert scalar(store, "SELECT count(*) FROM crossings") == 3
    assert scalar(store, "SELECT quarantined FROM lanes") == 2


def test_refusals_images_status_and_availability_are_stored_in_the_same_transaction(
    store: IngestStore,
) -> None:
    records: list[Record] = [
        READER.read(LANE.crossing, b"not json"),
        READER.read(LANE.plate_image, jpeg(1)),
        READER.read(LANE.plate_image, jpeg(1)),
        READER.read(LANE.availability, b"online"),
        READER.read("elsewhere/topic", b"x"),
    ]
    result = write(store, records)
    assert (result.quarantined, result.images, result.availabilities) == (2, 1, 1)
    assert store.connection.execute(
        "SELECT reason, port_id FROM quarantine ORDER BY id"
    ).fetchall() == [
        (messages.NOT_JSON, "P1"),
        (messages.TOPIC_UNKNOWN, None),
    ]
    assert scalar(store, "SELECT availability FROM lanes") == "online"


def test_an_event_whose_lane_clock_is_outside_every_partition_is_kept_in_the_default_partition(
    store: IngestStore,
) -> None:
    far = READER.read(
        LANE.crossing,
        encode(crossing_event("P1", "L1", 1, closed_at=datetime(2031, 5, 5, tzinfo=UTC))),
    )
    assert write(store, [far]).stored == 1
    assert scalar(store, "SELECT count(*) FROM crossings_default") == 1


def test_an_event_id_reused_by_another_lane_is_quarantined_and_the_rest_of_the_batch_stored(
    store: IngestStore,
) -> None:
    original = crossing_event("P1", "L1", 1)
    write(store, [READER.read(LANE.crossing, encode(original))])
    reused = crossing_event("P1", "L2", 1)
    reused["event_id"], reused["closed_at"] = original["event_id"], original["closed_at"]
    other = topics("P1", "L2")
    result = write(
        store,
        [
            READER.read(other.crossing, encode(reused)),
            READER.read(other.crossing, encode(crossing_event("P1", "L2", 2))),
        ],
    )
    assert (result.stored, result.quarantined) == (1, 1)
    assert result.refusals == {messages.EVENT_ID_CONFLICT: 1}
    assert store.connection.execute(
        "SELECT lane_id, seq FROM crossings ORDER BY lane_id, seq"
    ).fetchall() == [("L1", 1), ("L2", 2)]
    assert result.watermarks == {LaneKey("P1", "L2"): 0}  # seq 1 of L2 is still missing


def test_text_with_copy_and_array_syntax_is_stored_exactly(store: IngestStore) -> None:
    """Backslashes, quotes, tabs, newlines, braces, commas and 'NULL' survive either write mode
    (COPY text is built by the store itself)."""
    event = crossing_event("P1", "L1", 1)
    event["plate"]["formats"] = ["tab\there", "back\\slash", 'quote"d', "new\nline\r"]
    pretty = json.dumps(event, indent="\t").replace("\n", "\r\n").encode()  # tabs, CR LF
    valid = READER.read(LANE.crossing, pretty)
    assert isinstance(valid, messages.Crossing)
    awkward = ('a"b', "c\\d", "tab\tx", "NULL", "{x,y}", "", "new\nline")
    crossing = dataclasses.replace(
        valid, reasons=awkward, card_refs=awkward[::-1], plate_text="p\\l\tate\n"
    )
    assert write(store, [crossing]).stored == 1
    row = store.connection.execute(
        "SELECT reasons, card_refs, plate_text, payload, seq, event_id::text, closed_at"
        " FROM crossings"
    ).fetchone()
    assert row == (
        list(awkward),
        list(awkward[::-1]),
        "p\\l\tate\n",
        event,
        1,
        event["event_id"],
        crossing.closed_at,
    )
