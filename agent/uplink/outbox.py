"""Durable outbox: every message the lane sends is committed here before anything else happens.

The engine thread appends; the publisher thread reads pending rows and marks them sent once the
broker has acknowledged them. A row is never deleted while unsent; sent rows stay for a retention
window (useful when reconciling with central) and are then pruned.

Durability: the database runs in WAL mode with ``synchronous=FULL`` by default, because with
``NORMAL`` a power loss can roll back transactions that had already committed, and a crossing that
was reported to the engine as stored must survive that. Appending allocates the stream's sequence
number, builds the payload and inserts the row in one transaction, so a payload on the wire always
carries a sequence number that is durably taken.

Threads: one connection guarded by a lock. Both threads write, and SQLite serialises writers anyway,
so a lock costs nothing in throughput and removes ``SQLITE_BUSY`` handling between our own threads;
the busy timeout only covers other processes (an operator's sqlite3 shell).

Schema versions live in ``PRAGMA user_version`` so later releases (size caps, confirmation
watermarks) can migrate.

Exceptions::

    OutboxError
     ├── OutboxClosedError
     ├── OutboxSchemaError
     └── OutboxRowNotFoundError
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agent.uplink.topics import validate_topic_name

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_RETAIN_SENT_S = 24 * 3600.0

# AUTOINCREMENT on outbox.id: row ids appear in logs and in central's reconciliation, so a pruned id
# is never handed out again.
_SCHEMA = (
    """
    CREATE TABLE stream_seq (
        stream   TEXT PRIMARY KEY,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE outbox (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        stream     TEXT    NOT NULL,
        seq        INTEGER NOT NULL,
        topic      TEXT    NOT NULL,
        payload    BLOB    NOT NULL,
        qos        INTEGER NOT NULL,
        retain     INTEGER NOT NULL,
        priority   INTEGER NOT NULL,
        created_at REAL    NOT NULL,
        sent_at    REAL,
        UNIQUE (stream, seq)
    )
    """,
    "CREATE INDEX outbox_unsent ON outbox (priority, id) WHERE sent_at IS NULL",
    "CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL",
)

_SELECT_PENDING = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE sent_at IS NULL ORDER BY priority, id LIMIT ?"
)
_SELECT_PENDING_EXCLUDING = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE sent_at IS NULL AND id NOT IN (SELECT value FROM json_each(?))"
    " ORDER BY priority, id LIMIT ?"
)
_SELECT_BY_ID = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE id = ?"
)


_SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class OutboxError(Exception):
    """Base class for outbox failures."""


class OutboxClosedError(OutboxError):
    """The outbox was used after close()."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"outbox {path} is closed")
        self.path = path


class OutboxSchemaError(OutboxError):
    """The file was written by a newer release whose schema this one does not know."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        super().__init__(
            f"outbox {path} has schema version {found}, this release supports up to {supported}: "
            "run the release that wrote it, or move the file aside after its rows were delivered"
        )
        self.path = path
        self.found = found
        self.supported = supported


class OutboxRowNotFoundError(OutboxError):
    """mark_sent() named a row id that is not in the outbox."""

    def __init__(self, row_id: int) -> None:
        super().__init__(f"outbox row {row_id} does not exist")
        self.row_id = row_id


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored message; repr() leaves out the payload, which carries card numbers and plates."""

    id: int
    stream: str
    seq: int
    topic: str
    payload: bytes = field(repr=False)
    qos: int
    retain: bool
    priority: int
    created_at: float
    sent_at: float | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A snapshot for health reporting."""

    depth: int
    """Rows not yet acknowledged by the broker."""
    oldest_unsent_age_s: float | None
    """Seconds since the oldest unsent row was appended; None when nothing is waiting."""
    total_rows: int
    """Unsent plus sent rows still inside the retention window."""
    last_seq: dict[str, int]
    """Last sequence number handed out, per stream."""


_RowTuple = tuple[int, str, int, str, bytes, int, int, int, float, float | None]


def _row_from_tuple(values: _RowTuple) -> OutboxRow:
    (row_id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at) = values
    return OutboxRow(
        id=row_id,
        stream=stream,
        seq=seq,
        topic=topic,
        payload=payload,
        qos=qos,
        retain=bool(retain),
        priority=priority,
        created_at=created_at,
        sent_at=sent_at,
    )


def _create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite opens it.

    SQLite gives the -wal and -shm files the permissions of the database file, so they inherit 0600.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class Outbox:
    """SQLite outbox shared by the engine thread (append) and the publisher thread (read, mark)."""

    def __init__(
        self,
        path: Path,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        retain_sent_s: float = DEFAULT_RETAIN_SENT_S,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if retain_sent_s < 0:
            raise ValueError(f"retain_sent_s must be >= 0, not {retain_sent_s!r}")
        self.path = Path(path)
        self.retain_sent_s = retain_sent_s
        self._clock = clock
        self._lock = threading.Lock()
        _create_private_file(self.path)
        connection = sqlite3.connect(
            self.path,
            timeout=busy_timeout_s,  # the busy timeout, for other processes holding the write lock
            isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE … COMMIT
            check_same_thread=False,  # shared by two threads, serialised by self._lock
        )
        try:
            self._configure(connection, synchronous)
        except BaseException:
            connection.close()
            raise
        self._connection: sqlite3.Connection | None = connection
        pruned = self.prune_sent()
        stats = self.stats()
        log.info(
            "outbox %s open: %d unsent, %d rows, %d pruned",
            self.path,
            stats.depth,
            stats.total_rows,
            pruned,
        )

    def _configure(self, connection: sqlite3.Connection, synchronous: str) -> None:
        (journal_mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
        if str(journal_mode).lower() != "wal":
            raise OutboxError(
                f"outbox {self.path}: could not enable WAL, journal mode is {journal_mode}"
            )
        connection.execute(f"PRAGMA synchronous = {synchronous}")
        connection.execute("BEGIN IMMEDIATE")
        try:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise OutboxSchemaError(self.path, version, SCHEMA_VERSION)
            if version == 0:  # a new file; later schema versions add their migrations here
                # Statement by statement: executescript() would commit the transaction half-way.
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and an immediate (write) transaction; commit on success, else roll back."""
        with self._lock:
            connection = self._connection
            if connection is None:
                raise OutboxClosedError(self.path)
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            connection = self._connection
            if connection is None:
                raise OutboxClosedError(self.path)
            yield connection

    def append(
        self,
        *,
        topic: str,
        build_payload: Callable[[int], bytes],
        stream: str = "crossing",
        qos: int = 1,
        retain: bool = False,
        priority: int = 0,
    ) -> OutboxRow:
        """Durably store one message and return it.

        ``build_payload`` receives the sequence number allocated for ``stream`` and returns the
        payload; it runs inside the write transaction, so keep it to serialisation. If it raises,
        nothing is stored and the sequence number is handed out again next time (it was never
        visible to anyone).

        Lower ``priority`` values are sent first; rows of equal priority go in append order.
        """
        validate_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if not stream:
            raise ValueError("stream must not be empty")
        with self._transaction() as connection:
            (seq,) = connection.execute(
                "INSERT INTO stream_seq (stream, last_seq) VALUES (?, 1) "
                "ON CONFLICT (stream) DO UPDATE SET last_seq = last_seq + 1 RETURNING last_seq",
                (stream,),
            ).fetchone()
            payload = bytes(build_payload(seq))
            created_at = self._clock()
            cursor = connection.execute(
                "INSERT INTO outbox"
                " (stream, seq, topic, payload, qos, retain, priority, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (stream, seq, topic, payload, qos, int(retain), priority, created_at),
            )
            row_id = cursor.lastrowid
            assert row_id is not None
        return OutboxRow(
            id=row_id,
            stream=stream,
            seq=seq,
            topic=topic,
            payload=payload,
            qos=qos,
            retain=retain,
            priority=priority,
            created_at=created_at,
            sent_at=None,
        )

    def pending(self, limit: int, *, exclude_ids: Collection[int] = ()) -> list[OutboxRow]:
        """Up to ``limit`` unsent rows, by priority then append order.

        ``exclude_ids`` lets the publisher skip rows it already has in flight or is holding back
        after a refusal.
        """
        if limit <= 0:
            return []
        with self._reading() as connection:
            if exclude_ids:
                # One JSON parameter instead of one parameter per id: no limit on how many rows are
                # held back.
                excluded = "[" + ",".join(str(int(row_id)) for row_id in exclude_ids) + "]"
                cursor = connection.execute(_SELECT_PENDING_EXCLUDING, (excluded, limit))
            else:
                cursor = connection.execute(_SELECT_PENDING, (limit,))
            return [_row_from_tuple(values) for values in cursor.fetchall()]

    def get(self, row_id: int) -> OutboxRow | None:
        """The row with this id, sent or not; None once pruned or if it never existed."""
        with self._reading() as connection:
            values = connection.execute(_SELECT_BY_ID, (row_id,)).fetchone()
        return None if values is None else _row_from_tuple(values)

    def mark_sent(self, row_id: int) -> None:
        """Record that the broker acknowledged this row; marking it again keeps the first time."""
        if self.mark_sent_many([row_id]) == 0:
            with self._reading() as connection:
                exists = connection.execute(
                    "SELECT 1 FROM outbox WHERE id = ?", (row_id,)
                ).fetchone()
            if exists is None:
                raise OutboxRowNotFoundError(row_id)

    def mark_sent_many(self, row_ids: Iterable[int]) -> int:
        """Mark several rows sent in one transaction (one fsync); return how many were unsent.

        Unknown ids are ignored: the publisher calls this with whatever the broker acknowledged.
        """
        ids = [(row_id,) for row_id in row_ids]
        if not ids:
            return 0
        sent_at = self._clock()
        with self._transaction() as connection:
            before = connection.total_changes
            connection.executemany(
                "UPDATE outbox SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                [(sent_at, row_id) for (row_id,) in ids],
            )
            return connection.total_changes - before

    def prune_sent(self) -> int:
        """Delete sent rows older than the retention window; returns how many went."""
        cutoff = self._clock() - self.retain_sent_s
        with self._transaction() as connection:
            cursor = connection.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,)
            )
            return cursor.rowcount

    def stats(self) -> OutboxStats:
        """Depth, oldest unsent age, row count and last sequence number per stream."""
        with self._reading() as connection:
            depth, oldest = connection.execute(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE sent_at IS NULL"
            ).fetchone()
            (total,) = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()
            last_seq = dict(
                connection.execute("SELECT stream, last_seq FROM stream_seq").fetchall()
            )
        age = None if oldest is None else max(0.0, self._clock() - oldest)
        return OutboxStats(
            depth=depth, oldest_unsent_age_s=age, total_rows=total, last_seq=last_seq
        )

    @property
    def synchronous(self) -> str:
        """The durability level SQLite actually runs with: 'FULL', 'NORMAL' (or what it reports)."""
        with self._reading() as connection:
            (level,) = connection.execute("PRAGMA synchronous").fetchone()
        return _SYNCHRONOUS_NAMES.get(level, str(level))

    def close(self) -> None:
        """Close the database; further calls raise OutboxClosedError. Closing twice is harmless."""
        with self._lock:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
