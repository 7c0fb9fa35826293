"""The credential cache file: opening, lookups, imports that succeed, stats, privacy."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.cache import (
    CacheError,
    CacheImportError,
    CacheOpenError,
    CacheStats,
    CredentialCache,
    store,
)
from agent.cache.records import credential_to_record
from agent.lane.credentials import (
    Credential,
    CredentialStatus,
    DocumentType,
    Program,
    RegisteredVehicle,
)
from tests.cache.conftest import GOOD_REF, OTHER_REF, valid_record, write_csv, write_ndjson


def every_kind_of_credential() -> list[Credential]:
    """One credential per document type, program and status, with zero to three vehicles."""
    credentials = []
    documents, programs, statuses = list(DocumentType), list(Program), list(CredentialStatus)
    for index in range(max(len(documents), len(programs), len(statuses))):
        credentials.append(
            Credential(
                ref=f"E28011606000020{index:09X}",
                document_type=documents[index % len(documents)],
                program=programs[index % len(programs)],
                status=statuses[index % len(statuses)],
                valid_from=datetime(2024, 1, 1, 12, 30, index, tzinfo=UTC),
                valid_until=datetime(2029, 6, 30, 23, 59, 59, tzinfo=UTC),
                holder_ref=f"H-{index:06d}.x:y_z",
                vehicles=tuple(
                    RegisteredVehicle(plate=f"P{index}X{n}", jurisdiction=("CA", "BC", "NLE")[n])
                    for n in range(index % 4)
                ),
            )
        )
    return credentials


@pytest.fixture
def private_umask() -> Iterator[None]:
    """A umask that would leave new files world-readable, restored afterwards."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


