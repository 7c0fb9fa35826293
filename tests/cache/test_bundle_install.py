"""Installing verified bundles: snapshots swap files, deltas and revocations change rows, state."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from agent.cache import CacheImportError, CredentialCache, bundle
from agent.cache.bundle import Kind
from agent.cache.install import SNAPSHOT_PAGE_SIZE, CacheInstaller, CacheState
from agent.lane.credentials import CredentialStatus
from tests.cache.conftest import valid_record
from tests.cache.kit import Central, installer_for, record_line, ref


@pytest.fixture
def installer(cache_path: Path, central: Central) -> CacheInstaller:
    return installer_for(cache_path, central)


def test_snapshot_then_delta_then_revocation_change_what_lookups_return(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, map(record_line, range(1, 11))), source="t"
    )
    with CredentialCache.open(cache_path) as lookups:
        assert lookups.lookup(ref(5)) is not None
        assert lookups.lookup(ref(11)) is None
        installer.install_bytes(
            central.bundle(
                Kind.DELTA,
                2,
                [f"U\t{record_line(11)}", f"U\t{record_line(5, 'SUSPENDED')}", f"D\t{ref(6)}"],
                base_version=1,
            ),
            source="t",
        )
        assert lookups.lookup(ref(11)) is not None
        suspended = lookups.lookup(ref(5))
        assert suspended is not None
        assert suspended.status is CredentialStatus.SUSPENDED
        assert lookups.lookup(ref(6)) is None
        report = installer.install_bytes(central.bundle(Kind.REVOCATION, 1, [ref(7)]), source="t")
        revoked = lookups.lookup(ref(7))
        assert revoked is not None
        assert revoked.status is CredentialStatus.REVOKED
    assert report.state.bundle_version == 2
    assert report.state.revocation_serial == 1


def test_a_delta_of_several_batches_applies_every_change_in_one_transaction(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, map(record_line, range(1, 3001))), source="t"
    )
    changes = [
        f"D\t{ref(n)}" if n % 3 == 0 else f"U\t{record_line(n, 'SUSPENDED')}"
        for n in range(1, 3001, 2)
    ]
    changes += [f"U\t{record_line(n)}" for n in range(5001, 5101)]
    assert len(changes) > 2 * bundle.DELTA_BATCH_ROWS
    report = installer.install_bytes(
        central.bundle(Kind.DELTA, 2, changes, base_version=1), source="t"
    )
    assert (report.records, report.changed) == (len(changes), len(changes))
    with CredentialCache.open(cache_path) as lookups:
        for n in (1, 7, 2999):
            card = lookups.lookup(ref(n))
            assert card is not None
            assert card.status is CredentialStatus.SUSPENDED
        assert lookups.lookup(ref(3)) is None, "deleted"
        assert lookups.lookup(ref(2997)) is None, "deleted"
        unchanged = lookups.lookup(ref(2))
        assert unchanged is not None
        assert unchanged.status is CredentialStatus.ACTIVE
        assert lookups.lookup(ref(5100)) is not None, "added"
        assert lookups.stats().credentials == 3000 - 500 + 100


def test_snapshot_files_use_small_pages_so_a_delta_writes_less(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    """A delta writes each page it touches to the WAL: 1 KiB pages, not SQLite's 4 KiB."""
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, map(record_line, range(1, 101))), source="t"
    )
    connection = sqlite3.connect(f"{cache_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        assert connection.execute("PRAGMA page_size").fetchone() == (SNAPSHOT_PAGE_SIZE,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()
    assert SNAPSHOT_PAGE_SIZE < 4096


def test_a_snapshot_swaps_the_file_in_force_and_lookups_switch_on_reopen(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    installer.install_bytes(central.bundle(Kind.SNAPSHOT, 1, [record_line(1)]), source="t")
    with CredentialCache.open(cache_path) as lookups:
        installer.install_bytes(central.bundle(Kind.SNAPSHOT, 2, [record_line(2)]), source="t")
        assert lookups.lookup(ref(1)) is not None, "still on the old file until it reopens"
        assert lookups.reopen() is True
        assert lookups.lookup(ref(1)) is None
        assert lookups.lookup(ref(2)) is not None
        assert lookups.current_file.name == "credentials.db.v2"
        assert lookups.reopen() is False, "nothing changed since"
    assert os.readlink(cache_path) == "credentials.db.v2"


def test_on_swap_runs_after_a_snapshot_so_the_lane_switches_at_once(
    cache_path: Path, central: Central
) -> None:
    swaps: list[str] = []
    installer = installer_for(
        cache_path, central, on_swap=lambda: swaps.append(os.readlink(cache_path))
    )
    installer.install_bytes(central.bundle(Kind.SNAPSHOT, 3, [record_line(1)]), source="t")
    assert swaps == ["credentials.db.v3"]


def test_old_snapshot_files_are_removed_keeping_only_the_previous_one(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    for version in (1, 2, 3):
        installer.install_bytes(
            central.bundle(Kind.SNAPSHOT, version, [record_line(version)]), source="t"
        )
    names = sorted(
        p.name for p in cache_path.parent.glob("credentials.db.v*") if "-" not in p.name[15:]
    )
    assert names == ["credentials.db.v2", "credentials.db.v3"]


def test_cache_files_are_private_to_the_agent(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    installer.install_bytes(central.bundle(Kind.SNAPSHOT, 1, [record_line(1)]), source="t")
    for path in cache_path.parent.glob("credentials.db*"):
        if not path.is_symlink():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name


def test_a_revocation_applied_first_is_not_undone_by_an_older_delta_queued_behind_it(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    """Revocations jump the queue; data created before them must not re-activate the card."""
    now = int(time.time())
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, [record_line(1), record_line(2)], created_at=now - 100),
        source="t",
    )
    older_delta = central.bundle(
        Kind.DELTA, 2, [f"U\t{record_line(1)}"], base_version=1, created_at=now - 50
    )
    installer.install_bytes(
        central.bundle(Kind.REVOCATION, 1, [ref(1)], created_at=now - 10), source="t"
    )
    installer.install_bytes(older_delta, source="t")
    older_snapshot = central.bundle(Kind.SNAPSHOT, 3, [record_line(1)], created_at=now - 40)
    installer.install_bytes(older_snapshot, source="t")
    with CredentialCache.open(cache_path) as lookups:
        card = lookups.lookup(ref(1))
    assert card is not None
    assert card.status is CredentialStatus.REVOKED


def test_a_newer_delta_may_reactivate_a_revoked_card(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    now = int(time.time())
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, [record_line(1)], created_at=now - 100), source="t"
    )
    installer.install_bytes(
        central.bundle(Kind.REVOCATION, 1, [ref(1)], created_at=now - 50), source="t"
    )
    installer.install_bytes(
        central.bundle(Kind.DELTA, 2, [f"U\t{record_line(1)}"], base_version=1, created_at=now - 5),
        source="t",
    )
    with CredentialCache.open(cache_path) as lookups:
        card = lookups.lookup(ref(1))
    assert card is not None
    assert card.status is CredentialStatus.ACTIVE


def test_freshness_notice_moves_fresh_at_and_nothing_else(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    now = int(time.time())
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 4, [record_line(1)], created_at=now - 3000), source="t"
    )
    before = installer.state()
    report = installer.install_bytes(
        central.bundle(Kind.FRESHNESS, 4, created_at=now - 10), source="t"
    )
    assert before.fresh_at == now - 3000
    assert report.state == CacheState(
        bundle_version=4,
        revocation_serial=0,
        fresh_at=now - 10,
        data_version=before.data_version,
        imported_at=before.imported_at,
    )


def test_plain_records_are_refused_into_a_cache_kept_by_bundles(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    installer.install_bytes(central.bundle(Kind.SNAPSHOT, 1, [record_line(1)]), source="t")
    with CredentialCache.open(cache_path) as cache, pytest.raises(CacheImportError) as refused:
        cache.import_records([valid_record()], source="plain")
    assert "kept by signed bundles" in refused.value.problems[0]


def test_first_snapshot_replaces_a_plain_cache_and_keeps_lookups_working(
    cache_path: Path, central: Central
) -> None:
    """A lane that started on a technician's plain import moves to bundles with its first one."""
    with CredentialCache.open(cache_path) as plain:
        plain.import_records([valid_record(ref=ref(1))], source="plain")
        assert CacheState.from_meta(plain.meta()).fresh_at is not None, "plain import counts"
        installer = installer_for(cache_path, central)
        installer.install_bytes(central.bundle(Kind.SNAPSHOT, 1, [record_line(2)]), source="t")
        assert plain.lookup(ref(1)) is not None, "the old file serves until the switch"
        plain.reopen()
        assert plain.lookup(ref(1)) is None
        assert plain.lookup(ref(2)) is not None
    assert cache_path.is_symlink()


def test_lookups_go_on_while_a_delta_is_applied_on_another_thread(
    cache_path: Path, central: Central, installer: CacheInstaller
) -> None:
    """The install holds its own connection: the lane's lookups keep returning committed data."""
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, map(record_line, range(1, 2001))), source="t"
    )
    delta = central.bundle(
        Kind.DELTA,
        2,
        [f"U\t{record_line(n, 'SUSPENDED')}" for n in range(1, 20001)],
        base_version=1,
    )
    done = threading.Event()
    lookups_during = 0

    def install() -> None:
        try:
            installer.install_bytes(delta, source="t")
        finally:
            done.set()

    with CredentialCache.open(cache_path) as lookups:
        worker = threading.Thread(target=install)
        worker.start()
        while not done.is_set():
            card = lookups.lookup(ref(1000))
            assert card is not None
            lookups_during += 1
        worker.join()
        after = lookups.lookup(ref(1000))
    assert lookups_during > 0
    assert after is not None
    assert after.status is CredentialStatus.SUSPENDED
