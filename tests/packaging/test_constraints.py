"""constraints.txt pins every runtime dependency within pyproject.toml's bounds, and every bound
has an upper limit, so a fleet install is repeatable (tools/make_constraints.py writes it)."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.utils import canonicalize_name

from tools.make_constraints import runtime_requirements

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)$")


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"not an exact pin: {line!r}"
        name = canonicalize_name(match["name"])
        assert name not in pins, f"{name} pinned twice"
        pins[name] = match["version"]
    return pins


def test_every_runtime_dependency_has_a_lower_and_an_upper_bound() -> None:
    requirements = runtime_requirements()
    assert requirements
    unbounded = [
        str(r)
        for r in requirements
        if not {s.operator for s in r.specifier} & {"<", "<=", "==", "~="}
        or not {s.operator for s in r.specifier} & {">", ">=", "==", "~="}
    ]
    assert unbounded == []


def test_constraints_pin_every_runtime_dependency_within_its_bounds() -> None:
    pins = _pins()
    outside = {
        str(r): pins.get(canonicalize_name(r.name))
        for r in runtime_requirements()
        if canonicalize_name(r.name) not in pins
        or not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    }
    assert outside == {}, "run tools/make_constraints.py after changing the dependencies"