class TestOpen:
    @pytest.mark.usefixtures("private_umask")
    def test_database_wal_and_shm_are_owner_only_whatever_the_umask(self, cache_path: Path) -> None:
        with CredentialCache.open(cache_path) as cache:
            cache.import_records([valid_record()], "test")
            modes = {
                suffix: stat.S_IMODE(Path(f"{cache_path}{suffix}").stat().st_mode)
                for suffix in ("", "-wal", "-shm")
            }
        assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}

    def test_new_file_is_a_wal_database_with_the_schema(self, cache: CredentialCache) -> None:
        connection = sqlite3.connect(cache.path)
        try:
            journal_mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
            tables = {
                row[0]
                for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            credential_sql = connection.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'credential'"
            ).fetchone()[0]
        finally:
            connection.close()
        assert journal_mode == "wal"
        assert tables == {"credential", "meta", "document_type", "program", "status"}
        assert credential_sql.rstrip().endswith("WITHOUT ROWID")

    def test_reopening_keeps_the_records(self, cache_path: Path) -> None:
        with CredentialCache.open(cache_path) as cache:
            cache.import_records([valid_record()], "test")
        with CredentialCache.open(cache_path) as cache:
            assert cache.lookup(GOOD_REF) is not None

    def test_garbage_file_is_refused_naming_path_and_remedy(self, cache_path: Path) -> None:
        cache_path.write_bytes(b"this is not a database, it is a text file\n" * 200)
        with pytest.raises(CacheOpenError) as raised:
            CredentialCache.open(cache_path)
        message = str(raised.value)
        assert message.startswith(
            f"credential cache {cache_path}: not a SQLite database or damaged"
        )
        assert message.endswith("move the file aside and import the credentials again")

    def test_garbage_file_is_refused_read_only_too(self, cache_path: Path) -> None:
        cache_path.write_bytes(os.urandom(8192))
        with pytest.raises(CacheOpenError, match="not a SQLite database or damaged"):
            CredentialCache.open(cache_path, read_only=True)

    def test_damaged_header_of_a_real_cache_is_refused(self, cache_path: Path) -> None:
        with CredentialCache.open(cache_path) as cache:
            cache.import_records([valid_record()], "test")
        with cache_path.open("r+b") as stream:
            stream.write(b"\x00" * 100)
        with pytest.raises(CacheOpenError, match="not a SQLite database or damaged"):
            CredentialCache.open(cache_path)

    def test_damaged_page_makes_lookups_raise_cache_error(self, cache_path: Path) -> None:
        refs = [f"E2{n:022X}" for n in range(3000)]
        with CredentialCache.open(cache_path) as cache:
            cache.import_records([valid_record(ref=ref) for ref in refs], "test")
        page_size = 4096
        with cache_path.open("r+b") as stream:
            stream.seek(page_size * 12)
            stream.write(b"\xff" * page_size)
        failures = 0
        with CredentialCache.open(cache_path, read_only=True) as cache:
            for ref in refs:
                try:
                    cache.lookup(ref)
                except CacheError:
                    failures += 1
        assert failures > 0

    def test_another_applications_database_is_refused_and_left_untouched(
        self, cache_path: Path
    ) -> None:
        connection = sqlite3.connect(cache_path)
        connection.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, payload BLOB)")
        connection.commit()
        connection.close()
        before = cache_path.read_bytes()
        with pytest.raises(CacheOpenError, match=r"not a credential cache \(application_id 0x0\)"):
            CredentialCache.open(cache_path)
        assert cache_path.read_bytes() == before
        assert not Path(f"{cache_path}-wal").exists()

    def test_other_schema_version_is_refused(self, cache_path: Path) -> None:
        CredentialCache.open(cache_path).close()
        connection = sqlite3.connect(cache_path)
        connection.execute("PRAGMA user_version = 2")
        connection.close()
        with pytest.raises(CacheOpenError, match="schema version 2, this lane-agent reads 1"):
            CredentialCache.open(cache_path)

    def test_renumbered_codes_are_refused(self, cache_path: Path) -> None:
        CredentialCache.open(cache_path).close()
        connection = sqlite3.connect(cache_path)
        connection.execute("UPDATE program SET code = 9 WHERE name = 'FAST'")
        connection.commit()
        connection.close()
        with pytest.raises(CacheOpenError, match="program codes differ"):
            CredentialCache.open(cache_path)

    def test_read_only_open_of_a_missing_file_says_to_import_first(self, cache_path: Path) -> None:
        with pytest.raises(CacheOpenError, match="no such file; import credentials first"):
            CredentialCache.open(cache_path, read_only=True)
        assert not cache_path.exists()

    def test_missing_directory_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(CacheOpenError, match="its directory does not exist"):
            CredentialCache.open(tmp_path / "absent" / "credentials.db")

    def test_read_only_cache_looks_up_but_refuses_imports(self, cache_path: Path) -> None:
        with CredentialCache.open(cache_path) as cache:
            cache.import_records([valid_record()], "test")
        with CredentialCache.open(cache_path, read_only=True) as cache:
            assert cache.lookup(GOOD_REF) is not None
            with pytest.raises(CacheError, match="open read-only: cannot import"):
                cache.import_records([valid_record(ref=OTHER_REF)], "test")

    def test_opening_does_not_wait_for_a_write_lock_held_elsewhere(self, cache_path: Path) -> None:
        """The service must start while an import runs in another process."""
        with CredentialCache.open(cache_path) as cache:
            cache.import_records([valid_record()], "test")
        importer = sqlite3.connect(cache_path, isolation_level=None)
        importer.execute("PRAGMA busy_timeout = 0")
        importer.execute("BEGIN IMMEDIATE")
        try:
            with CredentialCache.open(cache_path) as cache:
                assert cache.lookup(GOOD_REF) is not None
        finally:
            importer.execute("ROLLBACK")
            importer.close()

    def test_read_only_reader_sees_a_later_import_by_a_writer(self, cache_path: Path) -> None:
        with CredentialCache.open(cache_path) as writer:
            writer.import_records([valid_record()], "first")
            with CredentialCache.open(cache_path, read_only=True) as reader:
                assert reader.lookup(OTHER_REF) is None
                writer.import_records([valid_record(ref=OTHER_REF)], "second")
                assert reader.lookup(OTHER_REF) is not None


