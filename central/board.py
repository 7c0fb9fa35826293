"""What ops read: the lane board, crossings, gaps and the quarantine, from the documented views.

Each function returns plain rows (dicts with JSON-ready values) that the CLI prints as a table or
as JSON; Grafana and other SQL tools read the same views (docs/central.md, "Views").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from central import db

Row = dict[str, Any]


def _rows(connection: db.Connection, query: sql.Composed, params: list[Any]) -> list[Row]:
    with connection.cursor(row_factory=dict_row) as cursor:
        cursor.execute(query, params)
        return [{key: _plain(value) for key, value in row.items()} for row in cursor.fetchall()]


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def lanes(connection: db.Connection, *, port_id: str | None = None) -> list[Row]:
    """Every lane (of ``port_id``), from the ``lane_board`` view."""
    where, params = _where([("port_id = %s", port_id)])
    return _rows(
        connection,
        sql.SQL("SELECT * FROM lane_board {} ORDER BY port_id, lane_id").format(where),
        params,
    )


@dataclass(frozen=True, slots=True)
class CrossingFilter:
    """Filters of ``lane-central crossings``; every one set must hold."""

    port_id: str | None = None
    lane_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    card_ref: str | None = None
    plate: str | None = None
    recommendation: str | None = None
    limit: int = 50


def crossings(connection: db.Connection, selected: CrossingFilter) -> list[Row]:
    """Crossings newest first, from the ``crossing_list`` view (indexes serve each filter)."""
    where, params = _where(
        [
            ("port_id = %s", selected.port_id),
            ("lane_id = %s", selected.lane_id),
            ("closed_at >= %s", selected.since),
            ("closed_at < %s", selected.until),
            ("card_refs @> ARRAY[%s]::text[]", selected.card_ref),
            ("plate_text = %s", selected.plate),
            ("recommendation = %s", selected.recommendation),
        ]
    )
    return _rows(
        connection,
        sql.SQL("SELECT * FROM crossing_list {} ORDER BY closed_at DESC LIMIT %s").format(where),
        [*params, selected.limit],
    )


def gaps(
    connection: db.Connection,
    *,
    open_only: bool = False,
    port_id: str | None = None,
    lane_id: str | None = None,
    limit: int = 100,
) -> list[Row]:
    """Gaps newest first, from the ``gap_list`` view."""
    where, params = _where(
        [
            ("open", True if open_only else None),
            ("port_id = %s", port_id),
            ("lane_id = %s", lane_id),
        ]
    )
    return _rows(
        connection,
        sql.SQL("SELECT * FROM gap_list {} ORDER BY opened_at DESC LIMIT %s").format(where),
        [*params, limit],
    )


def quarantine(
    connection: db.Connection, *, reason: str | None = None, limit: int = 50
) -> list[Row]:
    """Refused messages newest first, without their payload (it may hold card numbers)."""
    where, params = _where([("reason = %s", reason)])
    return _rows(
        connection,
        sql.SQL(
            "SELECT id, received_at, topic, port_id, lane_id, reason, detail,"
            " octet_length(payload) AS payload_bytes FROM quarantine {}"
            " ORDER BY received_at DESC, id DESC LIMIT %s"
        ).format(where),
        [*params, limit],
    )


def _where(conditions: list[tuple[str, object]]) -> tuple[sql.Composed, list[Any]]:
    """A WHERE clause of the conditions whose value is set (conditions are fixed strings here)."""
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for condition, value in conditions:
        if value is None:
            continue
        parts.append(sql.SQL(condition))
        if "%s" in condition:
            params.append(value)
    if not parts:
        return sql.Composed([]), params
    return sql.Composed([sql.SQL("WHERE "), sql.SQL(" AND ").join(parts)]), params
