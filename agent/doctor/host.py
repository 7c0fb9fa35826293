"""Checks of the computer the lane runs on: disk space for the outbox, clock synchronisation,
and the installed systemd unit's security exposure."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from agent.config import AgentConfig
from agent.doctor.report import Check, fail, ok, skip, warn

UNIT = "lane-agent.service"
EXPOSURE_TARGET = 1.5
"""The shipped unit's exposure target (README); above it the installed unit is weaker."""
MIN_FREE_BYTES = 64 << 20
"""Below this the outbox cannot be trusted to take a burst of crossings."""
_COMMAND_TIMEOUT_S = 10.0


def check_disk(config: AgentConfig) -> Check:
    """Free space where the outbox grows, against its cap (``outbox.max_bytes``)."""
    path = config.outbox.path
    folder = path.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError as exc:
        return fail(
            "outbox disk",
            f"{folder}: {exc.strerror or exc}",
            "create the folder or fix outbox.path",
        )
    used = sum(_size(Path(f"{path}{suffix}")) for suffix in ("", "-wal", "-shm"))
    room = max(0, config.outbox.max_bytes - used)
    detail = (
        f"{folder}: {_bytes(usage.free)} free of {_bytes(usage.total)}; outbox {_bytes(used)} "
        f"of its {_bytes(config.outbox.max_bytes)} cap (outbox.max_bytes)"
    )
    if usage.free < MIN_FREE_BYTES:
        return fail(
            "outbox disk",
            f"{detail}: nearly full",
            "free space on that file system (journald's logs: journalctl --vacuum-size=...)",
        )
    if usage.free < room:
        return warn(
            "outbox disk",
            f"{detail}: an outage could fill the disk before the outbox reaches its cap",
            "free space, or lower outbox.max_bytes below the free space",
        )
    return ok("outbox disk", detail)


def check_clock() -> Check:
    """Is the wall clock synchronised? Crossing times, TLS and cache age depend on it."""
    timedatectl = shutil.which("timedatectl")
    if timedatectl:
        answer = _run([timedatectl, "show", "-p", "NTPSynchronized", "-p", "NTP"])
        if answer is not None:
            values = dict(line.split("=", 1) for line in answer.splitlines() if "=" in line)
            if values.get("NTPSynchronized") == "yes":
                return ok("clock", "synchronised (timedatectl: NTPSynchronized=yes)")
            return fail(
                "clock",
                f"not synchronised (timedatectl: NTPSynchronized={values.get('NTPSynchronized')}, "
                f"NTP={values.get('NTP')})",
                "turn time synchronisation on (timedatectl set-ntp true) and check its servers "
                "(timedatectl timesync-status, or chronyc sources)",
            )
    chronyc = shutil.which("chronyc")
    if chronyc:
        answer = _run([chronyc, "-n", "tracking"])
        if answer is not None:
            return _chrony(answer)
    return skip("clock", "neither timedatectl (systemd) nor chronyc answers on this machine")


def _chrony(tracking: str) -> Check:
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in tracking.splitlines())
    }
    leap = fields.get("Leap status", "")
    offset = fields.get("System time", "unknown")
    if leap and leap != "Not synchronised":
        return ok("clock", f"synchronised (chronyc: {leap}, system time {offset})")
    return fail(
        "clock",
        f"not synchronised (chronyc: leap status {leap or 'unknown'})",
        "check chrony's sources (chronyc sources) and that the lane can reach them (UDP 123)",
    )


def check_unit_security() -> Check:
    """``systemd-analyze security`` of the installed unit: only where systemd runs the lane."""
    if not Path("/run/systemd/system").is_dir():
        return skip("systemd", f"systemd is not the init system here (PID 1 is {_pid1()})")
    systemctl = shutil.which("systemctl")
    analyze = shutil.which("systemd-analyze")
    if systemctl is None or analyze is None:
        return skip("systemd", "systemctl or systemd-analyze is not installed")
    state = _run([systemctl, "show", "-p", "LoadState", "--value", UNIT])
    if state is None or state.strip() != "loaded":
        return skip("systemd", f"{UNIT} is not installed (LoadState={(state or '?').strip()})")
    report = _run([analyze, "security", "--no-pager", UNIT])
    if report is None:
        return warn("systemd", f"systemd-analyze security {UNIT} failed")
    exposure = parse_exposure(report)
    if exposure is None:
        return warn("systemd", f"no exposure level in systemd-analyze security {UNIT}")
    score, rating = exposure
    detail = f"{UNIT}: exposure {score:.1f} {rating} (target {EXPOSURE_TARGET})"
    if score > EXPOSURE_TARGET:
        return warn(
            "systemd",
            detail,
            "install the shipped unit unchanged (systemd/lane-agent.service); drop-ins that "
            "loosen its sandbox raise the score (systemctl cat lane-agent)",
        )
    return ok("systemd", detail)


def unit_active() -> bool:
    """Whether systemd runs the lane's unit now (False where systemd is not the init system)."""
    systemctl = shutil.which("systemctl")
    if not Path("/run/systemd/system").is_dir() or systemctl is None:
        return False
    state = _run([systemctl, "is-active", UNIT])
    return state is not None and state.strip() == "active"


def parse_exposure(report: str) -> tuple[float, str] | None:
    """``(1.6, "OK")`` from systemd-analyze security's last line."""
    found = re.search(r"Overall exposure level for \S+:\s*([0-9.]+)\s+(\S+)", report)
    if found is None:
        return None
    rating = re.sub(r"\x1b\[[0-9;]*m", "", found.group(2))  # colour codes on a terminal
    return float(found.group(1)), rating


def _run(argv: list[str]) -> str | None:
    """stdout of a command that succeeded within the timeout, else None."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _pid1() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
