"""Runs every check in order and decides the exit code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.config.files import ROOT_UID
from agent.doctor.broker import check_broker
from agent.doctor.cache import check_cache, check_trust
from agent.doctor.camera import check_camera
from agent.doctor.host import check_clock, check_disk, check_unit_security
from agent.doctor.lane_config import check_config
from agent.doctor.models import check_models
from agent.doctor.reader import check_reader
from agent.doctor.report import Check, State, fail

logger = logging.getLogger(__name__)

EX_OK = 0
EX_FAILED = 1
EX_CONFIG = 78


@dataclass(frozen=True, slots=True)
class DoctorResult:
    checks: list[Check]
    exit_code: int


def run_doctor(
    config_path: Path,
    *,
    timeout_s: float = 5.0,
    snapshot: Path | None = None,
    trust_owner_uid: int | None = ROOT_UID,
) -> DoctorResult:
    """Check the lane ``config_path`` describes. Exit code 78 when the config cannot be loaded
    (nothing else that needs it is checked), 1 on any FAIL, else 0."""
    config, checks = check_config(config_path, trust_owner_uid=trust_owner_uid)
    if config is None:
        checks += [check_clock(), check_unit_security()]
        return DoctorResult(checks, EX_CONFIG)
    checks.append(_guarded("reader", lambda: check_reader(config.reader, timeout_s)))
    checks.append(_guarded("camera", lambda: check_camera(config.camera, timeout_s, snapshot)))
    checks.append(_guarded("models", lambda: check_models(config)))
    try:
        checks += check_broker(config, timeout_s)
    except Exception as exc:
        checks.append(_crashed("broker", exc))
    checks.append(_guarded("cache", lambda: check_cache(config)))
    checks.append(_guarded("cache trust", lambda: check_trust(config, trust_owner_uid)))
    checks.append(_guarded("outbox disk", lambda: check_disk(config)))
    checks.append(_guarded("clock", check_clock))
    checks.append(_guarded("systemd", check_unit_security))
    failed = any(check.state is State.FAIL for check in checks)
    return DoctorResult(checks, EX_FAILED if failed else EX_OK)


def _guarded(name: str, run: Callable[[], Check]) -> Check:
    """One check's result; a check that crashes is a FAIL of that check, not of the doctor."""
    try:
        return run()
    except Exception as exc:
        return _crashed(name, exc)


def _crashed(name: str, exc: Exception) -> Check:
    logger.debug("check %s crashed", name, exc_info=True)
    return fail(
        name,
        f"the check itself failed: {type(exc).__name__}: {exc}",
        "run `lane-agent doctor` again; if it repeats, report it with this line",
    )
