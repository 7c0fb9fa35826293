"""Logs for journald and for people: sd-daemon priority prefixes when stderr is the journal or
when asked, JSON/text otherwise; repetitive warnings rate-limited with a count."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import LoggingConfig
from agent.logs import RateLimitedLog, syslog_priority

ROOT = Path(__file__).resolve().parent.parent

_SCRIPT = """
import logging, sys
from agent.logs import configure_logging
configure_logging("DEBUG", sys.argv[1])
log = logging.getLogger("agent.test")
log.debug("a debug line")
log.info("an info line")
log.warning("a warning line")
log.error("an error line")
log.critical("a critical line")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("failed")
"""


def run_logging(tmp_path: Path, fmt: str, journal: str | None) -> list[str]:
    """Run the agent's logging setup in a child whose stderr is a file; ``journal`` is
    ``"match"`` (JOURNAL_STREAM names that file, as systemd does), ``"other"`` (it names
    another file: inherited by a child whose stderr went elsewhere) or None (unset)."""
    stderr_path = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with stderr_path.open("w") as stderr:
        if journal is not None:
            target = os.fstat(stderr.fileno()) if journal == "match" else os.stat(ROOT)
            env["JOURNAL_STREAM"] = f"{target.st_dev}:{target.st_ino}"
        subprocess.run(
            [sys.executable, "-c", _SCRIPT, fmt],
            stderr=stderr,
            env=env,
            cwd=ROOT,
            check=True,
            timeout=60,
        )
    return stderr_path.read_text().splitlines()


def test_priorities_follow_sd_daemon() -> None:
    assert [
        syslog_priority(level)
        for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
    ] == [7, 6, 4, 3, 2]
    assert syslog_priority(logging.INFO + 5) == 6
    assert syslog_priority(logging.NOTSET) == 7


def test_on_the_journal_stream_every_json_line_starts_with_its_priority(tmp_path: Path) -> None:
    """Under systemd (JOURNAL_STREAM names stderr) ``journalctl -p warning`` can filter: a
    warning is ``<4>``, and the rest of the line is still the JSON entry."""
    lines = run_logging(tmp_path, "auto", "match")
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"]
    entries = [json.loads(line[3:]) for line in lines]
    assert [e["level"] for e in entries] == [
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
        "ERROR",
    ]
    assert entries[2]["msg"] == "a warning line"
    assert "ValueError: boom" in entries[5]["exc"]


def test_text_on_the_journal_stream_prefixes_every_line_of_a_traceback(tmp_path: Path) -> None:
    lines = run_logging(tmp_path, "text", "match")
    assert lines[2].startswith("<4>")
    assert lines[2].endswith("WARNING agent.test: a warning line")
    traceback = lines[5:]
    assert len(traceback) > 3
    assert all(line.startswith("<3>") for line in traceback), traceback
    assert traceback[-1] == "<3>ValueError: boom"


def test_journal_format_prefixes_without_time_or_level(tmp_path: Path) -> None:
    """``format = "journal"`` prefixes even when the stream cannot be detected; the journal
    records time and level itself."""
    lines = run_logging(tmp_path, "journal", None)
    assert lines[:5] == [
        "<7>agent.test: a debug line",
        "<6>agent.test: an info line",
        "<4>agent.test: a warning line",
        "<3>agent.test: an error line",
        "<2>agent.test: a critical line",
    ]


@pytest.mark.parametrize("journal", [None, "other"])
def test_off_the_journal_json_lines_carry_no_prefix(tmp_path: Path, journal: str | None) -> None:
    """An inherited JOURNAL_STREAM that names another file is not the journal."""
    lines = run_logging(tmp_path, "auto", journal)
    assert json.loads(lines[2])["msg"] == "a warning line"
    assert not any(line.startswith("<") for line in lines)


def test_the_config_accepts_the_journal_format() -> None:
    assert LoggingConfig(format="journal").format == "journal"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_warning_is_logged_once_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("agent.test.limit"), 60.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="agent.test.limit"):
        results = [limited.warning("frame %d dropped", n) for n in range(1000)]
        assert results.count(True) == 1
        assert limited.suppressed("frame %d dropped") == 999
        clock.now += 59.0
        assert not limited.warning("frame %d dropped", 1000)
        clock.now += 1.0
        assert limited.warning("frame %d dropped", 1001)
        assert limited.warning("another %s", "message"), "another template is its own message"
    assert [r.getMessage() for r in caplog.records] == [
        "frame 0 dropped",
        "frame 1001 dropped (1000 more like this suppressed in the last 60 s)",
        "another message",
    ]
    assert {r.levelno for r in caplog.records} == {logging.WARNING}


def test_flush_reports_what_is_still_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limited = RateLimitedLog(logging.getLogger("agent.test.flush"), 10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="agent.test.flush"):
        for _ in range(5):
            limited.warning("read without timestamp")
        limited.log(logging.INFO, "quiet one")
        clock.now += 3.0
        limited.flush()
        limited.flush()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "read without timestamp"),
        (logging.INFO, "quiet one"),
        (logging.WARNING, "4 more like this suppressed in the last 3 s: read without timestamp"),
    ]


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be positive"):
        RateLimitedLog(logging.getLogger("x"), 0.0)
