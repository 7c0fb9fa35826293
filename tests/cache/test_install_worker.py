"""Installs run in a child process; a worker that crashes or hangs leaves the cache as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.cache import install
from agent.cache.bundle import Kind
from agent.cache.install import CacheInstaller, InstallWorkerError
from tests.cache.kit import Central, fingerprint, installer_for, record_line, ref


@pytest.fixture
def central(tmp_path: Path) -> Central:
    made = Central(tmp_path)
    made.write_trust()
    return made


@pytest.fixture
def cache_path(tmp_path: Path, central: Central) -> Path:
    """A lane cache at snapshot 1 with records 1-100."""
    path = tmp_path / "credentials.db"
    installer_for(path, central).install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, map(record_line, range(1, 101))), source="setup"
    )
    return path


def delta_to_2(central: Central) -> bytes:
    lines = [f"U\t{record_line(n, 'SUSPENDED')}" for n in range(1, 51)]
    return central.bundle(Kind.DELTA, 2, [*lines, f"D\t{ref(99)}"], base_version=1)


def test_each_install_runs_in_a_child_process_not_in_the_agent(
    cache_path: Path, central: Central, tmp_path: Path
) -> None:
    installer = installer_for(cache_path, central)
    bundle = tmp_path / "delta.bundle"
    bundle.write_bytes(delta_to_2(central))
    from_file = installer.install_file(bundle)
    from_bytes = installer.install_bytes(
        central.bundle(Kind.REVOCATION, 1, [ref(3)]), source="mqtt"
    )
    for report in (from_file, from_bytes):
        assert report.worker_pid is not None
        assert report.worker_pid != os.getpid()
    assert from_file.worker_pid != from_bytes.worker_pid, "one worker per install"
    assert (from_file.changed, from_bytes.changed) == (51, 1)
    assert installer.stats().installed == {"delta": 1, "revocation": 1}


def test_a_worker_killed_mid_install_raises_a_clear_error_and_leaves_the_cache_unchanged(
    cache_path: Path, central: Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fingerprint(cache_path)
    installer = installer_for(cache_path, central)
    update = delta_to_2(central)
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.failing_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_FAILURE", "kill")
    with pytest.raises(InstallWorkerError, match=r"was killed by SIGKILL without reporting"):
        installer.install_bytes(update, source="mqtt")
    assert fingerprint(cache_path) == before
    assert installer.stats().installed == {}
    assert installer.stats().refused == {}, "a crash is not a refusal of the bundle"
    monkeypatch.setattr(install, "WORKER_MODULE", "agent.cache.install_worker")
    assert installer.install_bytes(update, source="mqtt").state.bundle_version == 2


def test_a_worker_past_its_timeout_is_killed_and_the_cache_is_unchanged(
    cache_path: Path, central: Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fingerprint(cache_path)
    installer: CacheInstaller = installer_for(cache_path, central, worker_timeout_s=1.0)
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.failing_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_FAILURE", "hang")
    with pytest.raises(InstallWorkerError, match=r"ran past 1 s and was killed"):
        installer.install_bytes(delta_to_2(central), source="mqtt")
    assert fingerprint(cache_path) == before
    assert installer.state().bundle_version == 1
