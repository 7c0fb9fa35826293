"""One batch of lane messages into PostgreSQL in one transaction: the delivery contract's far end.

For each batch (docs/central.md, "How a batch is stored"):

1. The lanes it touches get a row (``lanes``) and are locked in one sorted ``SELECT … FOR
   UPDATE``, so workers that share the lanes serialise per lane and never deadlock.
2. Each crossing is classified against its lane's watermark *W* (every seq 1…W stored) and the
   seqs stored above it (``lane_seqs_ahead``): new; a duplicate (same ``event_id`` already
   stored, counted); or a conflict (another event holds that seq: quarantined, never stored).
3. The new crossings are written (``write_mode``; bench/bench_central.py measures both): COPY
   straight into ``crossings`` in a savepoint, and only when a key is taken (an event id reused
   under another seq or lane) COPY into a temporary staging table and one ``INSERT … SELECT …
   ON CONFLICT (event_id, closed_at) DO NOTHING``; or one multi-row INSERT with the same guard.
4. The watermark moves up over the seqs now stored; seqs above it are kept in
   ``lane_seqs_ahead``; a seq that skips past the highest stored opens a gap (``gaps``), and a
   gap closes when the watermark passes its end.
5. Plate images (by sha256), lane status, availability and refusals (``quarantine``) are written
   in the same transaction.

The caller commits (or loses) the whole batch, and only then acknowledges the messages to the
broker and publishes the watermarks it returns: nothing is confirmed that is not committed.
Everything here is idempotent, so a batch that is retried after a failure, or delivered again
after a crash, stores each event once.
"""

from __future__ import annotations

import enum
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from central.messages import (
    EVENT_ID_CONFLICT,
    SEQ_CONFLICT,
    Availability,
    Crossing,
    LaneKey,
    LaneStatus,
    PlateImage,
    Record,
    Refused,
)

Connection = psycopg.Connection[tuple[object, ...]]

CROSSING_COLUMNS = (
    "event_id",
    "closed_at",
    "port_id",
    "lane_id",
    "seq",
    "opened_at",
    "committed_at",
    "received_at",
    "schema_id",
    "recommendation",
    "reasons",
    "card_refs",
    "plate_text",
    "plate_image_sha256",
    "payload",
)
_COLUMN_LIST = sql.SQL(", ").join(map(sql.Identifier, CROSSING_COLUMNS))
_COPY_CROSSINGS = sql.SQL("COPY crossings ({}) FROM STDIN").format(_COLUMN_LIST)
_COPY_STAGE = sql.SQL("COPY crossings_stage ({}) FROM STDIN").format(_COLUMN_LIST)
_INSERT_FROM_STAGE = sql.SQL(
    "INSERT INTO crossings ({0}) SELECT {0} FROM crossings_stage"
    " ON CONFLICT (event_id, closed_at) DO NOTHING RETURNING event_id"
).format(_COLUMN_LIST)
_INSERT_CHUNK = 500  # rows per multi-row INSERT (15 parameters each, far below the 65535 limit)


class WriteMode(enum.Enum):
    """How new crossings reach the partitioned table."""

    INSERT = "insert"
    """One multi-row ``INSERT … VALUES … ON CONFLICT DO NOTHING RETURNING``."""
    COPY = "copy"
    """``COPY`` into ``crossings``; through a staging table and ``INSERT … SELECT … ON CONFLICT``
    when a key is taken."""


@dataclass
class BatchResult:
    """What one committed batch did."""

    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    images: int = 0
    statuses: int = 0
    availabilities: int = 0
    gaps_opened: int = 0
    gaps_closed: int = 0
    watermarks: dict[LaneKey, int] = field(default_factory=dict)
    """Every lane with a crossing in the batch: its watermark as committed by this batch."""
    advanced: set[LaneKey] = field(default_factory=set)
    """Lanes whose watermark this batch raised."""
    refusals: Counter[str] = field(default_factory=Counter)
    """Quarantined messages by reason code."""


