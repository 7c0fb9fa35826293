"""``lane-central`` through its runner: the board, crossings and gaps as tables and JSON, schema
upgrades and status, and the errors a user meets first."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
import pytest
from click.testing import CliRunner, Result

from central.cli import main
from central.messages import MessageReader
from central.store import IngestStore
from tests.central.events import PREFIX, crossing_event, encode, jpeg, status_document, topics

READER = MessageReader(PREFIX)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def stored(dsn: str) -> dict[str, object]:
    """Lane P1/L1 with seqs 1, 2, 4 (a gap at 3), a plate image, a status; lane P1/L2 offline."""
    lane, other = topics("P1", "L1"), topics("P1", "L2")
    image = jpeg(7)
    events = [
        crossing_event("P1", "L1", seq, plate_image=image if seq == 4 else None)
        for seq in (1, 2, 4)
    ]
    records = [READER.read(lane.crossing, encode(event)) for event in events]
    records += [
        READER.read(lane.plate_image, image),
        READER.read(
            lane.status,
            encode(
                status_document(
                    "P1", "L1", depth=2, last_seq=4, acked_seq=2, faults=("outbox_error",)
                )
            ),
        ),
        READER.read(lane.availability, b"online"),
        READER.read(other.availability, b"offline"),
        READER.read(other.crossing, b"{broken"),
    ]
    with psycopg.connect(dsn, autocommit=True) as connection:
        IngestStore(connection).write(records, datetime.now(UTC))
    return {"card": events[0]["cards"][0]["ref"], "plate": events[2]["plate"]["text"]}


def test_lanes_prints_every_lane_with_state_watermark_gaps_outbox_and_faults(
    dsn: str, stored: dict[str, object]
) -> None:
    result = run("lanes", "--dsn", dsn)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "LANE",
        "STATE",
        "SEEN",
        "LAST",
        "CROSSING",
        "ACKED/HIGHEST",
        "GAPS",
        "OUTBOX",
        "CACHE",
        "FAULTS",
    ]
    assert lines[1].split()[:2] == ["P1/L1", "online"]
    assert "2/4" in lines[1]
    assert "1 (1 missing)" in lines[1]
    assert "2 unsent, 2 kept" in lines[1]
    assert lines[1].endswith("outbox_error")
    assert lines[2].split()[:2] == ["P1/L2", "offline"]
    assert lines[3] == "2 lane(s)"
    board = json.loads(run("lanes", "--dsn", dsn, "--json").output)
    assert [
        (row["lane_id"], row["acked_seq"], row["open_gaps"], row["quarantined"]) for row in board
    ] == [("L1", 2, 1, 0), ("L2", 0, 0, 1)]


def test_crossings_filters_by_card_plate_and_recommendation_and_links_the_plate_image(
    dsn: str, stored: dict[str, object]
) -> None:
    by_card = json.loads(
        run("crossings", "--dsn", dsn, "--card", str(stored["card"]).lower(), "--json").output
    )
    assert [row["seq"] for row in by_card] == [1]
    by_plate = json.loads(
        run("crossings", "--dsn", dsn, "--plate", str(stored["plate"]), "--json").output
    )
    assert [(row["seq"], row["plate_image_stored"]) for row in by_plate] == [(4, True)]
    table = run("crossings", "--dsn", dsn, "--lane", "L1")
    assert table.output.splitlines()[0].split()[:3] == ["CLOSED", "LANE", "SEQ"]
    assert table.output.splitlines()[-1] == "3 crossing(s)"
    assert str(stored["card"]) not in table.output  # tables show counts, not card numbers


def test_gaps_shows_the_open_gap_with_its_seqs(dsn: str, stored: dict[str, object]) -> None:
    result = run("gaps", "--dsn", dsn, "--open")
    assert result.output.splitlines()[1].split()[:2] == ["P1/L1", "3"]
    assert result.output.splitlines()[-1] == "1 gap(s), 1 open"
    quarantined = json.loads(run("quarantine", "--dsn", dsn, "--json").output)
    assert [(row["reason"], row["lane_id"]) for row in quarantined] == [("not_json", "L2")]


def test_db_upgrade_reports_what_it_applied_and_status_what_is_there(empty_dsn: str) -> None:
    first = run("db", "upgrade", "--dsn", empty_dsn, "--to", "1")
    assert first.output.splitlines()[0] == "applied 0001_ingest_tables"
    assert first.output.splitlines()[-1] == "schema version 0 -> 1"
    refused = run("lanes", "--dsn", empty_dsn)
    assert refused.exit_code == 78
    assert "run `lane-central db upgrade`" in refused.output
    status = run("db", "status", "--dsn", empty_dsn)
    assert "pending 0002_ops_views" in status.output
    second = run("db", "upgrade", "--dsn", empty_dsn)
    assert second.output.splitlines() == ["applied 0002_ops_views", "schema version 1 -> 2"]


def test_an_unreachable_database_exits_69_saying_what_to_check() -> None:
    result = run("lanes", "--dsn", "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert result.exit_code == 69
    assert result.output.startswith("error: cannot connect to PostgreSQL")
    assert "is PostgreSQL running and the DSN right (--dsn / LANE_CENTRAL_DSN)?" in result.output


def test_tls_client_files_without_a_ca_are_refused_before_connecting(tmp_path: object) -> None:
    result = run(
        "ingest",
        "--dsn",
        "postgresql://x@127.0.0.1:1/x",
        "--tls-cert",
        "a.pem",
        "--tls-key",
        "a.key",
    )
    assert result.exit_code == 78
    assert "--tls-cert/--tls-key need --tls-ca" in result.output