class TestLookup:
    def test_hit_returns_the_credential(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record()], "test")
        assert cache.lookup(GOOD_REF) == Credential(
            ref=GOOD_REF,
            document_type=DocumentType.TRUSTED_TRAVELLER_CARD,
            program=Program.SENTRI,
            status=CredentialStatus.ACTIVE,
            valid_from=datetime(2024, 1, 1, tzinfo=UTC),
            valid_until=datetime(2029, 1, 1, tzinfo=UTC),
            holder_ref="H-000123",
            vehicles=(RegisteredVehicle(plate="ABC1234", jurisdiction="CA"),),
        )

    def test_miss_returns_none(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record()], "test")
        assert cache.lookup(OTHER_REF) is None

    def test_lower_case_ref_finds_the_upper_case_record(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record()], "test")
        found = cache.lookup(GOOD_REF.lower())
        assert found is not None
        assert found.ref == GOOD_REF

    def test_lower_case_ref_in_a_file_is_stored_upper_case(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record(ref=GOOD_REF.lower())], "test")
        found = cache.lookup(GOOD_REF)
        assert found is not None
        assert found.ref == GOOD_REF

    @pytest.mark.parametrize(
        "ref", ["", "E28011", "E2801160600002084F5A3B1", "XYZ12345", "E2 80 11 60"]
    )
    def test_malformed_ref_is_a_miss_not_an_error(self, cache: CredentialCache, ref: str) -> None:
        cache.import_records([valid_record()], "test")
        assert cache.lookup(ref) is None

    def test_lookup_works_from_another_thread(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record()], "test")
        found: list[Credential | None] = []
        worker = threading.Thread(target=lambda: found.append(cache.lookup(GOOD_REF)))
        worker.start()
        worker.join(timeout=5)
        assert len(found) == 1
        assert found[0] is not None


