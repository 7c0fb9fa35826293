"""The credential cache: one SQLite file the lane matches card reads against.

Schema (``PRAGMA user_version`` 1, ``application_id`` "LACC"):

- ``credential`` — WITHOUT ROWID, keyed by the EPC as bytes; one row holds the whole record,
  vehicles packed (see :mod:`agent.cache.records` for the encoding and the measurements behind it).
- ``document_type``/``program``/``status`` — code to name, so tooling can read the integers;
  ``credential_view`` decodes a row into readable columns
  (``sqlite-utils rows credentials.db credential_view``).
- ``meta`` — WITHOUT ROWID key/value: ``data_version``, ``imported_at``, ``source`` of the last
  successful import.

Lookups go through one statement on one connection (the sqlite3 statement cache keeps it
prepared), guarded by a lock so the lane thread and a maintenance thread can share a cache.
Imports validate and write in a single pass inside one transaction and roll back if any record is
invalid: memory stays flat at millions of records, and the cache is untouched by a refused import.

Exceptions::

    CacheError                 anything the cache refuses or cannot do
    ├── CacheOpenError         the file cannot be used as a credential cache (path, reason)
    └── CacheImportError       an import was refused (problems, omitted)
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from agent.cache import records
from agent.cache.records import Problem, ReadMeter, SourceRecord, StorageRow
from agent.lane.credentials import Credential, CredentialStatus, Program

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = int.from_bytes(b"LACC", "big")
"""Marks the file as a lane-agent credential cache (``PRAGMA application_id``)."""

FILE_MODE = 0o600
MAX_REPORTED_PROBLEMS = 50
IMPORT_CHUNK_ROWS = 10_000
PROGRESS_CHECK_RECORDS = 1024  # records between looks at the clock for progress reports
BUSY_TIMEOUT_MS = 5_000
CACHE_SIZE_KIB = 32 * 1024  # page cache for a plain import's bulk upserts, while it runs
LOOKUP_CACHE_KIB = 2 * 1024
"""SQLite's own page cache for the lookups (its default size).

SQLite empties a connection's page cache at its first read after another connection committed,
and that costs time in proportion to what it holds: after a 100k-change delta at 15 M records
the first lookup took 7-12 ms of CPU with 32 MiB and 0.5-0.6 ms with 2 MiB, while steady lookups
were no slower with 2 MiB (p50 14.7 against 16.0 µs: the kernel's page cache, kept by
``cache.lock_in_memory``, holds the file). Figures in BENCHMARKS.md.
"""
JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024  # WAL shrinks back to this after a checkpoint
FILE_SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv"}

_LOOKUP_SQL = (
    "SELECT ref, document_type, program, status, valid_from, valid_until, holder_ref, vehicles"
    " FROM credential WHERE ref = ?"
)
_UPSERT_SQL = (
    "INSERT INTO credential"
    " (ref, document_type, program, status, valid_from, valid_until, holder_ref, vehicles)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (ref) DO UPDATE SET document_type = excluded.document_type,"
    " program = excluded.program, status = excluded.status, valid_from = excluded.valid_from,"
    " valid_until = excluded.valid_until, holder_ref = excluded.holder_ref,"
    " vehicles = excluded.vehicles"
)
_CREATE_TABLES = """
CREATE TABLE credential (
    ref BLOB PRIMARY KEY NOT NULL,
    document_type INTEGER NOT NULL REFERENCES document_type (code),
    program INTEGER NOT NULL REFERENCES program (code),
    status INTEGER NOT NULL REFERENCES status (code),
    valid_from INTEGER NOT NULL,
    valid_until INTEGER NOT NULL,
    holder_ref TEXT NOT NULL,
    vehicles TEXT
) WITHOUT ROWID;
CREATE TABLE meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""
_VIEW_SQL = """
SELECT hex(credential.ref) AS ref,
       document_type.name AS document_type,
       program.name AS program,
       status.name AS status,
       strftime('%Y-%m-%dT%H:%M:%SZ', credential.valid_from, 'unixepoch') AS valid_from,
       strftime('%Y-%m-%dT%H:%M:%SZ', credential.valid_until, 'unixepoch') AS valid_until,
       credential.holder_ref AS holder_ref,
       coalesce(credential.vehicles, '') AS vehicles
FROM credential
JOIN document_type ON document_type.code = credential.document_type
JOIN program ON program.code = credential.program
JOIN status ON status.code = credential.status
"""
_CODE_TABLES: Mapping[str, Mapping[str, int]] = {
    "document_type": {str(m): c for m, c in records.DOCUMENT_TYPE_CODES.items()},
    "program": {str(m): c for m, c in records.PROGRAM_CODES.items()},
    "status": {str(m): c for m, c in records.STATUS_CODES.items()},
}
_TABLES = frozenset({"credential", "meta", *_CODE_TABLES})


