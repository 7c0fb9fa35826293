"""Installing verified bundles: all of one or none of it, while the lane keeps looking cards up.

Files, next to the configured cache path ``credentials.db``:

- ``credentials.db`` — a symlink to the snapshot in force (or, before the first snapshot, the
  plain cache file a technician imported);
- ``credentials.db.v<version>`` — a snapshot's database, with its own ``-wal``/``-shm`` (SQLite
  names them after the resolved file, and the cache opens the resolved file);
- ``credentials.db.v<version>.building`` — a snapshot being written; removed when found later;
- ``credentials.db.lock`` — held (flock) for the whole of every install, so a technician's
  import and the agent's MQTT updates never interleave.

A snapshot is written into a new file with journalling off (a crash leaves only a ``.building``
file nobody reads), checked against the manifest's record count, made durable (fsync), renamed
and then published by replacing the symlink with ``rename(2)`` — atomic, so after a kill -9 the
path names either the old complete file or the new complete file. The previous snapshot file is
kept until the next swap, for readers that have not switched yet. Deltas, revocations and
freshness notices change the file in force in one SQLite transaction (WAL, synchronous FULL).

``meta`` keys written here: ``bundle_version``, ``bundle_kind``, ``bundle_created_at``,
``fresh_at`` (Unix seconds of the newest verified bundle or freshness notice: the cache age
starts there), ``revocation_serial``, ``port_id``, plus the ``data_version``, ``imported_at`` and
``source`` the plain import writes too. Revocations are also kept in a ``revocation`` table and
re-applied after any delta or snapshot created before them, so applying a revocation first can
never be undone by older data queued behind it.

Every install runs in a child process (:mod:`agent.cache.install_worker`), not on a thread of the
agent: decoding and validating a 100k-change delta is Python work that would hold the GIL for
milliseconds at a time while the lane thread waits to look a card up. The child verifies, decodes
and writes under the file lock; SQLite's WAL lets it commit while the lane's connection keeps
reading. The agent only waits on a pipe, then counts, logs and calls ``on_swap``. The child runs
``worker_nice`` below the agent (a lookup the lane waits on wins a shared core), reads the file
through a memory map, and folds the WAL back only after the commit has made the change visible.
A snapshot's records are decoded by a process the child forks (:mod:`agent.cache.decoder`), so
decoding and inserting run on two cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from agent.cache import records
from agent.cache.bundle import (
    BundleHeader,
    BundleLimits,
    BundleRefusedError,
    Kind,
    Manifest,
    RefusalReason,
    check_payload_digest,
    delta_batches,
    payload_lines,
    read_header,
    revocation_refs,
)
from agent.cache.decoder import snapshot_rows_decoded
from agent.cache.records import StorageRow
from agent.cache.store import (
    _UPSERT_SQL,
    FILE_MODE,
    CacheError,
    CacheOpenError,
    CredentialCache,
    create_schema,
)
from agent.cache.trust import TrustStore
from agent.lane.credentials import CredentialStatus

logger = logging.getLogger(__name__)

SNAPSHOT_CACHE_KIB = 256 * 1024
WORKER_MMAP_BYTES = 1 << 31
"""Memory-map up to this much of the file in the install worker (SQLite caps it near 2 GiB)."""
WORKER_NICE = 10
"""Added to the install worker's nice value: the lane's lookups come first on a shared core."""
SNAPSHOT_PAGE_SIZE = 1024
"""Database page size of a snapshot file (SQLite's default is 4096).

A delta writes every page it changes to the WAL, fsyncs it at commit and copies it back at the
checkpoint. At 15 M records a 100k-change delta touches ~95k leaf pages whatever their size, so
1 KiB pages write ~100 MB where 4 KiB pages wrote ~340 MB. The cost is one more B-tree level per
lookup and nothing in size (65.0 B/record against 65.9); figures in BENCHMARKS.md.
"""
WORKER_TIMEOUT_S = 3600.0
"""How long an install worker may run before it is killed: a 15 M snapshot takes minutes."""
WORKER_MODULE = "agent.cache.install_worker"
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_REVOKED = records.STATUS_CODES[CredentialStatus.REVOKED]
_CREATE_REVOCATION = (
    "CREATE TABLE IF NOT EXISTS revocation ("
    " ref BLOB PRIMARY KEY NOT NULL, serial INTEGER NOT NULL, created_at INTEGER NOT NULL"
    ") WITHOUT ROWID"
)
_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_REAPPLY_REVOCATIONS = (
    f"UPDATE credential SET status = {_REVOKED}"  # noqa: S608 - a fixed integer code
    " WHERE status != ? AND ref IN (SELECT ref FROM revocation WHERE created_at > ?)"
)


@dataclass(frozen=True, slots=True)
class CacheState:
    """What is installed: the bundle version, revocation serial and freshness of the data."""

    bundle_version: int | None
    revocation_serial: int
    fresh_at: int | None
    data_version: str | None
    imported_at: datetime | None = None

    @classmethod
    def from_meta(cls, meta: dict[str, str]) -> CacheState:
        """Read from the ``meta`` table's rows."""
        version = meta.get("bundle_version")
        fresh = meta.get("fresh_at")
        imported = meta.get("imported_at")
        return cls(
            bundle_version=None if version is None else int(version),
            revocation_serial=int(meta.get("revocation_serial", "0")),
            fresh_at=None if fresh is None else int(fresh),
            data_version=meta.get("data_version"),
            imported_at=None if imported is None else datetime.fromisoformat(imported),
        )


EMPTY_STATE = CacheState(bundle_version=None, revocation_serial=0, fresh_at=None, data_version=None)


@dataclass(frozen=True, slots=True)
class InstallReport:
    """What one installed bundle did."""

    kind: Kind
    version: int
    records: int
    changed: int
    duration_s: float
    """From the start of the install until the change was visible to lookups."""
    checkpoint_s: float
    """Housekeeping after that: folding the WAL back into the database file."""
    state: CacheState
    worker_pid: int | None = None
    """The child process that applied the bundle (never the agent's own pid)."""


class InstallWorkerError(CacheError):
    """The install worker crashed, was killed, timed out or failed without refusing the bundle.

    Its install commits whole or not at all (the cache is never a mix); a worker that dies
    before reporting has, in all but its last instant, left the cache as it was. The message
    names no cache content: the worker's stderr is logged at DEBUG only.
    """


@dataclass(frozen=True, slots=True)
class InstallOutcome:
    """What the worker reports back for one installed bundle (times are ``time.monotonic``)."""

    kind: Kind
    version: int
    records: int
    changed: int
    applied_at: float
    finished_at: float
    signed_by: tuple[str, ...]
    meta: dict[str, str]

    def to_json(self) -> dict[str, object]:
        """The form written on the worker's stdout."""
        return {
            "kind": self.kind.value,
            "version": self.version,
            "records": self.records,
            "changed": self.changed,
            "applied_at": self.applied_at,
            "finished_at": self.finished_at,
            "signed_by": list(self.signed_by),
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> InstallOutcome:
        """Read what :meth:`to_json` wrote (the worker is our own code: shape errors are bugs)."""
        return cls(
            kind=Kind(str(value["kind"])),
            version=int(value["version"]),
            records=int(value["records"]),
            changed=int(value["changed"]),
            applied_at=float(value["applied_at"]),
            finished_at=float(value["finished_at"]),
            signed_by=tuple(str(name) for name in value["signed_by"]),
            meta={str(k): str(v) for k, v in value["meta"].items()},
        )


@dataclass(frozen=True, slots=True)
class InstallerStats:
    """Counters for the status topic: installs by kind and refusals by reason."""

    installed: dict[str, int]
    refused: dict[str, int]
    last_refusal: str | None


class CacheInstaller:
    """Verifies bundles against the trust store and installs them into the cache at ``path``.

    Thread-safe: installs are serialised by a process lock and a file lock. ``on_swap`` is called
    after a snapshot replaced the file in force, so lookups can reopen it. Each install runs in a
    child process (see the module docstring); ``worker_timeout_s`` bounds it.
    """

    def __init__(
        self,
        path: Path,
        trust: TrustStore,
        *,
        port_id: str,
        lane_id: str,
        limits: BundleLimits,
        clock: Callable[[], float] = time.time,
        on_swap: Callable[[], None] | None = None,
        worker_timeout_s: float = WORKER_TIMEOUT_S,
        worker_nice: int = WORKER_NICE,
    ) -> None:
        self.path = Path(path)
        self.trust = trust
        self.port_id = port_id
        self.lane_id = lane_id
        self.limits = limits
        self._clock = clock
        self._on_swap = on_swap
        self.worker_timeout_s = worker_timeout_s
        self.worker_nice = worker_nice
        self._lock = threading.Lock()
        self._install_lock = threading.Lock()
        self._installed: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._last_refusal: str | None = None
        with self._exclusive():
            self._remove_leftovers()

    # --- public ---------------------------------------------------------------------------

    def install_file(self, bundle: Path) -> InstallReport:
        """Verify and install the bundle file at ``bundle``; raises BundleRefusedError."""
        with contextlib.ExitStack() as stack:
            try:
                stream = stack.enter_context(Path(bundle).open("rb"))
            except OSError as err:
                raise BundleRefusedError(
                    RefusalReason.MALFORMED, f"cannot read {bundle}: {err.strerror or err}"
                ) from err
            # The worker reads the file through this descriptor: no copy through a pipe.
            return self._install(source=str(bundle), fd=stream.fileno(), data=b"")
        raise AssertionError("unreachable")  # ExitStack does not swallow exceptions

    def install_bytes(self, data: bytes, *, source: str) -> InstallReport:
        """Verify and install a bundle received as bytes (an MQTT message)."""
        return self._install(source=source, fd=None, data=data)

    def install_in_this_process(
        self, stream: IO[bytes], size: int, *, source: str
    ) -> InstallOutcome:
        """Verify and apply a bundle here, under the file lock: what the install worker runs.

        The agent never calls this (it would decode on the agent's GIL); it uses
        :meth:`install_file` and :meth:`install_bytes`, which run the worker. Raises
        BundleRefusedError; counts and logs nothing of its own.
        """
        with self._exclusive():
            header = read_header(stream, size, self.trust, self.limits)
            manifest = header.manifest
            self._check_time_and_scope(manifest)
            state = self.state()
            _check_order(manifest, state)
            stream.seek(header.payload_offset)
            check_payload_digest(stream, manifest)
            stream.seek(header.payload_offset)
            with _collector_paused():
                records_in, changed, applied_at = self._apply(header, stream, state, source)
            with contextlib.closing(_connect(self.path.resolve(), read_only=True)) as connection:
                meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        return InstallOutcome(
            kind=manifest.kind,
            version=manifest.version,
            records=records_in,
            changed=changed,
            applied_at=applied_at,
            finished_at=time.monotonic(),
            signed_by=tuple(sorted(header.signed_by)),
            meta=meta,
        )

    def state(self) -> CacheState:
        """The installed state, read from the file in force (EMPTY_STATE when there is none)."""
        if not self.path.exists():
            return EMPTY_STATE
        with contextlib.closing(_connect(self.path.resolve(), read_only=True)) as connection:
            return _state(connection)

    def stats(self) -> InstallerStats:
        """A copy of the counters."""
        with self._lock:
            return InstallerStats(dict(self._installed), dict(self._refused), self._last_refusal)

    # --- the install ----------------------------------------------------------------------

    def _install(self, *, source: str, fd: int | None, data: bytes) -> InstallReport:
        started = time.monotonic()
        try:
            with self._install_lock:
                outcome, worker_pid = self._run_worker(source=source, fd=fd, data=data)
                if outcome.kind is Kind.SNAPSHOT and self._on_swap is not None:
                    self._on_swap()
        except BundleRefusedError as err:
            with self._lock:
                self._refused[err.reason.value] += 1
                self._last_refusal = err.reason.value
            logger.warning("bundle from %s refused: %s", source, err)
            raise
        with self._lock:
            self._installed[outcome.kind.value] += 1
        report = InstallReport(
            kind=outcome.kind,
            version=outcome.version,
            records=outcome.records,
            changed=outcome.changed,
            duration_s=outcome.applied_at - started,
            checkpoint_s=outcome.finished_at - outcome.applied_at,
            state=CacheState.from_meta(outcome.meta),
            worker_pid=worker_pid,
        )
        logger.info(
            "%s %d installed from %s: %d records, %d changed, in %.2f s (signed by %s)",
            outcome.kind.value,
            outcome.version,
            source,
            report.records,
            report.changed,
            report.duration_s,
            ",".join(outcome.signed_by),
        )
        return report

    def _run_worker(
        self, *, source: str, fd: int | None, data: bytes
    ) -> tuple[InstallOutcome, int]:
        """Run the install worker on one bundle; its outcome and pid, or raise what it reported.

        The request (configuration, the trust store's public keys and the clock's reading) is
        the first line on the worker's stdin; bundle bytes follow it, unless the worker reads
        the already-open file ``fd``. A worker that outlives ``worker_timeout_s``, or whose wait
        is interrupted, is killed: its install commits whole or not at all.
        """
        request = {
            "path": os.path.abspath(self.path),
            "trust": self.trust.to_document(),
            "trust_source": self.trust.source,
            "port_id": self.port_id,
            "lane_id": self.lane_id,
            "limits": [self.limits.max_snapshot_bytes, self.limits.max_update_bytes],
            "now": self._clock(),
            "source": source,
            "fd": fd,
            "nice": self.worker_nice,
        }
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, (str(_PACKAGE_ROOT), env.get("PYTHONPATH")))
        )
        child = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, "--parent-pid", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=() if fd is None else (fd,),
            env=env,
        )
        try:
            stdout, stderr = child.communicate(
                json.dumps(request).encode() + b"\n" + data, timeout=self.worker_timeout_s
            )
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise InstallWorkerError(
                f"install worker (pid {child.pid}) for {source} ran past "
                f"{self.worker_timeout_s:g} s and was killed; the cache is as it was"
            ) from None
        except BaseException:
            child.kill()
            child.wait()
            raise
        if stderr:
            logger.debug("install worker %d stderr: %s", child.pid, stderr.decode(errors="replace"))
        reply = _worker_reply(stdout)
        if reply is None or child.returncode != 0:
            raise InstallWorkerError(
                f"install worker (pid {child.pid}) for {source} {_exit_text(child.returncode)}"
                " without reporting a result; the cache is as it was"
            )
        for name, level, message in reply.get("logs", []):
            logging.getLogger(str(name)).log(int(level), "%s", message)
        if "refused" in reply:
            refusal = reply["refused"]
            raise BundleRefusedError(RefusalReason(refusal["reason"]), str(refusal["detail"]))
        if "error" in reply:
            raise InstallWorkerError(
                f"install worker (pid {child.pid}) could not install {source}: {reply['error']}"
            )
        return InstallOutcome.from_json(reply["outcome"]), child.pid

    def _check_time_and_scope(self, manifest: Manifest) -> None:
        now = self._clock()
        if now >= manifest.expires_at:
            raise BundleRefusedError(
                RefusalReason.EXPIRED,
                f"{manifest.kind.value} {manifest.version} expired at "
                f"{datetime.fromtimestamp(manifest.expires_at, UTC).isoformat()}",
            )
        if not manifest.scope.admits(self.port_id, self.lane_id):
            lanes = "all lanes" if manifest.scope.lanes is None else ",".join(manifest.scope.lanes)
            raise BundleRefusedError(
                RefusalReason.WRONG_SCOPE,
                f"for port {manifest.scope.port_id} ({lanes}), this is "
                f"{self.port_id}/{self.lane_id}",
            )

    def _apply(
        self, header: BundleHeader, stream: IO[bytes], state: CacheState, source: str
    ) -> tuple[int, int, float]:
        """Apply the payload; (records, rows changed, monotonic time it became visible)."""
        manifest = header.manifest
        if manifest.kind is Kind.SNAPSHOT:
            # Closed explicitly: a failed insert must stop the decoder process at once.
            with contextlib.closing(snapshot_rows_decoded(stream, manifest)) as rows:
                return (*self._install_snapshot(manifest, rows, source), time.monotonic())
        lines = payload_lines(stream, manifest)
        with _open_in_force(self.path) as connection:
            connection.execute(_CREATE_REVOCATION)
            # The WAL is folded back after the commit, explicitly: an automatic checkpoint
            # inside COMMIT would delay the moment the change becomes visible.
            connection.execute("PRAGMA wal_autocheckpoint = 0")
            connection.execute("BEGIN IMMEDIATE")
            try:
                if manifest.kind is Kind.DELTA:
                    counts = _apply_delta(connection, manifest, lines)
                elif manifest.kind is Kind.REVOCATION:
                    counts = _apply_revocation(connection, manifest, lines)
                else:
                    counts = (0, 0)
                _write_meta(connection, manifest, state, source)
                connection.execute("COMMIT")
                applied_at = time.monotonic()
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
            _fold_wal(connection)
        return (*counts, applied_at)

    def _install_snapshot(
        self, manifest: Manifest, rows: Iterator[list[StorageRow]], source: str
    ) -> tuple[int, int]:
        final = self.path.with_name(f"{self.path.name}.v{manifest.version}")
        building = final.with_name(final.name + ".building")
        _unlink_database(building)
        previous = self.path.resolve() if self.path.exists() else None
        revocations = _revocations(previous) if previous is not None else []
        old_state = self.state()
        fd = os.open(building, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        os.close(fd)
        connection = sqlite3.connect(building, isolation_level=None)
        try:
            # No journal: a crash leaves a .building file that is never read, only removed.
            connection.execute("PRAGMA journal_mode = OFF")
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute(f"PRAGMA page_size = {SNAPSHOT_PAGE_SIZE}")
            connection.execute(f"PRAGMA cache_size = -{SNAPSHOT_CACHE_KIB}")
            create_schema(connection)
            connection.execute(_CREATE_REVOCATION)
            connection.execute("BEGIN")
            for chunk in rows:
                connection.executemany(
                    "INSERT INTO credential"
                    " (ref, document_type, program, status, valid_from, valid_until, holder_ref,"
                    " vehicles) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    chunk,
                )
            count: int = connection.execute("SELECT count(*) FROM credential").fetchone()[0]
            if count != manifest.record_count:
                raise BundleRefusedError(
                    RefusalReason.MALFORMED,
                    f"{count} records loaded, record_count says {manifest.record_count}",
                )
            connection.executemany(
                "INSERT INTO revocation (ref, serial, created_at) VALUES (?, ?, ?)", revocations
            )
            connection.execute(_REAPPLY_REVOCATIONS, (_REVOKED, manifest.created_at))
            meta_state = CacheState(None, old_state.revocation_serial, old_state.fresh_at, None)
            _write_meta(connection, manifest, meta_state, source)
            connection.execute("COMMIT")
            connection.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            connection.close()
            _unlink_database(building)
            raise
        connection.close()
        _fsync_file(building)
        os.replace(building, final)
        link = self.path.with_name(f".{self.path.name}.link-{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        os.symlink(final.name, link)
        os.replace(link, self.path)
        _fsync_directory(self.path.parent)
        self._remove_old_snapshots(keep={final.name, previous.name if previous else ""})
        if self._on_swap is not None:
            self._on_swap()
        return count, count

    # --- files ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _remove_leftovers(self) -> None:
        """Remove what a killed install left: half-built snapshots and temporary links."""
        for candidate in self.path.parent.glob(f"{self.path.name}.v*.building"):
            logger.info("removing unfinished snapshot %s", candidate.name)
            _unlink_database(candidate)
        for candidate in self.path.parent.glob(f".{self.path.name}.link-*"):
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()

    def _remove_old_snapshots(self, keep: set[str]) -> None:
        """Remove snapshot files other than ``keep`` (names: a symlinked directory is fine)."""
        for candidate in self.path.parent.glob(f"{self.path.name}.v*"):
            name = candidate.name
            if name.endswith(("-wal", "-shm", ".building")) or name in keep:
                continue
            logger.info("removing superseded snapshot %s", name)
            _unlink_database(candidate)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the length of an install.

    An install allocates millions of short-lived tuples, which set off full collections; each
    walks every object of the process. The install runs in the worker process, so this no longer
    stalls the lane's lookups, but the passes are pure waste: those tuples hold no cycles, and
    reference counting frees them.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _worker_reply(stdout: bytes) -> dict[str, Any] | None:
    """The JSON object on the worker's last line of output, or None when there is none."""
    lines = stdout.strip().splitlines()
    if not lines:
        return None
    try:
        reply = json.loads(lines[-1])
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return reply if isinstance(reply, dict) else None


def _exit_text(returncode: int) -> str:
    """How a worker ended, for an error message: "exited with status 1", "was killed by SIGKILL"."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _check_order(manifest: Manifest, state: CacheState) -> None:
    """Refuse rollbacks (not newer than installed) and gaps (not following what is installed)."""
    installed = state.bundle_version
    kind = manifest.kind
    if kind is Kind.REVOCATION:
        if manifest.version <= state.revocation_serial:
            raise BundleRefusedError(
                RefusalReason.ROLLBACK,
                f"revocation serial {manifest.version}, {state.revocation_serial} already applied",
            )
        if installed is None:
            raise BundleRefusedError(
                RefusalReason.GAP, "no snapshot installed yet to apply a revocation to"
            )
        return
    if kind is Kind.SNAPSHOT:
        if installed is not None and manifest.version <= installed:
            raise BundleRefusedError(
                RefusalReason.ROLLBACK,
                f"snapshot version {manifest.version} is not newer than installed {installed}",
            )
        return
    if installed is None:
        raise BundleRefusedError(
            RefusalReason.GAP, f"{kind.value} {manifest.version} needs a snapshot installed first"
        )
    if kind is Kind.DELTA:
        if manifest.version <= installed:
            raise BundleRefusedError(
                RefusalReason.ROLLBACK,
                f"delta to {manifest.version} is not newer than installed {installed}",
            )
        if manifest.base_version != installed:
            raise BundleRefusedError(
                RefusalReason.GAP,
                f"delta from {manifest.base_version} to {manifest.version}, installed is "
                f"{installed}",
            )
        return
    if manifest.version < installed or (
        manifest.version == installed
        and state.fresh_at is not None
        and manifest.created_at <= state.fresh_at
    ):
        raise BundleRefusedError(
            RefusalReason.ROLLBACK,
            f"freshness notice for {manifest.version} is not newer than what is installed "
            f"({installed})",
        )
    if manifest.version > installed:
        raise BundleRefusedError(
            RefusalReason.GAP,
            f"central is at {manifest.version}, this lane has {installed}",
        )


def _apply_delta(
    connection: sqlite3.Connection, manifest: Manifest, lines: Iterator[str]
) -> tuple[int, int]:
    seen = changed = 0
    for upserts, deletes in delta_batches(lines):
        seen += len(upserts) + len(deletes)
        if upserts:
            changed += connection.executemany(_UPSERT_SQL, upserts).rowcount
        if deletes:
            changed += connection.executemany(
                "DELETE FROM credential WHERE ref = ?", deletes
            ).rowcount
    connection.execute(_REAPPLY_REVOCATIONS, (_REVOKED, manifest.created_at))
    return seen, changed


def _apply_revocation(
    connection: sqlite3.Connection, manifest: Manifest, lines: Iterator[str]
) -> tuple[int, int]:
    refs = list(revocation_refs(lines))
    connection.executemany(
        "INSERT INTO revocation (ref, serial, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (ref) DO UPDATE SET serial = excluded.serial,"
        " created_at = excluded.created_at",
        [(ref, manifest.version, manifest.created_at) for ref in refs],
    )
    cursor = connection.executemany(
        f"UPDATE credential SET status = {_REVOKED} WHERE ref = ? AND status != {_REVOKED}",  # noqa: S608 - fixed code
        [(ref,) for ref in refs],
    )
    return len(refs), cursor.rowcount


def _write_meta(
    connection: sqlite3.Connection, manifest: Manifest, state: CacheState, source: str
) -> None:
    fresh = max(manifest.created_at, state.fresh_at or 0)
    values: list[tuple[str, str]] = [("fresh_at", str(fresh))]
    if manifest.kind is Kind.REVOCATION:
        values.append(("revocation_serial", str(manifest.version)))
    elif manifest.kind is not Kind.FRESHNESS:
        now = datetime.now(UTC).replace(microsecond=0)
        values += [
            ("bundle_version", str(manifest.version)),
            ("bundle_kind", manifest.kind.value),
            ("bundle_created_at", str(manifest.created_at)),
            ("revocation_serial", str(state.revocation_serial)),
            ("port_id", manifest.scope.port_id),
            ("data_version", f"bundle:{manifest.version}"),
            ("imported_at", records.format_timestamp(now)),
            ("source", source),
        ]
    connection.executemany(_SET_META, values)


def _fold_wal(connection: sqlite3.Connection) -> None:
    """Copy the committed WAL into the database (PASSIVE: never waits for the lane's readers)."""
    try:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as err:
        logger.warning("WAL checkpoint after an install failed (%s); SQLite retries later", err)


def _state(connection: sqlite3.Connection) -> CacheState:
    return CacheState.from_meta(dict(connection.execute("SELECT key, value FROM meta").fetchall()))


def _connect(file: Path, *, read_only: bool) -> sqlite3.Connection:
    uri = file.as_uri() + ("?mode=ro" if read_only else "")
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


@contextlib.contextmanager
def _open_in_force(path: Path) -> Iterator[sqlite3.Connection]:
    """A writing connection to the file in force, checked to be a credential cache."""
    if not path.exists():
        raise CacheOpenError(path, "no cache installed", "install a snapshot first")
    with CredentialCache.open(path) as cache:
        connection = cache._connection  # the installer owns the writes
        # Room for a 100k-change delta's dirty pages, so they are not spilled mid-transaction;
        # freed when the connection closes.
        connection.execute(f"PRAGMA cache_size = -{SNAPSHOT_CACHE_KIB}")
        # Pages read through a mapping, not one pread(2) each: a 100k-change delta reads ~100k
        # leaf pages. Only in the short-lived worker: an I/O error there is a SIGBUS that kills
        # the worker (its transaction rolls back), never the agent.
        connection.execute(f"PRAGMA mmap_size = {WORKER_MMAP_BYTES}")
        yield connection


def _revocations(file: Path) -> list[tuple[bytes, int, int]]:
    with contextlib.closing(_connect(file, read_only=True)) as connection:
        try:
            rows: list[tuple[bytes, int, int]] = connection.execute(
                "SELECT ref, serial, created_at FROM revocation"
            ).fetchall()
        except sqlite3.OperationalError:
            return []  # a plain cache from before the first bundle has no revocation table
        return rows


def _unlink_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CacheStateHolder:
    """The installed state as the lane thread sees it: set by the updates worker, read per crossing.

    One reference swapped whole, so a reader never sees half of an update.
    """

    def __init__(self, state: CacheState) -> None:
        self._state = state

    def get(self) -> CacheState:
        """The latest state."""
        return self._state

    def set(self, state: CacheState) -> None:
        """Replace the state (called from the updates worker)."""
        self._state = state

    def fresh_at(self) -> float | None:
        """Unix seconds the data was last vouched for (what the lane engine is given)."""
        fresh = self._state.fresh_at
        return None if fresh is None else float(fresh)