class TestImport:
    def test_every_field_round_trips_through_ndjson(
        self, cache: CredentialCache, tmp_path: Path
    ) -> None:
        credentials = every_kind_of_credential()
        source = write_ndjson(
            tmp_path / "credentials.ndjson", [credential_to_record(c) for c in credentials]
        )
        report = cache.import_file(source)
        assert report.records == len(credentials)
        assert [cache.lookup(c.ref) for c in credentials] == credentials

    def test_every_field_round_trips_through_csv(
        self, cache: CredentialCache, tmp_path: Path
    ) -> None:
        credentials = every_kind_of_credential()
        source = write_csv(
            tmp_path / "credentials.csv",
            [credential_to_record(c, vehicles_as_text=True) for c in credentials],
        )
        cache.import_file(source)
        assert [cache.lookup(c.ref) for c in credentials] == credentials

    def test_jsonl_extension_is_ndjson(self, cache: CredentialCache, tmp_path: Path) -> None:
        cache.import_file(write_ndjson(tmp_path / "credentials.jsonl", [valid_record()]))
        assert cache.lookup(GOOD_REF) is not None

    def test_csv_vehicles_are_normalised(self, cache: CredentialCache, tmp_path: Path) -> None:
        row = valid_record(vehicles="CA:ABC1234;bc:xyz 123; NLE:AB-12-CD")
        cache.import_file(write_csv(tmp_path / "credentials.csv", [row]))
        found = cache.lookup(GOOD_REF)
        assert found is not None
        assert found.vehicles == (
            RegisteredVehicle(plate="ABC1234", jurisdiction="CA"),
            RegisteredVehicle(plate="XYZ123", jurisdiction="BC"),
            RegisteredVehicle(plate="AB12CD", jurisdiction="NLE"),
        )

    def test_csv_empty_vehicles_means_none(self, cache: CredentialCache, tmp_path: Path) -> None:
        cache.import_file(write_csv(tmp_path / "credentials.csv", [valid_record(vehicles="")]))
        found = cache.lookup(GOOD_REF)
        assert found is not None
        assert found.vehicles == ()

    def test_csv_with_excel_byte_order_mark_and_blank_lines(
        self, cache: CredentialCache, tmp_path: Path
    ) -> None:
        source = tmp_path / "credentials.csv"
        write_csv(source, [valid_record(vehicles="CA:ABC1234")])
        source.write_bytes(b"\xef\xbb\xbf" + source.read_bytes() + b"\r\n\r\n")
        report = cache.import_file(source)
        assert report.records == 1

    def test_upsert_replaces_the_record_and_its_vehicles(self, cache: CredentialCache) -> None:
        cache.import_records(
            [valid_record(vehicles=[{"plate": "OLD1", "jurisdiction": "CA"}] * 1)], "first"
        )
        report = cache.import_records(
            [
                valid_record(
                    status="REVOKED",
                    vehicles=[
                        {"plate": "NEW1", "jurisdiction": "AZ"},
                        {"plate": "NEW2", "jurisdiction": "AZ"},
                    ],
                ),
                valid_record(ref=OTHER_REF, vehicles=[]),
            ],
            "second",
        )
        found = cache.lookup(GOOD_REF)
        assert found is not None
        assert found.status is CredentialStatus.REVOKED
        assert found.vehicles == (
            RegisteredVehicle(plate="NEW1", jurisdiction="AZ"),
            RegisteredVehicle(plate="NEW2", jurisdiction="AZ"),
        )
        assert (report.records, report.added, report.replaced) == (2, 1, 1)

    def test_upsert_to_no_vehicles_clears_them(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record()], "first")
        cache.import_records([valid_record(vehicles=[])], "second")
        found = cache.lookup(GOOD_REF)
        assert found is not None
        assert found.vehicles == ()

    def test_file_import_records_sha256_of_the_file_as_data_version(
        self, cache: CredentialCache, tmp_path: Path
    ) -> None:
        source = write_ndjson(tmp_path / "credentials.ndjson", [valid_record()])
        report = cache.import_file(source)
        stats = cache.stats()
        expected = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
        assert report.data_version == expected
        assert (stats.data_version, stats.source) == (expected, str(source))
        assert stats.imported_at == report.imported_at

    def test_explicit_data_version_is_recorded(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record()], "central", data_version="2024-06-01.3")
        assert cache.stats().data_version == "2024-06-01.3"

    def test_same_records_give_the_same_default_data_version(self, cache: CredentialCache) -> None:
        first = cache.import_records([valid_record()], "a")
        second = cache.import_records([valid_record()], "b")
        third = cache.import_records([valid_record(status="SUSPENDED")], "c")
        assert first.data_version == second.data_version != third.data_version

    def test_report_as_dict_is_json_ready(self, cache: CredentialCache) -> None:
        report = cache.import_records([valid_record()], "demo", data_version="v1")
        as_dict = report.as_dict()
        assert as_dict["imported_at"] == report.imported_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert {
            k: as_dict[k] for k in ("source", "data_version", "records", "added", "replaced")
        } == {
            "source": "demo",
            "data_version": "v1",
            "records": 1,
            "added": 1,
            "replaced": 0,
        }

    def test_import_waits_for_no_one_when_a_read_only_reader_is_open(
        self, cache: CredentialCache, cache_path: Path
    ) -> None:
        """WAL lets the lane keep reading while an import commits."""
        with CredentialCache.open(cache_path, read_only=True) as reader:
            reader.lookup(GOOD_REF)
            report = cache.import_records([valid_record()], "test")
        assert report.records == 1


