"""Lane config files for the doctor's tests, written the way a technician writes them."""

from __future__ import annotations

from pathlib import Path

HEADER = '[lane]\nport_id = "SYS"\nlane_id = "L1"\n'


def write_lane(directory: Path, body: str, name: str = "lane.toml") -> Path:
    """A lane config: the [lane] header, then ``body`` (the sections under test)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(HEADER + body)
    return path
