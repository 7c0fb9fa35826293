"""The systemd unit is valid and hardened, the sysusers.d, tmpfiles.d and udev files it ships
with are valid and agree with it; the notify protocol speaks systemd's datagrams."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agent.sdnotify import SystemdNotifier

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
UNIT = SYSTEMD / "lane-agent.service"
SYSUSERS = SYSTEMD / "lane-agent.sysusers.conf"
TMPFILES = SYSTEMD / "lane-agent.tmpfiles.conf"
UDEV_RULE = SYSTEMD / "60-lane-controller.rules"
MAX_EXPOSURE = 1.5


def systemd_tool(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        pytest.fail(f"{name} is missing: apt-get install systemd")
    return binary


def systemd_analyze() -> str:
    return systemd_tool("systemd-analyze")


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


def exposure(unit: Path) -> float:
    """The overall exposure ``systemd-analyze security`` rates the unit (0 safest, 10 worst)."""
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    return float(match[1])


def test_unit_exposure_score_is_at_most_1_5(tmp_path: Path) -> None:
    assert exposure(unit_with_existing_binary(tmp_path)) <= MAX_EXPOSURE


def test_readme_states_the_measured_exposure(tmp_path: Path) -> None:
    measured = exposure(unit_with_existing_binary(tmp_path))
    assert f"`systemd-analyze security` exposure {measured}" in (ROOT / "README.md").read_text()


def test_unit_documentation_is_where_the_readme_installs_it() -> None:
    """Documentation= names the README the install steps copy to /usr/share/doc/lane-agent."""
    lines = UNIT.read_text().splitlines()
    (documentation,) = [line for line in lines if line.startswith("Documentation=")]
    target = documentation.removeprefix("Documentation=file://")
    assert target == "/usr/share/doc/lane-agent/README.md"
    assert f"{Path(target).parent}" in (ROOT / "README.md").read_text()


def test_unit_may_reach_loopback_and_private_networks_only() -> None:
    lines = UNIT.read_text().splitlines()
    assert "IPAddressDeny=any" in lines
    allowed = " ".join(
        line.removeprefix("IPAddressAllow=") for line in lines if line.startswith("IPAddressAllow=")
    ).split()
    assert set(allowed) == {
        "localhost",
        "link-local",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    }


def test_sysusers_creates_the_units_user_with_its_home_in_dialout(tmp_path: Path) -> None:
    """systemd-sysusers into an empty root: the user, its group, and dialout membership for the
    serial device (the unit has no SupplementaryGroups=: a User= gets its /etc/group groups)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    result = subprocess.run(
        [systemd_tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Creating user 'lane-agent'" in result.stdout + result.stderr
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    groups = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/group").read_text().splitlines()
    }
    user = passwd["lane-agent"]
    assert (user[5], user[6]) == ("/var/lib/lane-agent", "/usr/sbin/nologin")
    assert groups["lane-agent"][2] == user[3]
    assert "lane-agent" in groups["dialout"][3].split(",")
    unit = UNIT.read_text().splitlines()
    assert {"User=lane-agent", "Group=lane-agent"} <= set(unit)
    assert not [line for line in unit if line.startswith("SupplementaryGroups=")]


def test_tmpfiles_makes_the_config_and_state_folders_with_their_modes(tmp_path: Path) -> None:
    """systemd-tmpfiles --create into a root that sysusers filled: /etc/lane-agent 0750
    root:lane-agent, /var/lib/lane-agent 0700 lane-agent. Without root the modes are still set
    and only the chown is refused (exit 73); a syntax error would exit 65."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        [systemd_tool("systemd-sysusers"), f"--root={root}", str(SYSUSERS)],
        capture_output=True,
        check=True,
    )
    result = subprocess.run(
        [systemd_tool("systemd-tmpfiles"), f"--root={root}", "--create", str(TMPFILES)],
        capture_output=True,
        text=True,
        check=False,
    )
    config, state = root / "etc/lane-agent", root / "var/lib/lane-agent"
    assert (config.stat().st_mode & 0o7777, state.stat().st_mode & 0o7777) == (0o750, 0o700)
    if os.geteuid() == 0:
        assert (result.returncode, result.stderr) == (0, "")
        user = next(
            line.split(":")
            for line in (root / "etc/passwd").read_text().splitlines()
            if line.startswith("lane-agent:")
        )
        uid, gid = int(user[2]), int(user[3])
        assert (config.stat().st_uid, config.stat().st_gid) == (0, gid)
        assert (state.stat().st_uid, state.stat().st_gid) == (uid, gid)
    else:
        assert result.returncode == 73, result.stderr
        assert all("fchownat()" in line for line in result.stderr.splitlines()), result.stderr
    assert "StateDirectoryMode=0700" in UNIT.read_text().splitlines()


RULE_TOKEN = re.compile(
    r'\s*(?P<key>[A-Z]+(?:\{[A-Za-z_]+\})?)(?P<op>==|!=|\+=|-=|:=|=)"(?P<value>[^"]*)"\s*(?:,|$)'
)


def test_the_udev_example_links_a_usb_tty_to_dev_lane_controller() -> None:
    """udev has no offline checker before systemd 254 (`udevadm verify`): the rule is parsed
    token by token here, the way udev reads KEY OP "VALUE" pairs."""
    rules = [
        line
        for line in UDEV_RULE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(rules) == 1
    tokens, position = {}, 0
    while position < len(rules[0]):
        match = RULE_TOKEN.match(rules[0], position)
        assert match, f"cannot parse the rule at column {position}: {rules[0][position:]!r}"
        tokens[match["key"]] = (match["op"], match["value"])
        position = match.end()
    assert tokens["SUBSYSTEM"] == ("==", "tty")
    assert {tokens[k][0] for k in ("ATTRS{idVendor}", "ATTRS{idProduct}", "ATTRS{serial}")} == {
        "=="
    }
    assert tokens["SYMLINK"] == ("+=", "lane-controller")
    assert tokens["GROUP"] == ("=", "dialout")
    example = (ROOT / "config" / "lane.example.toml").read_text()
    assert 'device = "/dev/lane-controller"' in example


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


def test_a_notify_socket_nobody_reads_costs_dropped_datagrams_never_a_blocked_caller(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine thread notifies: with the receiver's queue full, a call returns at once."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        started = time.monotonic()
        for count in range(2000):  # far more than the kernel queues for an unread socket
            notifier.status(f"{count} crossings")
        assert time.monotonic() - started < 5.0
        assert server.recv(256) == b"STATUS=0 crossings"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
