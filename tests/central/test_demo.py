"""The README's Central command, end to end: real lane agents on simulated controllers, a broker,
two ingest workers and PostgreSQL; crossings stored and the lanes' outboxes emptied."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.central.conftest import admin_dsn
from tests.central.kit import REPO

pytestmark = pytest.mark.broker


def test_the_demo_stores_every_crossing_and_the_watermark_empties_every_lanes_outbox(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "central.cli", "demo", "--lanes", "2", "--vehicles", "3",
            "--admin-dsn", admin_dsn(), "--workdir", str(tmp_path), "--timeout", "90",
        ],
        capture_output=True, text=True, cwd=REPO, timeout=150, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "6 crossings stored; every lane's outbox emptied by the ingest watermark." in result.stdout
    )
    assert "DEMO/L01  online" in result.stdout
    for lane in ("L01", "L02"):
        with sqlite3.connect(tmp_path / lane / "outbox.db") as outbox:
            assert outbox.execute(
                "SELECT count(*) FROM outbox WHERE stream = 'crossing'"
            ).fetchone() == (0,)
            assert outbox.execute(
                "SELECT last_seq FROM stream_seq WHERE stream = 'crossing'"
            ).fetchone() == (3,)