@dataclass
class _Lane:
    """One locked lane's state while its crossings of the batch are classified."""

    acked: int
    highest: int
    ahead: dict[int, uuid.UUID] = field(default_factory=dict)
    new: dict[int, Crossing] = field(default_factory=dict)
    duplicates: int = 0
    stored: int = 0
    last_crossing: datetime | None = None


class IngestStore:
    """Writes batches on one connection (not thread-safe: one per writer thread)."""

    def __init__(self, connection: Connection, *, write_mode: WriteMode = WriteMode.COPY) -> None:
        self.connection = connection
        self.write_mode = write_mode
        self._staging_ready = False

    def write(self, records: Sequence[Record], received_at: datetime) -> BatchResult:
        """Store ``records`` in one transaction; raises psycopg errors with nothing stored."""
        try:
            with self.connection.transaction():
                return self._write(records, received_at)
        except psycopg.Error:
            self._staging_ready = False  # a temp table created in a rolled-back transaction is gone
            raise

    def quarantine_one(self, refused: Refused, received_at: datetime) -> None:
        """Store one refusal alone (for a message whose batch cannot be stored)."""
        with self.connection.transaction():
            self._quarantine([refused], received_at)
            if refused.lane is not None:
                self._lock_lanes([refused.lane])
                self.connection.execute(
                    "UPDATE lanes SET quarantined = quarantined + 1, last_seen_at = now()"
                    " WHERE port_id = %s AND lane_id = %s",
                    (refused.lane.port_id, refused.lane.lane_id),
                )

    # --- the batch ---------------------------------------------------------------------------

    def _write(self, records: Sequence[Record], received_at: datetime) -> BatchResult:
        result = BatchResult()
        crossings: list[Crossing] = []
        images: list[PlateImage] = []
        statuses: dict[LaneKey, LaneStatus] = {}
        availabilities: dict[LaneKey, Availability] = {}
        refused: list[Refused] = []
        for record in records:
            if isinstance(record, Crossing):
                crossings.append(record)
            elif isinstance(record, PlateImage):
                images.append(record)
            elif isinstance(record, LaneStatus):
                newest = statuses.get(record.lane)
                if newest is None or record.time >= newest.time:
                    statuses[record.lane] = record
            elif isinstance(record, Availability):
                availabilities[record.lane] = record  # the later message wins
            else:
                refused.append(record)
        touched = {record.lane for record in records if record.lane is not None}
        lanes = self._lock_lanes(touched)

        with_crossings = {crossing.lane for crossing in crossings}
        crossings = self._drop_batch_duplicates(crossings, lanes, refused)
        self._classify(crossings, lanes, refused)
        self._insert_new(lanes, received_at, refused)
        self._advance({key: lanes[key] for key in with_crossings}, result)
        self._update_lanes(lanes, refused, touched)
        if statuses:
            self._statuses(statuses.values())
        if availabilities:
            self._availabilities(availabilities.values())
        if images:
            result.images = self._images(images, received_at)
        if refused:
            self._quarantine(refused, received_at)
        result.stored = sum(lane.stored for lane in lanes.values())
        result.duplicates = sum(lane.duplicates for lane in lanes.values())
        result.quarantined = len(refused)
        result.refusals.update(item.reason for item in refused)
        result.statuses = len(statuses)
        result.availabilities = len(availabilities)
        return result

    def _lock_lanes(self, touched: Iterable[LaneKey]) -> dict[LaneKey, _Lane]:
        ordered = sorted(touched, key=lambda lane: (lane.port_id, lane.lane_id))
        if not ordered:
            return {}
        ports = [lane.port_id for lane in ordered]
        names = [lane.lane_id for lane in ordered]
        self.connection.execute(
            "INSERT INTO lanes (port_id, lane_id)"
            " SELECT * FROM unnest(%s::text[], %s::text[]) ORDER BY 1, 2"
            " ON CONFLICT DO NOTHING",
            (ports, names),
        )
        rows = self.connection.execute(
            "SELECT l.port_id, l.lane_id, l.acked_seq, l.highest_seq FROM lanes l"
            " JOIN unnest(%s::text[], %s::text[]) AS k(port_id, lane_id)"
            " USING (port_id, lane_id) ORDER BY l.port_id, l.lane_id FOR UPDATE OF l",
            (ports, names),
        ).fetchall()
        return {
            LaneKey(str(port), str(lane)): _Lane(int(acked), int(highest))  # type: ignore[call-overload]
            for port, lane, acked, highest in rows
        }

    def _drop_batch_duplicates(
        self, crossings: list[Crossing], lanes: dict[LaneKey, _Lane], refused: list[Refused]
    ) -> list[Crossing]:
        """The first copy of each event_id; a later identical copy is a duplicate."""
        first: dict[uuid.UUID, Crossing] = {}
        kept: list[Crossing] = []
        for crossing in crossings:
            seen = first.get(crossing.event_id)
            if seen is None:
                first[crossing.event_id] = crossing
                kept.append(crossing)
            elif seen.payload == crossing.payload:
                lanes[crossing.lane].duplicates += 1
            else:
                refused.append(
                    _conflict(
                        crossing, EVENT_ID_CONFLICT, "another event in the batch has this event_id"
                    )
                )
        return kept

    def _classify(
        self, crossings: list[Crossing], lanes: dict[LaneKey, _Lane], refused: list[Refused]
    ) -> None:
        with_crossings = sorted({crossing.lane for crossing in crossings}, key=str)
        if with_crossings:
            rows = self.connection.execute(
                "SELECT a.port_id, a.lane_id, a.seq, a.event_id FROM lane_seqs_ahead a"
                " JOIN unnest(%s::text[], %s::text[]) AS k(port_id, lane_id) USING (port_id, lane_id)",
                (
                    [lane.port_id for lane in with_crossings],
                    [lane.lane_id for lane in with_crossings],
                ),
            ).fetchall()
            for port, lane_id, seq, event_id in rows:
                lanes[LaneKey(str(port), str(lane_id))].ahead[int(seq)] = event_id  # type: ignore[call-overload, assignment]
        at_or_below: list[Crossing] = []
        for crossing in crossings:
            lane = lanes[crossing.lane]
            if crossing.seq <= lane.acked:
                at_or_below.append(crossing)
            elif crossing.seq in lane.ahead or crossing.seq in lane.new:
                holder = lane.ahead.get(crossing.seq) or lane.new[crossing.seq].event_id
                if holder == crossing.event_id:
                    lane.duplicates += 1
                else:
                    refused.append(
                        _conflict(crossing, SEQ_CONFLICT, "another event is stored with this seq")
                    )
            else:
                lane.new[crossing.seq] = crossing
        if not at_or_below:
            return
        stored = {
            row[0]
            for row in self.connection.execute(
                "SELECT c.event_id FROM crossings c"
                " JOIN unnest(%s::uuid[], %s::timestamptz[]) AS k(event_id, closed_at)"
                " ON c.event_id = k.event_id AND c.closed_at = k.closed_at",
                ([c.event_id for c in at_or_below], [c.closed_at for c in at_or_below]),
            )
        }
        for crossing in at_or_below:
            lane = lanes[crossing.lane]
            if crossing.event_id in stored:
                lane.duplicates += 1
            else:
                refused.append(
                    _conflict(
                        crossing,
                        SEQ_CONFLICT,
                        "seq is at or below the lane's watermark and another event holds it",
                    )
                )

    def _insert_new(
        self, lanes: dict[LaneKey, _Lane], received_at: datetime, refused: list[Refused]
    ) -> None:
        new = [crossing for lane in lanes.values() for crossing in lane.new.values()]
        if not new:
            return
        if self.write_mode is WriteMode.COPY:
            inserted = self._insert_by_copy(new, received_at)
        else:
            inserted = self._insert_by_values(
                [_crossing_row(crossing, received_at) for crossing in new]
            )
        for crossing in new:
            lane = lanes[crossing.lane]
            if crossing.event_id in inserted:
                lane.stored += 1
                if lane.last_crossing is None or crossing.closed_at > lane.last_crossing:
                    lane.last_crossing = crossing.closed_at
            else:
                del lane.new[crossing.seq]
                refused.append(
                    _conflict(
                        crossing,
                        EVENT_ID_CONFLICT,
                        "this event_id is stored under another seq or lane",
                    )
                )

    def _insert_by_values(self, rows: list[tuple[object, ...]]) -> set[uuid.UUID]:
        inserted: set[uuid.UUID] = set()
        row_sql = sql.SQL("({})").format(
            sql.SQL(", ").join([sql.Placeholder()] * len(CROSSING_COLUMNS))
        )
        for start in range(0, len(rows), _INSERT_CHUNK):
            chunk = rows[start : start + _INSERT_CHUNK]
            statement = sql.SQL(
                "INSERT INTO crossings ({}) VALUES {} ON CONFLICT (event_id, closed_at) DO NOTHING"
                " RETURNING event_id"
            ).format(
                sql.SQL(", ").join(map(sql.Identifier, CROSSING_COLUMNS)),
                sql.SQL(", ").join([row_sql] * len(chunk)),
            )
            params = [value for row in chunk for value in row]
            inserted.update(row[0] for row in self.connection.execute(statement, params))  # type: ignore[misc]
        return inserted

    def _insert_by_copy(self, new: list[Crossing], received_at: datetime) -> set[uuid.UUID]:
        """COPY straight into ``crossings``; through the staging table when a key is taken.

        The crossings reaching here were classified new (above their lane's watermark, their
        seq free), so their (event_id, closed_at) is taken only when an event id is reused under
        another seq or lane. COPY cannot skip such a row: it fails, its savepoint is rolled
        back, and the batch goes through the staging table and ``INSERT … SELECT … ON
        CONFLICT DO NOTHING``, which tells which rows were taken. The direct COPY saves
        PostgreSQL a second write of every row (about a third of its CPU per event).
        The COPY text is built here in one piece: psycopg's per-row adaptation costs ~14 us a row.
        """
        received = received_at.isoformat()
        data = "".join([_copy_line(crossing, received) for crossing in new]).encode()
        try:
            with (
                self.connection.transaction(),
                self.connection.cursor() as cursor,
                cursor.copy(_COPY_CROSSINGS) as copy,
            ):
                copy.write(data)
            return {crossing.event_id for crossing in new}
        except psycopg.errors.UniqueViolation:
            pass
        if not self._staging_ready:
            self.connection.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS crossings_stage"
                " (LIKE crossings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            self._staging_ready = True
        with self.connection.cursor() as cursor:
            with cursor.copy(_COPY_STAGE) as copy:
                copy.write(data)
            cursor.execute(_INSERT_FROM_STAGE)
            return {row[0] for row in cursor.fetchall()}  # type: ignore[misc]

    def _advance(self, lanes: dict[LaneKey, _Lane], result: BatchResult) -> None:
        """Move each watermark over the stored seqs; record the seqs still ahead and the gaps."""
        ahead_rows: list[tuple[str, str, int, uuid.UUID, datetime]] = []
        gap_rows: list[tuple[str, str, int, int]] = []
        moved: list[tuple[str, str, int]] = []
        for key, lane in lanes.items():
            high = lane.highest
            for seq in sorted(lane.new):
                if seq > high + 1:
                    gap_rows.append((key.port_id, key.lane_id, high + 1, seq - 1))
                high = max(high, seq)
            lane.highest = high
            acked = lane.acked
            while acked + 1 in lane.new or acked + 1 in lane.ahead:
                acked += 1
            if acked > lane.acked:
                result.advanced.add(key)
                moved.append((key.port_id, key.lane_id, acked))
            lane.acked = acked
            result.watermarks[key] = acked
            ahead_rows.extend(
                (key.port_id, key.lane_id, seq, crossing.event_id, crossing.closed_at)
                for seq, crossing in lane.new.items()
                if seq > acked
            )
        if moved:
            columns = _columns(moved)
            self.connection.execute(
                "DELETE FROM lane_seqs_ahead a USING unnest(%s::text[], %s::text[], %s::bigint[])"
                " AS v(port_id, lane_id, acked)"
                " WHERE a.port_id = v.port_id AND a.lane_id = v.lane_id AND a.seq <= v.acked",
                columns,
            )
            closed = self.connection.execute(
                "UPDATE gaps g SET closed_at = now()"
                " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(port_id, lane_id, acked)"
                " WHERE g.closed_at IS NULL AND g.port_id = v.port_id AND g.lane_id = v.lane_id"
                " AND g.last_seq <= v.acked RETURNING g.id",
                columns,
            ).fetchall()
            result.gaps_closed = len(closed)
        if ahead_rows:
            self.connection.execute(
                "INSERT INTO lane_seqs_ahead (port_id, lane_id, seq, event_id, closed_at)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::uuid[],"
                " %s::timestamptz[])",
                _columns(ahead_rows),
            )
        if gap_rows:
            self.connection.execute(
                "INSERT INTO gaps (port_id, lane_id, first_seq, last_seq)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[])",
                _columns(gap_rows),
            )
            result.gaps_opened = len(gap_rows)

    def _update_lanes(
        self, lanes: dict[LaneKey, _Lane], refused: list[Refused], touched: set[LaneKey]
    ) -> None:
        refusals = Counter(item.lane for item in refused if item.lane is not None)
        rows = []
        for key in touched:
            lane = lanes[key]
            rows.append(
                (
                    key.port_id,
                    key.lane_id,
                    lane.acked,
                    lane.highest,
                    lane.stored,
                    lane.duplicates,
                    refusals[key],
                    lane.last_crossing,
                )
            )
        if not rows:
            return
        self.connection.execute(
            "UPDATE lanes l SET acked_seq = v.acked, highest_seq = v.highest,"
            " stored = l.stored + v.stored, duplicates = l.duplicates + v.duplicates,"
            " quarantined = l.quarantined + v.quarantined,"
            " last_crossing_at = greatest(l.last_crossing_at, v.last_crossing),"
            " last_stored_at = CASE WHEN v.stored > 0 THEN now() ELSE l.last_stored_at END,"
            " last_seen_at = now()"
            " FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::bigint[],"
            " %s::bigint[], %s::bigint[], %s::timestamptz[])"
            " AS v(port_id, lane_id, acked, highest, stored, duplicates, quarantined, last_crossing)"
            " WHERE l.port_id = v.port_id AND l.lane_id = v.lane_id",
            _columns(rows),
        )

    def _statuses(self, statuses: Iterable[LaneStatus]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(
                "UPDATE lanes SET status = %s::jsonb, status_time = %s, status_received_at = now(),"
                " agent_version = %s, uplink_state = %s, outbox_depth = %s, outbox_rows = %s,"
                " outbox_oldest_unsent_age_s = %s, lane_last_seq = %s, lane_acked_seq = %s,"
                " cache_version = %s, cache_age_s = %s, cache_stale = %s, faults = %s"
                " WHERE port_id = %s AND lane_id = %s"
                " AND (status_time IS NULL OR status_time <= %s)",
                [
                    (
                        status.document,
                        status.time,
                        status.agent_version,
                        status.uplink_state,
                        status.outbox_depth,
                        status.outbox_rows,
                        status.outbox_oldest_unsent_age_s,
                        status.lane_last_seq,
                        status.lane_acked_seq,
                        status.cache_version,
                        status.cache_age_s,
                        status.cache_stale,
                        list(status.faults),
                        status.lane.port_id,
                        status.lane.lane_id,
                        status.time,
                    )
                    for status in statuses
                ],
            )

    def _availabilities(self, availabilities: Iterable[Availability]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(
                "UPDATE lanes SET availability = %s, availability_at = now()"
                " WHERE port_id = %s AND lane_id = %s",
                [(item.value, item.lane.port_id, item.lane.lane_id) for item in availabilities],
            )

    def _images(self, images: list[PlateImage], received_at: datetime) -> int:
        unique = {image.sha256: image for image in images}
        rows = self.connection.execute(
            "INSERT INTO plate_images (sha256, port_id, lane_id, received_at, size_bytes, jpeg)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[],"
            " %s::integer[], %s::bytea[]) ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
            (
                list(unique),
                [image.lane.port_id for image in unique.values()],
                [image.lane.lane_id for image in unique.values()],
                [received_at] * len(unique),
                [len(image.jpeg) for image in unique.values()],
                [image.jpeg for image in unique.values()],
            ),
        ).fetchall()
        return len(rows)

    def _quarantine(self, refused: list[Refused], received_at: datetime) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO quarantine (received_at, topic, port_id, lane_id, reason, detail, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        received_at,
                        item.topic,
                        item.lane.port_id if item.lane else None,
                        item.lane.lane_id if item.lane else None,
                        item.reason,
                        item.detail,
                        item.payload,
                    )
                    for item in refused
                ],
            )


