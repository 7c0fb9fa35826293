"""Durable outbox: every message the lane sends is committed here before anything else happens.

The engine thread appends; the uplink's publisher thread reads pending rows and its marker thread
marks them sent once the broker has acknowledged them. A PUBACK is not end to end (a broker may
lose its queue in a crash), so a sent row stays until central ingest confirms it with its
acknowledgement watermark
(:meth:`Outbox.confirm`: every row of the stream up to that sequence number is stored centrally)
or, for streams nobody confirms, until the retention window ends. After a reconnect the publisher
calls :meth:`Outbox.requeue_unconfirmed` so rows the broker acknowledged but ingest never confirmed
go out again.

Bounded disk: ``max_bytes`` caps the file (``PRAGMA max_page_count``; the WAL is kept small with
``journal_size_limit``). Rows carry a priority: ``PRIORITY_CROSSING`` (0) rows are never evicted;
rows with a higher priority value (health, images) are evicted to make room, the least important
(highest value) and oldest first, and may only fill the cap up to a reserve that is kept for
crossings. When a row cannot be stored (cap reached with nothing left to evict, disk full, I/O
error), :meth:`Outbox.append` raises :class:`OutboxFullError` and stores nothing: the caller must
keep the record and try again (see ``agent.state.holding``).

A damaged file is never deleted: :func:`agent.state.recovery.open_outbox` moves it aside and
starts a fresh outbox; :class:`Outbox` itself only refuses it (:class:`OutboxCorruptError`).

Durability: the database runs in WAL mode with ``synchronous=FULL`` by default, because with
``NORMAL`` a power loss can roll back transactions that had already committed, and a crossing that
was reported to the engine as stored must survive that. Appending allocates the stream's sequence
number, builds the payload and inserts the row in one transaction, so a payload on the wire always
carries a sequence number that is durably taken.

Threads: one connection guarded by a lock. Both threads write, and SQLite serialises writers anyway,
so a lock costs nothing in throughput and removes ``SQLITE_BUSY`` handling between our own threads;
the busy timeout only covers other processes (an operator's sqlite3 shell).

The file's tables and their migrations are in :mod:`agent.state.schema`.

Exceptions::

    OutboxError
     ├── OutboxClosedError
     ├── OutboxSchemaError
     ├── OutboxCorruptError
     ├── OutboxFullError
     └── OutboxRowNotFoundError
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from agent.state.schema import SCHEMA_VERSION, migrate
from agent.wire.topics import validate_topic_name

log = logging.getLogger(__name__)

_T = TypeVar("_T")

DEFAULT_RETAIN_SENT_S = 24 * 3600.0
DEFAULT_MAX_BYTES = 1 << 30

PRIORITY_CROSSING = 0
"""Crossing events: sent first, never evicted."""
PRIORITY_HEALTH = 50
"""Health and diagnostics records: evicted before crossings, after images."""
PRIORITY_IMAGE = 100
"""Plate images and other bulky evidence: the first to go when the outbox is full."""

_RESERVE_FRACTION = 0.1  # share of the cap only crossings may use, so images never crowd them out
_EVICT_BATCH = 64  # rows deleted per eviction step
_JOURNAL_SIZE_LIMIT = 4 << 20  # the WAL is truncated to this after a checkpoint
_SQLITE_FULL = 13
_EVICTION_LOG_INTERVAL_S = 60.0

_SELECT_PENDING = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE sent_at IS NULL ORDER BY priority, id LIMIT ?"
)
_SELECT_PENDING_EXCLUDING = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE sent_at IS NULL AND id NOT IN (SELECT value FROM json_each(?))"
    " ORDER BY priority, id LIMIT ?"
)
_SELECT_PENDING_EXCLUDING_TOPICS = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE sent_at IS NULL AND topic NOT IN (SELECT value FROM json_each(?))"
    " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY priority, id LIMIT ?"
)
_SELECT_PENDING_OF_PRIORITY = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE sent_at IS NULL AND priority = ?"
    " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
)
_SELECT_PENDING_AFTER = (
    "SELECT id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at"
    " FROM outbox WHERE sent_at IS NULL AND (priority, id) > (?, ?) ORDER BY priority, id LIMIT ?"
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


class OutboxCorruptError(OutboxError):
    """The file is not a readable SQLite outbox (damaged, truncated, or something else entirely)."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"outbox {path} is damaged: {detail}")
        self.path = path
        self.detail = detail


