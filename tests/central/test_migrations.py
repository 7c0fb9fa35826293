"""Versioned migrations: from an empty database, from the previous version with data in it, never
over an edited migration or a newer database; partitions made ahead, rows moved out of the default."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql

from central import migrate, partitions


def test_an_empty_database_is_brought_to_the_latest_version_with_partitions_around_now(
    empty_dsn: str,
) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as connection:
        report = migrate.upgrade(connection)
        assert (report.from_version, report.to_version) == (0, migrate.latest_version())
        assert [m.version for m in report.applied] == list(range(1, migrate.latest_version() + 1))
        now = datetime.now(UTC)
        assert partitions.partition_name(partitions.month_start(now)) in report.partitions_created
        assert (
            len(report.partitions_created) == partitions.MONTHS_BEHIND + partitions.MONTHS_AHEAD + 1
        )
        again = migrate.upgrade(connection)
        assert (again.applied, again.partitions_created) == ((), ())
        for view in (
            "lane_board",
            "crossing_list",
            "gap_list",
            "crossings_per_minute",
            "quarantine_summary",
        ):
            connection.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(view))).fetchall()


def test_a_database_at_the_previous_version_keeps_its_rows_and_gets_the_views(
    empty_dsn: str,
) -> None:
    previous = migrate.latest_version() - 1
    with psycopg.connect(empty_dsn, autocommit=True) as connection:
        migrate.upgrade(connection, to_version=previous)
        assert migrate.current_version(connection) == previous
        with pytest.raises(migrate.MigrationError, match="run `lane-central db upgrade`"):
            migrate.require_latest(connection)
        connection.execute(
            "INSERT INTO lanes (port_id, lane_id, acked_seq, highest_seq) VALUES ('P', 'L', 4, 6)"
        )
        connection.execute(
            "INSERT INTO gaps (port_id, lane_id, first_seq, last_seq) VALUES ('P', 'L', 5, 5)"
        )
        report = migrate.upgrade(connection)
        assert [m.version for m in report.applied] == [migrate.latest_version()]
        migrate.require_latest(connection)
        board = connection.execute(
            "SELECT port_id, lane_id, acked_seq, open_gaps, missing FROM lane_board"
        ).fetchall()
        assert board == [("P", "L", 4, 1, 2)]


def test_an_applied_migration_that_was_edited_stops_the_upgrade(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
        with pytest.raises(migrate.MigrationError, match="changed after it was applied"):
            migrate.upgrade(connection)


def test_a_database_newer_than_this_release_is_refused(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'future', '')"
        )
        with pytest.raises(migrate.MigrationError, match="newer than this lane-central"):
            migrate.upgrade(connection)


def test_a_new_month_takes_its_rows_out_of_the_default_partition(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO crossings (event_id, closed_at, port_id, lane_id, seq, opened_at,"
            " committed_at, schema_id, recommendation, reasons, card_refs, payload)"
            " VALUES (gen_random_uuid(), '2031-05-05T10:00Z', 'P', 'L', 1, '2031-05-05T09:59Z',"
            " '2031-05-05T10:00Z', 's', 'REFER', '{}', '{}', '{}')"
        )
        assert partitions.create_month(connection, datetime(2031, 5, 1, tzinfo=UTC))
        assert not partitions.create_month(connection, datetime(2031, 5, 1, tzinfo=UTC))
        counts = dict(
            connection.execute(
                "SELECT tableoid::regclass::text, count(*) FROM crossings GROUP BY 1"
            ).fetchall()
        )
        assert counts == {"crossings_y2031m05": 1}
