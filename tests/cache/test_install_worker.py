"""Installs run in a child process; a worker that crashes or hangs leaves the cache as it was."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cache import CredentialCache, install
from agent.cache.bundle import Kind
from agent.cache.channel import CacheChannel
from agent.cache.install import CacheInstaller, InstallWorkerError
from agent.cli import main
from agent.config import load_config
from tests.cache.kit import (
    LANE,
    PORT,
    Central,
    fingerprint,
    installer_for,
    record_line,
    ref,
)


def delta_to_2(central: Central) -> bytes:
    lines = [f"U\t{record_line(n, 'SUSPENDED')}" for n in range(1, 51)]
    return central.bundle(Kind.DELTA, 2, [*lines, f"D\t{ref(99)}"], base_version=1)


def test_each_install_runs_in_a_child_process_not_in_the_agent(
    snapshot_1_path: Path, central: Central, tmp_path: Path
) -> None:
    installer = installer_for(snapshot_1_path, central)
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


@pytest.mark.parametrize("worker_nice", [None, 0])
def test_the_worker_runs_below_the_agents_priority_unless_told_otherwise(
    snapshot_1_path: Path,
    central: Central,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    worker_nice: int | None,
) -> None:
    """By default the worker is niced by WORKER_NICE: on a shared core the lane's lookups win."""
    probe = tmp_path / "worker-nice"
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.probe_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_PROBE", str(probe))
    options = {} if worker_nice is None else {"worker_nice": worker_nice}
    installer = installer_for(snapshot_1_path, central, **options)
    assert installer.install_bytes(delta_to_2(central), source="mqtt").changed == 51
    added = install.WORKER_NICE if worker_nice is None else worker_nice
    assert int(probe.read_text()) == min(19, os.nice(0) + added)


def test_a_worker_denied_a_lower_priority_installs_at_the_agents_and_says_so(
    snapshot_1_path: Path,
    central: Central,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A seccomp filter that denies setpriority (EPERM) must not cost the install."""
    probe = tmp_path / "worker-nice"
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.probe_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_PROBE", str(probe))
    monkeypatch.setenv("LANE_AGENT_TEST_DENY_NICE", "1")
    installer = installer_for(snapshot_1_path, central, worker_nice=10)
    with caplog.at_level(logging.WARNING):
        assert installer.install_bytes(delta_to_2(central), source="mqtt").changed == 51
    assert int(probe.read_text()) == os.nice(0)
    assert any("agent's priority" in r.getMessage() for r in caplog.records), caplog.text


def lane_config_with_install_nice(tmp_path: Path, snapshot_1_path: Path, central: Central) -> Path:
    """A lane TOML whose ``cache.install_nice`` is 3 (the default is WORKER_NICE)."""
    config_path = tmp_path / "lane.toml"
    config_path.write_text(
        f'[lane]\nport_id = "{PORT}"\nlane_id = "{LANE}"\n[controller]\ndevice = "/dev/null"\n'
        f'[cache]\npath = "{snapshot_1_path}"\ntrust_file = "{central.trust_path}"\n'
        "install_nice = 3\n"
    )
    return config_path


def probe_the_workers_nice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run installs through the probe worker, which writes its niceness to the returned file."""
    probe = tmp_path / "worker-nice"
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.probe_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_PROBE", str(probe))
    return probe


def test_the_lanes_configured_install_nice_reaches_the_worker(
    snapshot_1_path: Path,
    central: Central,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``cache.install_nice`` in the lane's TOML is the niceness the install worker runs at."""
    config = load_config(lane_config_with_install_nice(tmp_path, snapshot_1_path, central))
    channel = CacheChannel(
        config, CredentialCache.open(snapshot_1_path), trust_owner_uid=os.getuid()
    )
    assert channel.installer is not None
    probe = probe_the_workers_nice(tmp_path, monkeypatch)
    report = channel.installer.install_bytes(delta_to_2(central), source="mqtt")
    assert report.changed == 51
    assert int(probe.read_text()) == min(19, os.nice(0) + 3)


def test_a_technicians_cache_import_runs_at_the_configured_install_nice(
    snapshot_1_path: Path,
    central: Central,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``lane-agent cache import`` installs through the same worker, at the lane's niceness."""
    config_path = lane_config_with_install_nice(tmp_path, snapshot_1_path, central)
    bundle = tmp_path / "delta.bundle"
    bundle.write_bytes(delta_to_2(central))
    probe = probe_the_workers_nice(tmp_path, monkeypatch)
    result = CliRunner().invoke(
        main, ["cache", "import", str(bundle), "--config", str(config_path)]
    )
    assert result.exit_code == 0, result.output
    assert "delta 2" in result.output
    assert int(probe.read_text()) == min(19, os.nice(0) + 3)


def test_a_worker_killed_mid_install_raises_a_clear_error_and_leaves_the_cache_unchanged(
    snapshot_1_path: Path, central: Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fingerprint(snapshot_1_path)
    installer = installer_for(snapshot_1_path, central)
    update = delta_to_2(central)
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.failing_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_FAILURE", "kill")
    with pytest.raises(InstallWorkerError, match=r"was killed by SIGKILL without reporting"):
        installer.install_bytes(update, source="mqtt")
    assert fingerprint(snapshot_1_path) == before
    assert installer.stats().installed == {}
    assert installer.stats().refused == {}, "a crash is not a refusal of the bundle"
    monkeypatch.setattr(install, "WORKER_MODULE", "agent.cache.install_worker")
    assert installer.install_bytes(update, source="mqtt").state.bundle_version == 2


def test_a_worker_past_its_timeout_is_killed_and_the_cache_is_unchanged(
    snapshot_1_path: Path, central: Central, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fingerprint(snapshot_1_path)
    installer: CacheInstaller = installer_for(snapshot_1_path, central, worker_timeout_s=1.0)
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.failing_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_FAILURE", "hang")
    with pytest.raises(InstallWorkerError, match=r"ran past 1 s and was killed"):
        installer.install_bytes(delta_to_2(central), source="mqtt")
    assert fingerprint(snapshot_1_path) == before
    assert installer.state().bundle_version == 1
