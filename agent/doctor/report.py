"""What a check found, and how the doctor prints it: one line per check, a fix under each FAIL."""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from dataclasses import dataclass


class State(enum.StrEnum):
    """The outcome of one check."""

    OK = "OK"
    WARN = "WARN"
    """Works, but something needs attention soon (a certificate near expiry, a readable key)."""
    FAIL = "FAIL"
    """Broken: the lane cannot do its job as configured. Always comes with a fix."""
    SKIP = "SKIP"
    """Does not apply on this machine or lane (no camera, no systemd): the detail says why."""


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the doctor's report."""

    name: str
    state: State
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.state is State.FAIL and not self.fix:
            raise ValueError(f"check {self.name!r}: a FAIL must say how to fix it")

    def as_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "state": self.state.value,
            "detail": self.detail,
            "fix": self.fix or None,
        }


def ok(name: str, detail: str) -> Check:
    return Check(name, State.OK, detail)


def warn(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, State.WARN, detail, fix)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, State.FAIL, detail, fix)


def skip(name: str, reason: str) -> Check:
    return Check(name, State.SKIP, reason)


def render_text(checks: Sequence[Check]) -> str:
    """``STATE  name  detail`` per check, ``fix:`` under each FAIL and WARN, a summary last."""
    width = max((len(c.name) for c in checks), default=0)
    lines = []
    for check in checks:
        lines.append(f"{check.state.value:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    lines.append(summary(checks))
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check], *, exit_code: int) -> str:
    """The report as one JSON document (``lane-agent doctor --json``)."""
    counts = {state.value: sum(1 for c in checks if c.state is state) for state in State}
    document = {
        "checks": [c.as_dict() for c in checks],
        "counts": counts,
        "exit_code": exit_code,
    }
    return json.dumps(document, indent=2) + "\n"


def summary(checks: Sequence[Check]) -> str:
    counts = {state: sum(1 for c in checks if c.state is state) for state in State}
    parts = ", ".join(f"{counts[s]} {s.value}" for s in State)
    verdict = "lane has problems" if counts[State.FAIL] else "no problems found"
    return f"{parts}: {verdict}"
