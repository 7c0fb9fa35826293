"""CLI behaviours a technician or operator met as bugs: ``keys generate --out-dir`` into a
folder that does not exist yet (docs/bundles.md), and progress on long plain imports."""

from __future__ import annotations

import json
import os
import select
import stat
import subprocess
import sys
import time
import tty
from pathlib import Path

from click.testing import CliRunner

from agent.cli import main
from tests.cache.conftest import valid_record, write_csv, write_ndjson

ROOT = Path(__file__).resolve().parents[2]


def test_keys_generate_creates_the_out_dir_private(tmp_path: Path) -> None:
    """Exactly as docs/bundles.md writes it: the folder is created 0700, the key 0600."""
    out_dir = tmp_path / "keys"
    result = CliRunner().invoke(main, ["keys", "generate", "central-a", "--out-dir", f"{out_dir}/"])
    assert result.exit_code == 0, result.output
    key_id, private_path, public_path = result.stdout.split()
    assert Path(private_path) == out_dir / "central-a.key"
    assert Path(public_path) == out_dir / "central-a.pub"
    assert stat.S_IMODE(out_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((out_dir / "central-a.key").stat().st_mode) == 0o600
    assert json.loads((out_dir / "central-a.pub").read_text())["key_id"] == key_id


def test_keys_generate_creates_missing_parents_and_leaves_an_existing_folder_alone(
    tmp_path: Path,
) -> None:
    nested = tmp_path / "ops" / "keys"
    assert (
        CliRunner().invoke(main, ["keys", "generate", "a", "--out-dir", str(nested)]).exit_code == 0
    )
    assert stat.S_IMODE(nested.stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    assert (
        CliRunner().invoke(main, ["keys", "generate", "b", "--out-dir", str(shared)]).exit_code == 0
    )
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755, "an existing folder keeps its mode"
    assert stat.S_IMODE((shared / "b.key").stat().st_mode) == 0o600


def test_keys_generate_into_a_file_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "keys"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["keys", "generate", "a", "--out-dir", str(blocker)])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert str(blocker) in result.stderr


def many_records(count: int) -> list[dict[str, object]]:
    return [valid_record(ref=f"E2801160600002{n:010X}", vehicles=f"CA:P{n}") for n in range(count)]


RECORDS = 5000


def test_a_long_import_off_a_terminal_logs_progress_lines(tmp_path: Path) -> None:
    """Not on a terminal, progress is INFO log lines (JSON, as the agent logs): records read,
    the share of the file, rate and elapsed time. ``--progress-every 0`` reports at every check
    (each 1024 records), so the test needs no big file."""
    source = write_csv(tmp_path / "big.csv", many_records(RECORDS))
    db = tmp_path / "c.db"
    result = CliRunner().invoke(
        main, ["cache", "import", str(source), "--db", str(db), "--progress-every", "0"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{source}: imported {RECORDS} records")
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["level"] for line in lines] == ["INFO"] * (RECORDS // 1024)
    records_read = []
    for line in lines:
        message = line["msg"]
        assert message.startswith(f"credential import from {source}: ")
        assert "% of the file)" in message
        assert "records/s" in message
        assert message.endswith(" s elapsed")
        records_read.append(int(message.split(": ")[1].split()[0]))
    assert records_read == [1024 * n for n in range(1, RECORDS // 1024 + 1)]


def test_a_short_import_shows_no_progress(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "small.ndjson", many_records(50))
    result = CliRunner().invoke(
        main, ["cache", "import", str(source), "--db", str(tmp_path / "c.db")]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_a_long_import_on_a_terminal_draws_a_bar(tmp_path: Path) -> None:
    """On a terminal (a real pty as stderr) the progress is a bar redrawn in place, ended by a
    newline before the summary."""
    source = write_ndjson(tmp_path / "big.ndjson", many_records(RECORDS))
    master, slave = os.openpty()
    tty.setraw(slave)  # no newline translation: what the program writes is what is read
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "cache", "import", str(source),
             "--db", str(tmp_path / "c.db"), "--progress-every", "0"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif process.poll() is not None:
                break
        stdout, _ = process.communicate(timeout=30)
    finally:
        os.close(master)
    assert process.returncode == 0
    assert stdout.decode().startswith(f"{source}: imported {RECORDS} records")
    text = seen.decode()
    assert text.count("\r") == RECORDS // 1024, text
    assert "importing [" in text
    assert "records" in text
    assert "%" in text
    assert text.endswith("\n"), "the bar's line is ended"
    assert "{" not in text, "no JSON log lines on a terminal"