def _columns(rows: Sequence[tuple[object, ...]]) -> list[list[object]]:
    """Rows as one list per column: the arrays ``unnest`` turns back into rows."""
    return [list(column) for column in zip(*rows, strict=True)]


def _crossing_row(crossing: Crossing, received_at: datetime) -> tuple[object, ...]:
    return (
        crossing.event_id,
        crossing.closed_at,
        crossing.lane.port_id,
        crossing.lane.lane_id,
        crossing.seq,
        crossing.opened_at,
        crossing.committed_at,
        received_at,
        crossing.schema_id,
        crossing.recommendation,
        list(crossing.reasons),
        list(crossing.card_refs),
        crossing.plate_text,
        crossing.plate_image_sha256,
        crossing.payload,
    )


def _copy_text(value: str) -> str:
    """A value in COPY's text format: backslash, newline, carriage return and tab escaped."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\n" in value or "\r" in value or "\t" in value:
        value = value.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return value


def _copy_optional(value: str | None) -> str:
    return "\\N" if value is None else _copy_text(value)


def _array_literal(values: tuple[str, ...]) -> str:
    """A text[] literal, every element quoted (so NULL, commas and braces are plain text)."""
    return (
        "{"
        + ",".join('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
        + "}"
    )


def _copy_line(crossing: Crossing, received_at: str) -> str:
    """One line of COPY text in CROSSING_COLUMNS order."""
    lane = crossing.lane
    return (
        "\t".join(
            (
                str(crossing.event_id),
                crossing.closed_at.isoformat(),
                _copy_text(lane.port_id),
                _copy_text(lane.lane_id),
                str(crossing.seq),
                crossing.opened_at.isoformat(),
                crossing.committed_at.isoformat(),
                received_at,
                _copy_text(crossing.schema_id),
                _copy_text(crossing.recommendation),
                _copy_text(_array_literal(crossing.reasons)),
                _copy_text(_array_literal(crossing.card_refs)),
                _copy_optional(crossing.plate_text),
                _copy_optional(crossing.plate_image_sha256),
                _copy_text(crossing.payload),
            )
        )
        + "\n"
    )


def _conflict(crossing: Crossing, reason: str, why: str) -> Refused:
    return Refused(
        topic=crossing.topic,
        lane=crossing.lane,
        reason=reason,
        detail=f"seq {crossing.seq}, event_id {crossing.event_id}: {why}",
        payload=crossing.payload.encode(),
    )
