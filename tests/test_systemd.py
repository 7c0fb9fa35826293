"""The systemd unit is valid and hardened; the notify protocol speaks systemd's datagrams."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from agent.sdnotify import SystemdNotifier

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "lane-agent.service"


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd")
    return binary


def unit_with_existing_binary(tmp_path: Path) -> Path:
    """The unit as installed, pointing at a binary that exists here so verify can check it."""
    unit = tmp_path / "lane-agent.service"
    unit.write_text(
        UNIT.read_text().replace(
            "/opt/lane-agent/bin/lane-agent", shutil.which("true") or "/bin/true"
        )
    )
    return unit


def test_unit_verifies_without_any_warning(tmp_path: Path) -> None:
    """systemd-analyze verify exits 0 even on unknown keys, so any output is a failure."""
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit_with_existing_binary(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_exposure_score_is_at_most_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            systemd_analyze(),
            "security",
            "--offline=true",
            "--threshold=20",
            str(unit_with_existing_binary(tmp_path)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:]


def test_unit_is_notify_type_with_a_watchdog_and_no_restart_on_config_error() -> None:
    lines = set(UNIT.read_text().splitlines())
    assert {
        "Type=notify",
        "WatchdogSec=30",
        "RestartPreventExitStatus=78",
        "User=lane-agent",
    } <= lines


def test_notifier_sends_ready_watchdog_status_and_stopping_datagrams(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(2)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "30000000"})
        assert notifier.enabled
        assert notifier.watchdog_interval_s == 15.0
        notifier.ready("up")
        notifier.watchdog()
        notifier.status("3 crossings")
        notifier.stopping()
        received = [server.recv(256).decode() for _ in range(4)]
    assert received == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STATUS=3 crossings", "STOPPING=1"]


def test_notifier_supports_the_abstract_namespace() -> None:
    name = f"lane-agent-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready("up")
        assert server.recv(64) == b"READY=1\nSTATUS=up"


def test_notifier_outside_systemd_is_a_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("up")  # nothing to send to, nothing raised


def test_watchdog_for_another_pid_is_ignored() -> None:
    """systemd sets WATCHDOG_PID; a child process must not feed its parent's watchdog."""
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    )
    assert notifier.watchdog_interval_s is None


def test_unreachable_notify_socket_is_logged_once_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    notifier.watchdog()
    notifier.watchdog()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
