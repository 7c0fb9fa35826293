"""Ingest workers against a real Mosquitto and PostgreSQL: each event stored once, refusals
quarantined, the watermark published only after the commit, gaps, two workers in one group."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from central import messages
from tests.central.events import crossing_event, encode
from tests.central.kit import (
    Lane,
    count,
    kill,
    running_worker,
    settings,
    wait_for,
    wait_subscribed,
    worker_process,
)
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.broker


def test_a_lanes_events_are_stored_once_when_the_lane_resends_them_and_the_worker_restarts(
    dsn: str, mosquitto: MosquittoBroker
) -> None:
    lane = Lane(mosquitto, "P1", "L1")
    with running_worker(settings(dsn, mosquitto)) as worker:
        lane.publish(*range(1, 11))
        lane.wait_watermark(10)
    lane.publish(*range(1, 21))  # the lane re-sends after a reconnect; the worker is down
    with running_worker(settings(dsn, mosquitto)) as worker:
        lane.wait_watermark(20)
        assert (worker.stats.stored, worker.stats.duplicates) == (10, 10)
    assert count(dsn, "SELECT count(*) FROM crossings") == 20
    assert count(dsn, "SELECT count(DISTINCT seq) FROM crossings") == 20
    assert count(dsn, "SELECT duplicates FROM lanes") == 10
    assert max(lane.watermarks) == 20
    lane.close()


def test_a_payload_for_another_lane_and_an_invalid_payload_are_quarantined_and_acknowledged(
    dsn: str, mosquitto: MosquittoBroker
) -> None:
    lane = Lane(mosquitto, "P1", "L1")
    forged = encode(crossing_event("P1", "L9", 1))
    invalid = encode({**crossing_event("P1", "L1", 1), "recommendation": "WAVE_THROUGH"})
    with running_worker(settings(dsn, mosquitto)) as worker:
        lane.publish_raw(lane.topics.crossing, forged)
        lane.publish_raw(lane.topics.crossing, invalid)
        lane.publish(1)
        lane.wait_watermark(1)
        wait_for(lambda: worker.stats.quarantined == 2, 5, "two quarantined messages")
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT reason, topic, payload FROM quarantine ORDER BY id"
        ).fetchall()
        assert rows == [
            (messages.TOPIC_MISMATCH, lane.topics.crossing, forged),
            (messages.SCHEMA_INVALID, lane.topics.crossing, invalid),
        ]
        assert connection.execute("SELECT port_id, lane_id, seq FROM crossings").fetchall() == [
            ("P1", "L1", 1)
        ]
        assert connection.execute("SELECT count(*) FROM lanes WHERE lane_id = 'L9'").fetchone() == (
            0,
        )
    with running_worker(settings(dsn, mosquitto)):
        lane.publish(2)
        lane.wait_watermark(2)
    assert count(dsn, "SELECT count(*) FROM quarantine") == 2  # acknowledged: not delivered again
    lane.close()


def test_the_watermark_is_published_only_after_the_commit_and_a_worker_killed_before_it_loses_nothing(
    dsn: str, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The commit is held by a deferred trigger waiting on a lock the test holds; the worker is
    killed there (rows inserted, not committed); a new worker gets the messages again."""
    hold = psycopg.connect(dsn, autocommit=True)
    hold.execute(
        "CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_advisory_xact_lock(4242); RETURN NULL; END $$"
    )
    hold.execute(
        "CREATE CONSTRAINT TRIGGER hold_commit AFTER INSERT ON crossings"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION hold_commit()"
    )
    hold.execute("SELECT pg_advisory_lock(4242)")
    lane = Lane(mosquitto, "P1", "L1")
    log = tmp_path / "worker.log"
    worker = worker_process(dsn, mosquitto, "central-ingest-1", log)
    try:
        wait_subscribed(log)
        lane.publish(1, 2, 3)
        wait_for(
            lambda: (
                count(
                    dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
                == 1
            ),
            15,
            "the worker's commit to wait on the lock",
        )
        assert count(dsn, "SELECT count(*) FROM crossings") == 0  # inserted, not committed
        assert lane.watermarks == []
    finally:
        kill(worker)
    # The server notices the dead client within client_connection_check_interval and rolls back.
    wait_for(
        lambda: (
            count(
                dsn,
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'central-ingest-1'",
            )
            == 0
        ),
        10,
        "the killed worker's transaction to end",
    )
    hold.execute("SELECT pg_advisory_unlock(4242)")
    assert count(dsn, "SELECT count(*) FROM crossings") == 0
    assert lane.watermarks == []
    hold.execute("DROP TRIGGER hold_commit ON crossings")
    hold.close()
    worker = worker_process(dsn, mosquitto, "central-ingest-1", log)
    try:
        lane.wait_watermark(3, timeout_s=15)
    finally:
        worker.terminate()
        worker.wait(10)
    assert count(dsn, "SELECT count(*) FROM crossings") == 3
    assert count(dsn, "SELECT acked_seq FROM lanes") == 3
    lane.close()


def test_a_gap_opens_holds_the_watermark_and_closes_when_the_missing_event_arrives(
    dsn: str, mosquitto: MosquittoBroker
) -> None:
    lane = Lane(mosquitto, "P1", "L1")
    with running_worker(settings(dsn, mosquitto)) as worker:
        lane.publish(1, 2, 4, 5)
        wait_for(lambda: worker.stats.stored == 4, 5, "four stored")
        lane.wait_watermark(2)
        assert (
            count(dsn, "SELECT first_seq || '-' || last_seq FROM gaps WHERE closed_at IS NULL")
            == "3-3"
        )
        assert max(lane.watermarks) == 2
        lane.publish(3)
        lane.wait_watermark(5)
    assert (
        count(dsn, "SELECT count(*) FROM gaps WHERE closed_at IS NOT NULL AND first_seq = 3") == 1
    )
    lane.close()


def test_two_workers_in_one_group_share_the_lanes_and_store_each_event_once(
    dsn: str, mosquitto: MosquittoBroker
) -> None:
    lanes = [Lane(mosquitto, "P1", f"L{number}") for number in range(4)]
    with (
        running_worker(settings(dsn, mosquitto, client_id="central-ingest-1")) as first,
        running_worker(settings(dsn, mosquitto, client_id="central-ingest-2")) as second,
    ):
        for lane in lanes:
            lane.publish(*range(1, 51))
        for lane in lanes:
            lane.wait_watermark(50)
        assert first.stats.stored > 0
        assert second.stats.stored > 0
        assert first.stats.stored + second.stats.stored == 200
    assert count(dsn, "SELECT count(*) FROM crossings") == 200
    assert count(dsn, "SELECT sum(acked_seq) FROM lanes") == 200
    for lane in lanes:
        lane.close()
