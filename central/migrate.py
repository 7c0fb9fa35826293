"""Versioned SQL migrations: ``central/migrations/NNNN_name.sql``, applied in order, once each.

``schema_migrations`` records each applied version with the sha256 of its file. An upgrade holds
a transaction-level advisory lock, so two workers or operators starting at once apply each
migration once; each migration runs in its own transaction and is recorded in it, so a failure
leaves the database at the previous version. A file changed after it was applied, or a database
newer than this release, stops the upgrade with a message saying so: a migration is never edited,
a new one is added.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

from central import db, partitions

MIGRATIONS_PACKAGE = "central"
MIGRATIONS_FOLDER = "migrations"
_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_LOCK_KEY = 0x1A4E_C3A7  # pg_advisory_xact_lock key of lane-central migrations


class MigrationError(RuntimeError):
    """The database cannot be brought to the requested version (the message says why)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UpgradeReport:
    """What an upgrade did."""

    from_version: int
    to_version: int
    applied: tuple[Migration, ...]
    partitions_created: tuple[str, ...]


def available() -> list[Migration]:
    """Every migration shipped with this release, by version."""
    folder = resources.files(MIGRATIONS_PACKAGE).joinpath(MIGRATIONS_FOLDER)
    found: list[Migration] = []
    for entry in folder.iterdir():
        match = _NAME.fullmatch(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must run 1, 2, 3 ... without gaps: {versions}")
    return found


def latest_version() -> int:
    """The schema version this release expects."""
    return len(available())


def current_version(connection: db.Connection) -> int:
    """The version the database is at (0: never upgraded)."""
    row = connection.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    version = connection.execute(
        "SELECT coalesce(max(version), 0) FROM schema_migrations"
    ).fetchone()
    return int(version[0]) if version is not None else 0  # type: ignore[call-overload]


def upgrade(connection: db.Connection, *, to_version: int | None = None) -> UpgradeReport:
    """Apply the pending migrations up to ``to_version`` (default: the latest); idempotent."""
    migrations = available()
    target = len(migrations) if to_version is None else to_version
    if not 0 <= target <= len(migrations):
        raise MigrationError(f"no version {target}: this release knows 1 to {len(migrations)}")
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {
            int(version): (str(name), str(checksum))  # type: ignore[call-overload]
            for version, name, checksum in connection.execute(
                "SELECT version, name, checksum FROM schema_migrations"
            )
        }
    start = max(applied, default=0)
    if start > len(migrations):
        raise MigrationError(
            f"the database is at schema version {start}, newer than this lane-central "
            f"(which knows 1 to {len(migrations)}): upgrade lane-central instead"
        )
    for migration in migrations[:start]:
        recorded = applied.get(migration.version)
        if recorded is None:
            raise MigrationError(f"schema_migrations lacks version {migration.version}")
        if recorded[1] != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name}.sql changed after it was "
                "applied: never edit an applied migration, add a new one"
            )
    if target < start:
        raise MigrationError(
            f"the database is at version {start}; migrations only go forward (asked for {target})"
        )
    done: list[Migration] = []
    for migration in migrations[start:target]:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            row = connection.execute(
                "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
            ).fetchone()
            if row is not None:
                continue  # another upgrade applied it while this one waited for the lock
            connection.execute(migration.sql.encode())
            connection.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        done.append(migration)
    created: tuple[str, ...] = ()
    if target >= 1:
        created = tuple(partitions.ensure_crossing_partitions(connection))
    return UpgradeReport(start, max(start, target), tuple(done), created)


def require_latest(connection: db.Connection) -> None:
    """Refuse to run against a database at another version than this release's."""
    found, wanted = current_version(connection), latest_version()
    if found != wanted:
        raise MigrationError(
            f"the database is at schema version {found}, this lane-central needs {wanted}: "
            + ("run `lane-central db upgrade`" if found < wanted else "upgrade lane-central")
        )
