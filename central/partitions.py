"""Monthly partitions of ``crossings``, created ahead of time.

A partition per calendar month (UTC) of ``closed_at``: a month is the unit ops keep or drop
(``DROP TABLE crossings_y2025m01`` or ``ALTER TABLE crossings DETACH PARTITION …``), and a
national fleet's month (tens of millions of rows) keeps each index a size PostgreSQL serves
from memory. Workers create the coming months at start and once an hour, so inserts never wait
for DDL. An event whose lane clock is outside every partition lands in ``crossings_default``;
when the month it belongs to is created later, its rows move from the default partition into the
new one in the same transaction (PostgreSQL refuses to attach a partition whose rows sit in the
default).
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg import sql

from central import db

MONTHS_BEHIND = 1
MONTHS_AHEAD = 2


def month_start(moment: datetime, offset: int = 0) -> datetime:
    """The first instant (UTC) of the month ``offset`` months from ``moment``'s."""
    index = moment.astimezone(UTC).year * 12 + moment.astimezone(UTC).month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"crossings_y{start.year:04d}m{start.month:02d}"


def ensure_crossing_partitions(
    connection: db.Connection,
    *,
    now: datetime | None = None,
    behind: int = MONTHS_BEHIND,
    ahead: int = MONTHS_AHEAD,
) -> list[str]:
    """Create the missing monthly partitions around ``now``; returns the names created."""
    moment = now or datetime.now(UTC)
    created = []
    for offset in range(-behind, ahead + 1):
        start = month_start(moment, offset)
        if create_month(connection, start):
            created.append(partition_name(start))
    return created


def create_month(connection: db.Connection, start: datetime) -> bool:
    """Create the partition of the month starting at ``start``; False if it exists."""
    name = partition_name(start)
    end = month_start(start, 1)
    with connection.transaction():
        exists = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if exists is not None and exists[0]:
            return False
        # Hold off inserts into the default partition while its rows of this month move.
        connection.execute("LOCK TABLE crossings_default IN SHARE ROW EXCLUSIVE MODE")
        table = sql.Identifier(name)
        connection.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE crossings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            ).format(table)
        )
        connection.execute(
            sql.SQL(
                "WITH moved AS (DELETE FROM crossings_default"
                " WHERE closed_at >= %s AND closed_at < %s RETURNING *)"
                " INSERT INTO {} SELECT * FROM moved"
            ).format(table),
            (start, end),
        )
        # DDL takes no bind parameters: the bounds go in as literals.
        connection.execute(
            sql.SQL(
                "ALTER TABLE crossings ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})"
            ).format(table, sql.Literal(start.isoformat()), sql.Literal(end.isoformat()))
        )
    return True


def list_partitions(connection: db.Connection) -> list[tuple[str, int]]:
    """(name, estimated rows) of every crossings partition, oldest first, default last."""
    rows = connection.execute(
        "SELECT c.relname, greatest(c.reltuples, 0)::bigint FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'crossings'::regclass ORDER BY c.relname = 'crossings_default', c.relname"
    ).fetchall()
    return [(str(name), int(count)) for name, count in rows]  # type: ignore[call-overload]