class CacheError(Exception):
    """The credential cache refused or could not do something."""


class CacheOpenError(CacheError):
    """The file cannot be used as a credential cache."""

    def __init__(self, path: Path, reason: str, remedy: str) -> None:
        self.path = path
        self.reason = reason
        self.remedy = remedy
        super().__init__(f"credential cache {path}: {reason}; {remedy}")

    def __repr__(self) -> str:
        return f"CacheOpenError(path={str(self.path)!r}, reason={self.reason!r})"


class CacheImportError(CacheError):
    """An import was refused; nothing of it was written.

    ``problems`` holds up to ``MAX_REPORTED_PROBLEMS`` lines of the form
    ``file:line: field: value: what is allowed``; ``omitted`` counts the ones left out. The lines
    quote the offending values (refs, plates): show them to the operator, never log them above
    DEBUG.
    """

    def __init__(self, problems: list[str], *, omitted: int = 0) -> None:
        self.problems = problems
        self.omitted = omitted
        lines = [f"import refused, {len(problems) + omitted} problem(s):", *problems]
        if omitted:
            lines.append(f"... and {omitted} more")
        super().__init__("\n".join(lines))

    def __repr__(self) -> str:
        return f"CacheImportError(problems={len(self.problems)}, omitted={self.omitted})"


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What one successful import changed."""

    source: str
    data_version: str
    records: int
    added: int
    replaced: int
    imported_at: datetime
    duration_s: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for the CLI."""
        return {
            "source": self.source,
            "data_version": self.data_version,
            "records": self.records,
            "added": self.added,
            "replaced": self.replaced,
            "imported_at": records.format_timestamp(self.imported_at),
            "duration_s": round(self.duration_s, 3),
        }


@dataclass(frozen=True, slots=True)
class ImportProgress:
    """How far a running import has got (for a progress bar or log line)."""

    records: int
    """Records read so far, valid or not."""
    bytes_read: int
    total_bytes: int | None
    """Size of the file; None for records given in code."""
    elapsed_s: float

    @property
    def share(self) -> float | None:
        """The part of the file read, 0..1; None when the size is not known."""
        if not self.total_bytes:
            return None
        return min(self.bytes_read / self.total_bytes, 1.0)


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counts and provenance of a cache; counts only, never a record.

    ``file_size_bytes`` is the database file plus its WAL, what the cache costs on disk.
    """

    path: Path
    credentials: int
    vehicles: int
    by_status: Mapping[str, int]
    by_program: Mapping[str, int]
    data_version: str | None
    imported_at: datetime | None
    source: str | None
    file_size_bytes: int

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for the CLI."""
        return {
            "path": str(self.path),
            "credentials": self.credentials,
            "vehicles": self.vehicles,
            "by_status": dict(self.by_status),
            "by_program": dict(self.by_program),
            "data_version": self.data_version,
            "imported_at": (
                None if self.imported_at is None else records.format_timestamp(self.imported_at)
            ),
            "source": self.source,
            "file_size_bytes": self.file_size_bytes,
        }