class OutboxFullError(OutboxError):
    """A record could not be stored: cap reached with nothing evictable, disk full, or I/O error.

    ``reason`` is ``"cap"``, ``"disk_full"`` or ``"io_error"``. Nothing was stored.
    """

    def __init__(self, path: Path, stream: str, priority: int, reason: str, detail: str) -> None:
        super().__init__(
            f"outbox {path} cannot store a {stream!r} record (priority {priority}): {reason}: "
            f"{detail}"
        )
        self.path = path
        self.stream = stream
        self.priority = priority
        self.reason = reason
        self.detail = detail


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
    acked_seq: dict[str, int]
    """Acknowledgement watermark confirmed by central ingest, per stream (absent: never)."""
    size_bytes: int
    """Pages in use (free pages excluded) times the page size."""
    max_bytes: int | None
    """The configured cap; None when uncapped."""
    evicted: int
    """Lower-priority rows evicted to keep under the cap since the outbox was opened."""


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    """What one acknowledgement watermark did."""

    stream: str
    acked_seq: int
    """The watermark now stored (unchanged when the one received was not higher)."""
    removed: int
    """Rows deleted because central has them."""
    ahead: bool
    """The watermark named a sequence number this outbox never handed out; it was not applied."""


_RowTuple = tuple[int, str, int, str, bytes, int, int, int, float, float | None]


