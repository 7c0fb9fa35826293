"""kill -9 at random moments of a snapshot or delta install: the cache is old or new, never a mix.

A child process installs a real bundle file; the parent kills it at a random moment of the
install (drawn over the time a full install took on this machine) and then checks that the
cache answers with exactly the old or exactly the new data, and that the next install works.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cache.bundle import Kind
from agent.cache.install import CacheInstaller
from tests.cache.kit import Central, installer_for, record_line, ref

ROOT = Path(__file__).resolve().parents[2]
KILLS_PER_KIND = 6
SNAPSHOT_RECORDS = 30_000
DELTA_CHANGES = 20_000


def content(cache_path: Path) -> tuple[str | None, str]:
    """The installed bundle version and a digest of every credential row, as lookups see them."""
    connection = sqlite3.connect(f"{cache_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        version = connection.execute(
            "SELECT value FROM meta WHERE key = 'bundle_version'"
        ).fetchone()
        digest = hashlib.sha256()
        for row in connection.execute("SELECT * FROM credential ORDER BY ref"):
            digest.update(repr(row).encode())
    finally:
        connection.close()
    return (version[0] if version else None), digest.hexdigest()


def run_child(
    cache_path: Path, central: Central, bundle: Path, kill_after_s: float | None
) -> tuple[bool, float]:
    """Install ``bundle`` in a child; kill -9 it ``kill_after_s`` after it starts installing.

    Returns whether the child was killed before it finished, and (when not killed) how long
    the install itself took.
    """
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.cache.install_child",
            str(cache_path),
            str(central.trust_path),
            str(bundle),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "installing\n"
        started = time.monotonic()
        if kill_after_s is None:
            assert child.stdout.readline() == "installed\n"
            install_s = time.monotonic() - started
        else:
            time.sleep(kill_after_s)  # a random moment to strike, not a synchronisation
            child.kill()
            install_s = 0.0
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return child.returncode != 0, install_s


def prepare(
    tmp_path: Path, kind: Kind
) -> tuple[Central, Path, Path, tuple[str | None, str], tuple[str | None, str]]:
    """A lane cache at version 1, the bundle to version 2, and both expected contents."""
    central = Central(tmp_path)
    central.write_trust()
    template = tmp_path / "template"
    template.mkdir()
    old_snapshot = central.bundle(
        Kind.SNAPSHOT, 1, map(record_line, range(1, SNAPSHOT_RECORDS + 1))
    )
    if kind is Kind.SNAPSHOT:
        new = central.bundle(
            Kind.SNAPSHOT,
            2,
            (
                record_line(n, "SUSPENDED" if n % 3 else "ACTIVE")
                for n in range(5, SNAPSHOT_RECORDS + 9)
            ),
        )
    else:
        lines = [f"U\t{record_line(n, 'SUSPENDED')}" for n in range(1, DELTA_CHANGES + 1, 2)]
        lines += [f"D\t{ref(n)}" for n in range(2, DELTA_CHANGES + 1, 2)]
        new = central.bundle(Kind.DELTA, 2, lines, base_version=1)
    reference = installer_for(template / "credentials.db", central)
    reference.install_bytes(old_snapshot, source="reference")
    old = content(template / "credentials.db")
    reference.install_bytes(new, source="reference")
    expected_new = content(template / "credentials.db")
    bundle = tmp_path / "update.bundle"
    bundle.write_bytes(new)
    lane = tmp_path / "lane"
    lane.mkdir()
    installer_for(lane / "credentials.db", central).install_bytes(old_snapshot, source="setup")
    return central, lane, bundle, old, expected_new


@pytest.mark.parametrize("kind", [Kind.SNAPSHOT, Kind.DELTA])
def test_kill_9_at_random_moments_of_an_install_leaves_old_or_new_never_a_mix(
    kind: Kind, tmp_path: Path
) -> None:
    central, lane, bundle, old, new = prepare(tmp_path, kind)
    pristine = tmp_path / "pristine"
    shutil.copytree(lane, pristine, symlinks=True)
    killed, full_install_s = run_child(lane / "credentials.db", central, bundle, None)
    assert not killed
    assert content(lane / "credentials.db") == new
    rng = random.Random(20261128)
    outcomes = []
    for _ in range(KILLS_PER_KIND):
        shutil.rmtree(lane)
        shutil.copytree(pristine, lane, symlinks=True)
        killed, _ = run_child(
            lane / "credentials.db", central, bundle, rng.uniform(0, full_install_s)
        )
        found = content(lane / "credentials.db")
        assert found in (old, new), "a cache after kill -9 is the old or the new one"
        outcomes.append((killed, found == new))
        # The next install (after a restart) finds a working cache and completes.
        installer: CacheInstaller = installer_for(lane / "credentials.db", central)
        if found == old:
            installer.install_file(bundle)
        assert content(lane / "credentials.db") == new
        assert not list(lane.glob("*.building")), "leftovers are cleaned up"
    assert any(killed for killed, _ in outcomes), f"no kill landed during an install: {outcomes}"