class TestStats:
    def test_empty_cache(self, cache: CredentialCache) -> None:
        stats = cache.stats()
        assert (stats.credentials, stats.vehicles, stats.data_version, stats.imported_at) == (
            0,
            0,
            None,
            None,
        )
        assert set(stats.by_status.values()) == {0}
        assert set(stats.by_program.values()) == {0}

    def test_counts_by_status_and_program_and_vehicles(self, cache: CredentialCache) -> None:
        cache.import_records(
            [
                valid_record(ref="AA000001", program="NEXUS", vehicles=[]),
                valid_record(
                    ref="AA000002",
                    program="NEXUS",
                    status="REVOKED",
                    vehicles=[
                        {"plate": "A1", "jurisdiction": "ON"},
                        {"plate": "A2", "jurisdiction": "ON"},
                    ],
                ),
                valid_record(ref="AA000003", program="FAST", status="SUSPENDED"),
            ],
            "test",
        )
        stats = cache.stats()
        assert (stats.credentials, stats.vehicles) == (3, 3)
        assert stats.by_status == {"ACTIVE": 1, "SUSPENDED": 1, "REVOKED": 1}
        assert stats.by_program == {
            "SENTRI": 0,
            "NEXUS": 2,
            "GLOBAL_ENTRY": 0,
            "FAST": 1,
            "NONE": 0,
        }
        assert stats.file_size_bytes >= cache.path.stat().st_size > 0

    def test_as_dict_has_counts_and_provenance_only(self, cache: CredentialCache) -> None:
        cache.import_records([valid_record()], "demo", data_version="v7")
        as_dict = cache.stats().as_dict()
        assert set(as_dict) == {
            "path",
            "credentials",
            "vehicles",
            "by_status",
            "by_program",
            "data_version",
            "imported_at",
            "source",
            "file_size_bytes",
        }
        assert (as_dict["credentials"], as_dict["data_version"], as_dict["source"]) == (
            1,
            "v7",
            "demo",
        )
        assert GOOD_REF not in repr(as_dict)

    def test_stats_is_frozen(self, cache: CredentialCache) -> None:
        stats: CacheStats = cache.stats()
        with pytest.raises(AttributeError):
            stats.credentials = 5  # type: ignore[misc]


class TestViewForTooling:
    def test_credential_view_decodes_codes_for_sqlite_utils_users(
        self, cache: CredentialCache
    ) -> None:
        cache.import_records([valid_record(program="GLOBAL_ENTRY")], "test")
        connection = sqlite3.connect(cache.path)
        try:
            row = connection.execute("SELECT * FROM credential_view").fetchone()
        finally:
            connection.close()
        assert row == (
            GOOD_REF,
            "TRUSTED_TRAVELLER_CARD",
            "GLOBAL_ENTRY",
            "ACTIVE",
            "2024-01-01T00:00:00Z",
            "2029-01-01T00:00:00Z",
            "H-000123",
            "CA:ABC1234",
        )


class TestPrivacy:
    def test_no_ref_holder_or_plate_in_logs_above_debug(
        self, cache: CredentialCache, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        source = write_ndjson(tmp_path / "credentials.ndjson", [valid_record()])
        cache.import_file(source)
        cache.lookup(GOOD_REF)
        with pytest.raises(CacheImportError):
            cache.import_records([valid_record(ref=OTHER_REF, holder_ref="")], "bad")
        cache.stats()
        above_debug = [r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG]
        assert above_debug, "the import should have logged its counts"
        for message in above_debug:
            for secret in (GOOD_REF, OTHER_REF, "H-000123", "ABC1234"):
                assert secret not in message


def test_lookups_keep_a_small_sqlite_page_cache_and_an_import_gets_a_large_one_while_it_runs(
    tmp_path: Path,
) -> None:
    """SQLite empties a connection's page cache after another connection's commit, at a cost
    in proportion to its size: the lookups' connection keeps 2 MiB, a plain import 32 MiB."""
    seen: list[int] = []
    with CredentialCache.open(tmp_path / "credentials.db") as cache:
        size = cache._connection.execute("PRAGMA cache_size").fetchone()[0]
        assert size == -store.LOOKUP_CACHE_KIB == -2048

        def records() -> Iterator[dict[str, object]]:
            seen.append(cache._connection.execute("PRAGMA cache_size").fetchone()[0])
            yield valid_record()

        cache.import_records(records(), "test")
        assert seen == [-store.CACHE_SIZE_KIB]
        assert cache._connection.execute("PRAGMA cache_size").fetchone()[0] == -2048
        with pytest.raises(CacheImportError):
            cache.import_records([valid_record(status="NOPE")], "test")
        assert cache._connection.execute("PRAGMA cache_size").fetchone()[0] == -2048
        assert cache.lookup(GOOD_REF) is not None