def _row_from_tuple(values: _RowTuple) -> OutboxRow:
    # Positional, in field order: the publisher builds one per message, and keywords cost a third.
    (row_id, stream, seq, topic, payload, qos, retain, priority, created_at, sent_at) = values
    return OutboxRow(
        row_id, stream, seq, topic, payload, qos, bool(retain), priority, created_at, sent_at
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
        max_bytes: int | None = None,
        busy_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Open or create the outbox; raises OutboxCorruptError for a damaged file.

        ``max_bytes`` caps the database file (None: no cap beyond the disk). A cap below the size
        the file already has takes effect as rows are removed.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if retain_sent_s < 0:
            raise ValueError(f"retain_sent_s must be >= 0, not {retain_sent_s!r}")
        if max_bytes is not None and max_bytes < 64 * 1024:
            raise ValueError(f"max_bytes must be at least 65536, not {max_bytes!r}")
        self.path = Path(path)
        self.retain_sent_s = retain_sent_s
        self.max_bytes = max_bytes
        self._page_size = 4096
        self._max_pages: int | None = None
        self._evicted_total = 0
        self._evicted_unlogged = 0
        self._next_eviction_log_at = 0.0
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
        except sqlite3.DatabaseError as error:
            connection.close()
            if isinstance(error, sqlite3.OperationalError) and not _is_corruption(error):
                raise  # locked, unreadable, no space: not a damaged file
            raise OutboxCorruptError(self.path, str(error)) from error
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
        connection.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        (self._page_size,) = connection.execute("PRAGMA page_size").fetchone()
        if self.max_bytes is not None:
            # SQLite never lowers the limit below the pages the file already has.
            (self._max_pages,) = connection.execute(
                f"PRAGMA max_page_count = {max(1, self.max_bytes // self._page_size)}"
            ).fetchone()
        connection.execute("BEGIN IMMEDIATE")
        try:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise OutboxSchemaError(self.path, version, SCHEMA_VERSION)
            migrate(connection, version)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        # A damaged page would otherwise only show up when the publisher reaches it.
        problems = [row[0] for row in connection.execute("PRAGMA quick_check(5)").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(str(problem) for problem in problems))

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
                connection.execute("COMMIT")
            except BaseException:
                # After SQLITE_FULL or an I/O error SQLite may already have rolled back.
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    def transact(
        self, work: Callable[[sqlite3.Connection], _T], *, make_room_for: int | None = None
    ) -> _T:
        """Run ``work`` in one write transaction on the outbox connection; return its result.

        For tables that live beside the outbox (the input journal): committed when ``work``
        returns, rolled back if it raises. Storage failures surface as ``sqlite3.OperationalError``.

        With ``make_room_for`` (a priority), a transaction that finds no room evicts rows the way
        :meth:`append` does for a row of that priority and runs ``work`` again: the input
        journal, which holds the vehicle at the booth, gets the room a crossing would get.
        """

        def attempt() -> _T:
            with self._transaction() as connection:
                return work(connection)

        if make_room_for is None:
            return attempt()
        return self._with_room(make_room_for, attempt, None)

    def _with_room(
        self,
        priority: int,
        attempt: Callable[[], _T],
        full_error: Callable[[str, sqlite3.OperationalError], Exception] | None,
    ) -> _T:
        """Run ``attempt``; when storage is full, evict rows below ``priority`` once and retry.

        Evicting once is enough to know: if a batch of evictable rows did not make room the disk
        itself is full, and more deleting will not help. A failure that remains raises
        ``full_error(reason, error)``, or the SQLite error itself when that is None.
        """
        evicted_for_it = False
        while True:
            try:
                return attempt()
            except sqlite3.OperationalError as error:
                reason = self._storage_failure(error)
                if reason is None:
                    raise
                if reason in ("cap", "disk_full") and not evicted_for_it:
                    batch = _EVICT_BATCH if reason == "cap" else 1024
                    if self._evict(priority, batch):
                        evicted_for_it = True
                        continue
                if full_error is None:
                    raise
                raise full_error(reason, error) from error

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
        priority: int = PRIORITY_CROSSING,
        in_transaction: Callable[[sqlite3.Connection], None] | None = None,
    ) -> OutboxRow:
        """Durably store one message and return it, or raise OutboxFullError having stored nothing.

        ``build_payload`` receives the sequence number allocated for ``stream`` and returns the
        payload; it runs inside the write transaction, so keep it to serialisation. If it raises,
        nothing is stored and the sequence number is handed out again next time (it was never
        visible to anyone).

        Lower ``priority`` values are sent first; rows of equal priority go in append order.
        ``PRIORITY_CROSSING`` (0) rows are never evicted; to store one when the cap is reached,
        rows with a higher value are evicted. A row with a higher value may only fill the cap up to
        the crossings' reserve, evicting rows of its own or a less important priority to get there.

        ``in_transaction`` runs on the connection right after the row is inserted, in the same
        transaction: the input journal clears the inputs a crossing consumed there, so that the
        crossing and the clearing are stored together or not at all.
        """
        validate_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {qos!r}")
        if not stream:
            raise ValueError("stream must not be empty")
        if priority < 0:
            raise ValueError(f"priority must be >= 0, not {priority!r}")
        if priority > PRIORITY_CROSSING:
            self._keep_reserve(stream, priority)
        return self._with_room(
            priority,
            lambda: self._insert(
                topic, build_payload, stream, qos, retain, priority, in_transaction
            ),
            lambda reason, error: OutboxFullError(self.path, stream, priority, reason, str(error)),
        )

    def _insert(
        self,
        topic: str,
        build_payload: Callable[[int], bytes],
        stream: str,
        qos: int,
        retain: bool,
        priority: int,
        in_transaction: Callable[[sqlite3.Connection], None] | None = None,
    ) -> OutboxRow:
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
            if in_transaction is not None:
                in_transaction(connection)
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

    def _storage_failure(self, error: sqlite3.OperationalError) -> str | None:
        """Like the module's ``_storage_failure``, telling a reached cap from a full disk."""
        reason = _storage_failure(error)
        if reason != "cap":
            return reason
        if self._max_pages is None:
            return "disk_full"
        try:
            with self._reading() as connection:
                used = self._used_pages(connection)
        except sqlite3.Error:
            return "disk_full"
        # An insert needs a few pages (row, indexes): close to the cap counts as the cap.
        return "cap" if used >= self._max_pages - 8 else "disk_full"

    def _used_pages(self, connection: sqlite3.Connection) -> int:
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        (free,) = connection.execute("PRAGMA freelist_count").fetchone()
        return int(pages) - int(free)

    def _keep_reserve(self, stream: str, priority: int) -> None:
        """Before a lower-priority append: evict its peers until it fits outside the reserve."""
        if self._max_pages is None:
            return
        limit = int(self._max_pages * (1.0 - _RESERVE_FRACTION))
        while True:
            with self._reading() as connection:
                used = self._used_pages(connection)
            if used < limit:
                return
            if not self._evict(priority, _EVICT_BATCH):
                raise OutboxFullError(
                    self.path,
                    stream,
                    priority,
                    "cap",
                    f"{used} of {self._max_pages} pages in use; the rest is kept for crossings",
                )

    def _evict(self, priority: int, count: int) -> int:
        """Delete up to ``count`` rows that may make room for a row of ``priority``.

        Sent rows go first (the broker has them), then unsent ones; the least important priority
        and the oldest first. Crossing rows (priority 0) are never chosen. Returns how many went;
        on a disk so full that even a delete fails, 0.
        """
        floor = max(priority, PRIORITY_CROSSING + 1)
        try:
            with self._transaction() as connection:
                cursor = connection.execute(
                    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE priority >= ?"
                    " ORDER BY sent_at IS NULL, priority DESC, id LIMIT ?)",
                    (floor, count),
                )
                evicted = cursor.rowcount
        except sqlite3.OperationalError as error:
            if _storage_failure(error) is None:
                raise
            log.warning("outbox %s: could not evict rows to make room: %s", self.path, error)
            return 0
        if evicted:
            self._evicted_total += evicted
            self._evicted_unlogged += evicted
            now = time.monotonic()
            if now >= self._next_eviction_log_at:  # images may evict images on every append
                self._next_eviction_log_at = now + _EVICTION_LOG_INTERVAL_S
                log.warning(
                    "outbox %s at its size cap: evicted %d lower-priority rows (%d since start)",
                    self.path,
                    self._evicted_unlogged,
                    self._evicted_total,
                )
                self._evicted_unlogged = 0
        return evicted

    def pending(
        self,
        limit: int,
        *,
        exclude_ids: Collection[int] = (),
        exclude_topics: Collection[str] = (),
        after: tuple[int, int] | None = None,
    ) -> list[OutboxRow]:
        """Up to ``limit`` unsent rows, by priority then append order.

        ``exclude_ids`` and ``exclude_topics`` let the publisher skip rows it already has in
        flight or is holding back after a refusal. ``after`` (a ``(priority, id)`` pair, the last
        row of the previous batch) continues a scan where that batch ended, with no exclusions: an
        index seek instead of testing each row against a list of ids. Only the caller knows whether
        a row may have become pending before that point since (a re-queue, a failed mark, an append
        of a more urgent priority); after any of those it starts a fresh scan.
        """
        if limit <= 0:
            return []
        if after is not None and (exclude_ids or exclude_topics):
            raise ValueError("pending(): 'after' continues a scan and excludes nothing")
        with self._reading() as connection:
            if after is not None:
                cursor = connection.execute(_SELECT_PENDING_AFTER, (after[0], after[1], limit))
            elif exclude_topics:
                cursor = connection.execute(
                    _SELECT_PENDING_EXCLUDING_TOPICS,
                    (json.dumps(sorted(exclude_topics)), _ids_json(exclude_ids), limit),
                )
            elif exclude_ids:
                # One JSON parameter instead of one parameter per id: no limit on how many rows are
                # held back.
                cursor = connection.execute(
                    _SELECT_PENDING_EXCLUDING, (_ids_json(exclude_ids), limit)
                )
            else:
                cursor = connection.execute(_SELECT_PENDING, (limit,))
            return [_row_from_tuple(values) for values in cursor.fetchall()]

    def pending_of_priority(
        self, priority: int, limit: int, *, exclude_ids: Collection[int] = ()
    ) -> list[OutboxRow]:
        """Up to ``limit`` unsent rows of one ``priority``, in append order, but ``exclude_ids``.

        For the publisher to pick up crossings appended while it has lower-priority rows read
        ahead, without reading those again.
        """
        if limit <= 0:
            return []
        with self._reading() as connection:
            cursor = connection.execute(
                _SELECT_PENDING_OF_PRIORITY, (priority, _ids_json(exclude_ids), limit)
            )
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
        ids = row_ids if isinstance(row_ids, Collection) else list(row_ids)
        if not ids:
            return 0
        sent_at = self._clock()
        with self._transaction() as connection:
            # One statement with the ids as one JSON parameter: about a third cheaper per row than
            # executemany() (no per-row binding and stepping from Python).
            cursor = connection.execute(
                "UPDATE outbox SET sent_at = ? WHERE id IN (SELECT value FROM json_each(?))"
                " AND sent_at IS NULL",
                (sent_at, _ids_json(ids)),
            )
            return cursor.rowcount

    def prune_sent(self) -> int:
        """Delete sent rows older than the retention window; returns how many went.

        Rows of a stream central confirms normally leave earlier, through :meth:`confirm`; the
        retention window bounds how long they wait when ingest stops confirming.
        """
        cutoff = self._clock() - self.retain_sent_s
        with self._transaction() as connection:
            cursor = connection.execute(
                "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", (cutoff,)
            )
            return cursor.rowcount

    def confirm(self, stream: str, acked_seq: int) -> ConfirmResult:
        """Apply central ingest's watermark: rows of ``stream`` up to ``acked_seq`` are stored there.

        Those rows are deleted, sent or not (a row whose PUBACK was lost in a crash need not go
        again). A watermark lower than the stored one changes nothing; one above the last sequence
        number this outbox handed out is not applied (``ahead``): it belongs to another numbering,
        for instance an outbox replaced after damage, and applying it would drop unsent rows.
        """
        if acked_seq < 0:
            raise ValueError(f"acked_seq must be >= 0, not {acked_seq!r}")
        with self._transaction() as connection:
            found = connection.execute(
                "SELECT last_seq FROM stream_seq WHERE stream = ?", (stream,)
            ).fetchone()
            last_seq = 0 if found is None else int(found[0])
            stored = connection.execute(
                "SELECT acked_seq FROM stream_ack WHERE stream = ?", (stream,)
            ).fetchone()
            previous = None if stored is None else int(stored[0])
            if acked_seq > last_seq:
                return ConfirmResult(stream, previous or 0, 0, ahead=True)
            if previous is not None and acked_seq <= previous:
                return ConfirmResult(stream, previous, 0, ahead=False)
            connection.execute(
                "INSERT INTO stream_ack (stream, acked_seq, received_at) VALUES (?, ?, ?)"
                " ON CONFLICT (stream) DO UPDATE SET acked_seq = excluded.acked_seq,"
                " received_at = excluded.received_at",
                (stream, acked_seq, self._clock()),
            )
            cursor = connection.execute(
                "DELETE FROM outbox WHERE stream = ? AND seq <= ?", (stream, acked_seq)
            )
            return ConfirmResult(stream, acked_seq, cursor.rowcount, ahead=False)

    def requeue_unconfirmed(self) -> int:
        """Make sent rows of confirmed streams pending again; returns how many.

        Called after a reconnect: the broker acknowledged these rows but ingest has not confirmed
        them, and a broker that crashed may have lost them. Streams no ingest has ever confirmed
        are left alone, or every reconnect would re-send the whole retention window.
        """
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE outbox SET sent_at = NULL WHERE sent_at IS NOT NULL"
                " AND stream IN (SELECT stream FROM stream_ack)"
            )
            return cursor.rowcount

    def continue_sequences(self, last_seq: dict[str, int]) -> None:
        """Raise each stream's last sequence number to at least the given one (never lower it).

        Used when a fresh outbox replaces a damaged one, so the numbers central sees keep going up.
        """
        with self._transaction() as connection:
            connection.executemany(
                "INSERT INTO stream_seq (stream, last_seq) VALUES (?, ?) ON CONFLICT (stream)"
                " DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq)",
                list(last_seq.items()),
            )

    def stats(self) -> OutboxStats:
        """Depth, oldest unsent age, row count, size and sequence numbers per stream."""
        with self._reading() as connection:
            depth, oldest = connection.execute(
                "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE sent_at IS NULL"
            ).fetchone()
            (total,) = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()
            last_seq = dict(
                connection.execute("SELECT stream, last_seq FROM stream_seq").fetchall()
            )
            acked_seq = dict(
                connection.execute("SELECT stream, acked_seq FROM stream_ack").fetchall()
            )
            used = self._used_pages(connection)
        age = None if oldest is None else max(0.0, self._clock() - oldest)
        return OutboxStats(
            depth=depth,
            oldest_unsent_age_s=age,
            total_rows=total,
            last_seq=last_seq,
            acked_seq=acked_seq,
            size_bytes=used * self._page_size,
            max_bytes=self.max_bytes,
            evicted=self._evicted_total,
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


def _storage_failure(error: sqlite3.OperationalError) -> str | None:
    """'cap' (SQLITE_FULL) or 'io_error' when ``error`` means a write found no room; else None.

    SQLite reports both a reached ``max_page_count`` and a full file system as SQLITE_FULL;
    :meth:`Outbox._storage_failure` tells them apart.
    """
    code = getattr(error, "sqlite_errorcode", None)
    name = getattr(error, "sqlite_errorname", "") or ""
    if code == _SQLITE_FULL or name == "SQLITE_FULL":
        return "cap"
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in str(error):
        return "io_error"
    return None


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    name = getattr(error, "sqlite_errorname", "") or ""
    return name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(error)


def _ids_json(row_ids: Collection[int]) -> str:
    return "[" + ",".join(str(int(row_id)) for row_id in row_ids) + "]"