def _create_private_file(path: Path) -> None:
    """Create an empty file readable by its owner only, whatever the umask says.

    SQLite gives the -wal and -shm files the mode of the database file, so making this one 0600
    before SQLite sees it keeps all three private.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


class CredentialCache:
    """A credential cache file, open for lookups and (unless read-only) imports.

    One instance serialises its calls on one connection: an import holds it for its whole
    transaction. Run imports on a second instance (or process) so the lane's lookups go on
    meanwhile; WAL lets them read the last committed data.
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, *, read_only: bool) -> None:
        """Use :meth:`open`; this wraps a connection already checked to hold a cache."""
        self.path = path
        self.read_only = read_only
        self._connection = connection
        self._file = path.resolve()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> CredentialCache:
        """Open the cache at ``path``, creating file and schema unless ``read_only``."""
        path = Path(path)
        if read_only and not path.exists():
            raise CacheOpenError(
                path, "no such file", "import credentials first (lane-agent cache import)"
            )
        if not path.parent.is_dir():
            raise CacheOpenError(
                path, "its directory does not exist", "create it or fix the configured path"
            )
        try:
            if read_only:
                connection = sqlite3.connect(
                    path.resolve().as_uri() + "?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                _create_private_file(path)
                # The resolved file, so SQLite names its -wal and -shm after the snapshot file a
                # symlink points to (see agent.cache.install): each file keeps its own journal.
                connection = sqlite3.connect(
                    path.resolve(), isolation_level=None, check_same_thread=False
                )
        except (OSError, sqlite3.Error) as err:
            raise CacheOpenError(
                path, f"cannot open ({err})", "check the path and its permissions"
            ) from err
        try:
            _prepare(connection, path, read_only=read_only)
        except sqlite3.OperationalError as err:
            # Busy, read-only or unopenable: the file may be fine, so do not advise replacing it.
            connection.close()
            raise CacheOpenError(
                path,
                f"cannot use it ({err})",
                "check its permissions and whether another process holds it locked",
            ) from err
        except sqlite3.DatabaseError as err:
            connection.close()
            raise CacheOpenError(
                path,
                f"not a SQLite database or damaged ({err})",
                "move the file aside and import the credentials again",
            ) from err
        except CacheOpenError:
            connection.close()
            raise
        logger.info("credential cache open at %s (read_only=%s)", path, read_only)
        return cls(path, connection, read_only=read_only)

    @property
    def current_file(self) -> Path:
        """The file the lookups read: ``path`` itself or the snapshot its symlink named."""
        return self._file

    def reopen(self) -> bool:
        """Switch lookups to the file ``path`` names now, if that changed (a snapshot swap).

        The new connection is opened and checked before the lock is taken, so lookups wait only
        for the swap of one reference; the old connection is closed afterwards. Returns whether
        it switched. Raises CacheOpenError when the new file cannot be used (lookups stay on the
        old one).
        """
        if self.path.resolve() == self._file:
            return False
        fresh = CredentialCache.open(self.path, read_only=self.read_only)
        with self._lock:
            old, self._connection = self._connection, fresh._connection
            self._file = fresh._file
        old.close()
        logger.info("credential cache switched to %s", self._file.name)
        return True

    def meta(self) -> dict[str, str]:
        """The ``meta`` table: provenance and bundle state (see agent.cache.install)."""
        with self._lock:
            return dict(self._connection.execute("SELECT key, value FROM meta").fetchall())

    def close(self) -> None:
        """Close the connection; later calls fail with sqlite3.ProgrammingError."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def lookup(self, ref: str) -> Credential | None:
        """The credential for a tag reference (any letter case), or None when there is none.

        A reference that is not a well-formed EPC cannot be in the cache, so it is a miss, not an
        error. Raises CacheError when the stored row cannot be read (a damaged file).
        """
        key = records.ref_key(ref)
        if key is None:
            return None
        try:
            with self._lock:
                row: StorageRow | None = self._connection.execute(_LOOKUP_SQL, (key,)).fetchone()
            return None if row is None else records.row_to_credential(row)
        except (sqlite3.DatabaseError, KeyError) as err:
            raise CacheError(
                f"credential cache {self.path}: unreadable record ({err!r});"
                " move the file aside and import the credentials again"
            ) from err

    def import_file(
        self,
        path: Path,
        *,
        data_version: str | None = None,
        progress: Callable[[ImportProgress], None] | None = None,
        progress_interval_s: float = 5.0,
    ) -> ImportReport:
        """Upsert every record of an NDJSON (.ndjson, .jsonl) or CSV (.csv) file, or none.

        ``data_version`` defaults to the SHA-256 of the file, which names exactly what was loaded.
        Raises CacheImportError listing every problem when any record is invalid. ``progress``
        is called every ``progress_interval_s`` while records are read (checked every
        ``PROGRESS_CHECK_RECORDS`` records; 0 reports at every check).
        """
        path = Path(path)
        kind = FILE_SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise CacheImportError(
                [
                    f"{path}: (file): {path.suffix or '(no extension)'!r}: one of "
                    + ", ".join(FILE_SUFFIXES)
                    + " (the extension selects the format)"
                ]
            )
        try:
            digest = _file_sha256(path)
            meter = ReadMeter()
            read = records.read_ndjson if kind == "ndjson" else records.read_csv
            return self._import(
                read(path, meter),
                source_name=str(path),
                data_version=data_version or f"sha256:{digest}",
                progress=None if progress is None else (progress, progress_interval_s, meter),
            )
        except OSError as err:
            raise CacheImportError([f"{path}: (file): cannot read: {err.strerror or err}"]) from err

    def import_records(
        self,
        records_in: Iterable[Mapping[str, object]],
        source: str,
        *,
        data_version: str | None = None,
    ) -> ImportReport:
        """Upsert records given as NDJSON-shaped mappings, all or none.

        Problems name positions as ``source:N`` (N counting from 1). ``data_version`` defaults to
        the SHA-256 of the normalised records.
        """

        def numbered() -> Iterator[SourceRecord]:
            for number, fields in enumerate(records_in, start=1):
                yield SourceRecord(f"{source}:{number}", fields, None)

        return self._import(numbered(), source_name=source, data_version=data_version)

    def _import(
        self,
        source: Iterable[SourceRecord],
        *,
        source_name: str,
        data_version: str | None,
        progress: tuple[Callable[[ImportProgress], None], float, ReadMeter] | None = None,
    ) -> ImportReport:
        """Validate and upsert in one pass and one transaction; roll back on the first problem.

        Rows stop being written at the first problem, but validation goes on to the end so the
        operator sees every problem. Without ``data_version`` the version is the SHA-256 of the
        accepted rows.
        """
        if self.read_only:
            raise CacheError(f"credential cache {self.path} is open read-only: cannot import")
        started = time.monotonic()
        problems: list[str] = []
        problem_count = 0
        first_position: dict[bytes, str] = {}
        chunk: list[StorageRow] = []
        content_digest = hashlib.sha256()
        row_digest = None if data_version else content_digest
        read = 0
        next_report_at = started + (progress[1] if progress else 0.0)
        with self._lock:
            connection = self._connection
            connection.execute(f"PRAGMA cache_size = -{CACHE_SIZE_KIB}")
            try:
                connection.execute("BEGIN IMMEDIATE")
                if connection.execute("SELECT 1 FROM meta WHERE key = 'bundle_version'").fetchone():
                    raise CacheImportError(
                        [
                            f"{source_name}: (file): plain records: this cache is kept by signed"
                            " bundles; import a bundle (lane-agent bundle build) instead"
                        ]
                    )
                before = _count(connection)
                for position, fields, read_problem in source:
                    read += 1
                    if progress is not None and not read % PROGRESS_CHECK_RECORDS:
                        now = time.monotonic()
                        if now >= next_report_at:
                            report_to, interval_s, meter = progress
                            next_report_at = now + interval_s
                            report_to(
                                ImportProgress(
                                    read, meter.bytes_read, meter.total_bytes, now - started
                                )
                            )
                    found: list[Problem] = []
                    if read_problem is not None:
                        found.append(read_problem)
                    elif fields is not None:
                        row, found = records.validate_record(fields)
                        if row is not None:
                            earlier = first_position.get(row[0])
                            if earlier is not None:
                                found.append(_duplicate(row[0], earlier))
                            else:
                                first_position[row[0]] = position
                                if not problem_count:
                                    chunk.append(row)
                                    if len(chunk) >= IMPORT_CHUNK_ROWS:
                                        _write_chunk(connection, chunk, row_digest)
                                        chunk = []
                    for problem in found:
                        problem_count += 1
                        if len(problems) < MAX_REPORTED_PROBLEMS:
                            problems.append(problem.describe(position))
                if problem_count:
                    raise CacheImportError(problems, omitted=problem_count - len(problems))
                _write_chunk(connection, chunk, row_digest)
                added = _count(connection) - before
                version = data_version or f"sha256:{content_digest.hexdigest()}"
                imported_at = datetime.now(UTC).replace(microsecond=0)
                connection.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [
                        ("data_version", version),
                        ("imported_at", records.format_timestamp(imported_at)),
                        ("source", source_name),
                        # A technician's plain import counts as data verified when it was
                        # loaded: the cache age (staleness) starts here (docs/bundles.md).
                        ("fresh_at", str(int(imported_at.timestamp()))),
                    ],
                )
                connection.execute("COMMIT")
            except BaseException as err:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                if isinstance(err, sqlite3.Error):
                    raise CacheError(
                        f"credential cache {self.path}: import from {source_name} failed,"
                        f" cache unchanged ({err})"
                    ) from err
                if problem_count:
                    logger.warning(
                        "credential import from %s refused: %d problem(s), cache unchanged",
                        source_name,
                        problem_count,
                    )
                raise
            else:
                _checkpoint(connection)
            finally:
                connection.execute(f"PRAGMA cache_size = -{LOOKUP_CACHE_KIB}")
        report = ImportReport(
            source=source_name,
            data_version=version,
            records=len(first_position),
            added=added,
            replaced=len(first_position) - added,
            imported_at=imported_at,
            duration_s=time.monotonic() - started,
        )
        logger.info(
            "credential import from %s: %d records (%d added, %d replaced) in %.1f s",
            source_name,
            report.records,
            report.added,
            report.replaced,
            report.duration_s,
        )
        return report

    def stats(self) -> CacheStats:
        """Counts by status and program, and where the data came from (scans the table)."""
        by_status = dict.fromkeys((str(s) for s in CredentialStatus), 0)
        by_program = dict.fromkeys((str(p) for p in Program), 0)
        credentials = vehicles = 0
        with self._lock:
            groups = self._connection.execute(
                "SELECT status, program, count(*),"
                " sum(CASE WHEN vehicles IS NULL THEN 0"
                " ELSE length(vehicles) - length(replace(vehicles, ';', '')) + 1 END)"
                " FROM credential GROUP BY status, program"
            ).fetchall()
            meta = dict(self._connection.execute("SELECT key, value FROM meta").fetchall())
        for status, program, count, vehicle_count in groups:
            by_status[str(records.STATUS_BY_CODE[status])] += count
            by_program[str(records.PROGRAM_BY_CODE[program])] += count
            credentials += count
            vehicles += vehicle_count
        imported_at = meta.get("imported_at")
        return CacheStats(
            path=self.path,
            credentials=credentials,
            vehicles=vehicles,
            by_status=by_status,
            by_program=by_program,
            data_version=meta.get("data_version"),
            imported_at=None if imported_at is None else datetime.fromisoformat(imported_at),
            source=meta.get("source"),
            file_size_bytes=sum(
                _size_or_zero(Path(f"{self._file}{suffix}")) for suffix in ("", "-wal")
            ),
        )


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _duplicate(key: bytes, first_position: str) -> Problem:
    return Problem("ref", key.hex().upper(), f"each ref once per import; first on {first_position}")


def _count(connection: sqlite3.Connection) -> int:
    count: int = connection.execute("SELECT count(*) FROM credential").fetchone()[0]
    return count


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def _write_chunk(
    connection: sqlite3.Connection,
    chunk: list[StorageRow],
    row_digest: _Digest | None,
) -> None:
    if row_digest is not None:
        for row in chunk:
            row_digest.update(repr(row).encode())
    connection.executemany(_UPSERT_SQL, chunk)


def _checkpoint(connection: sqlite3.Connection) -> None:
    """Fold the WAL back into the file after an import, so its disk space comes back.

    The import is committed by now; a checkpoint that cannot run only leaves a larger WAL.
    """
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    except sqlite3.Error as err:
        logger.warning("WAL checkpoint after import failed (%s); SQLite retries later", err)
        return
    if busy:
        logger.info("WAL checkpoint deferred: readers still use it; SQLite retries later")


def _file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def _prepare(connection: sqlite3.Connection, path: Path, *, read_only: bool) -> None:
    """Create the schema in a new file or check an existing one holds a cache this code reads.

    Raises sqlite3.DatabaseError for a file SQLite cannot read and CacheOpenError for a readable
    database that is not a credential cache of this schema version.
    """
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    blank = _is_blank(connection)
    if blank and read_only:
        raise CacheOpenError(
            path, "empty file, no credential cache in it", "import credentials into it first"
        )
    if not blank:
        # Before any pragma below changes a file that may belong to something else.
        _check_schema(connection, path)
    if read_only:
        return
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute(f"PRAGMA cache_size = -{LOOKUP_CACHE_KIB}")
    connection.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT_BYTES}")
    if not blank:
        # No write lock taken for an existing cache: opening must not wait for an import
        # running in another process.
        return
    # Outside any transaction (SQLite refuses otherwise); WAL is then a property of the file.
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("BEGIN IMMEDIATE")
    try:
        # Checked again under the write lock: another process may have created it meanwhile.
        if _is_blank(connection):
            create_schema(connection)
        connection.execute("COMMIT")
    finally:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
    _check_schema(connection, path)


def _is_blank(connection: sqlite3.Connection) -> bool:
    application_id, user_version = _identity(connection)
    return application_id == 0 and user_version == 0 and not _table_names(connection)


def _identity(connection: sqlite3.Connection) -> tuple[int, int]:
    application_id: int = connection.execute("PRAGMA application_id").fetchone()[0]
    user_version: int = connection.execute("PRAGMA user_version").fetchone()[0]
    return application_id, user_version


def _table_names(connection: sqlite3.Connection) -> set[str]:
    return {
        name
        for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }


def create_schema(connection: sqlite3.Connection) -> None:
    """Create every table, code table and view of an empty cache file.

    The only part of the cache that uses sqlite-utils, and it is imported here, not at the top:
    it pulls in numpy, about 0.2 s of start-up an install worker applying a delta does not need.
    """
    import sqlite_utils

    db = sqlite_utils.Database(connection, recursive_triggers=False, execute_plugins=False)
    # sqlite-utils cannot declare WITHOUT ROWID, so the two big tables are plain DDL.
    for statement in _CREATE_TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    for table, codes in _CODE_TABLES.items():
        db.create_table(table, {"code": int, "name": str}, pk="code", not_null={"name"})
        db.conn.executemany(
            f"INSERT INTO {table} (code, name) VALUES (?, ?)",  # noqa: S608 - fixed table names
            [(code, name) for name, code in codes.items()],
        )
    db.create_view("credential_view", _VIEW_SQL)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _check_schema(connection: sqlite3.Connection, path: Path) -> None:
    application_id, user_version = _identity(connection)
    if application_id != APPLICATION_ID:
        raise CacheOpenError(
            path,
            f"a SQLite database but not a credential cache (application_id {application_id:#x})",
            "point the cache path at a credential cache file or a new path",
        )
    if user_version != SCHEMA_VERSION:
        raise CacheOpenError(
            path,
            f"schema version {user_version}, this lane-agent reads {SCHEMA_VERSION}",
            "run the lane-agent release that wrote it, or move it aside and import again",
        )
    missing = _TABLES - _table_names(connection)
    if missing:
        raise CacheOpenError(
            path,
            f"tables missing: {', '.join(sorted(missing))}",
            "move the file aside and import the credentials again",
        )
    for table, codes in _CODE_TABLES.items():
        stored = {
            name: code
            for code, name in connection.execute(f"SELECT code, name FROM {table}")  # noqa: S608
        }
        if stored != codes:
            raise CacheOpenError(
                path,
                f"{table} codes differ from this lane-agent's",
                "move the file aside and import the credentials again",
            )
