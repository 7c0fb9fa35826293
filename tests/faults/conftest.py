"""The fault-injection suite's harness: the lane's delivery side as a process the tests control."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.broker import Message

REPO_ROOT = Path(__file__).resolve().parents[2]


class LaneProcess:
    """``tests/faults/lane_process.py`` in a child process; its stdout facts collected as lines."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        *args: str,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = []
        self._condition = threading.Condition()
        # stderr through a pipe: a file the child wrote itself would count against a file-size
        # limit the test puts on it.
        self._log = (workdir / "lane.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.lane_process",
                "--workdir",
                str(workdir),
                "--port",
                str(port),
                *args,
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            preexec_fn=preexec_fn,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._log_copier = threading.Thread(target=self._copy_log, daemon=True)
        self._log_copier.start()

    def _copy_log(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._log.write(raw)
            self._log.flush()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            with self._condition:
                self.lines.append(raw.decode().rstrip("\n"))
                self._condition.notify_all()

    def wait_for_line(
        self, predicate: Callable[[str], bool], timeout_s: float, what: str, *, since: int = 0
    ) -> str:
        """The first line from index ``since`` on for which ``predicate`` holds; fail on timeout."""
        with self._condition:
            found: list[str] = []

            def seen() -> bool:
                found[:] = [line for line in self.lines[since:] if predicate(line)]
                return bool(found) or self.process.poll() is not None

            self._condition.wait_for(seen, timeout_s)
            if not found:
                pytest.fail(
                    f"lane process: no {what} within {timeout_s} s (exit {self.process.poll()}); "
                    f"last lines {self.lines[-5:]}; log tail:\n{self.log_tail()}"
                )
            return found[0]

    def mark(self) -> int:
        """Index to pass as ``since`` to wait for a line printed after this point."""
        with self._condition:
            return len(self.lines)

    def stored(self) -> dict[int, str]:
        """seq -> event_id of every crossing whose commit returned."""
        with self._condition:
            lines = list(self.lines)
        stored = {}
        for line in lines:
            if line.startswith("stored "):
                _, seq, event_id = line.split()
                stored[int(seq)] = event_id
        return stored

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "lane.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_records(self) -> list[dict[str, object]]:
        path = self.workdir / "lane.log"
        records = []
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records

    def kill(self) -> None:
        """SIGKILL: no flush, no clean disconnect, no goodbye."""
        self.process.send_signal(signal.SIGKILL)
        self._finish()

    def stop(self) -> None:
        """SIGTERM: the clean shutdown."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self._finish()

    def _finish(self) -> None:
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)
        self._log_copier.join(5)
        self._log.close()


@pytest.fixture
def lanes(tmp_path: Path) -> Iterator[Callable[..., LaneProcess]]:
    """Start lane processes in ``tmp_path/lane``; any still running at the end are killed."""
    started: list[LaneProcess] = []

    def start(port: int, *args: str, **options: Callable[[], None] | None) -> LaneProcess:
        lane = LaneProcess(tmp_path / "lane", port, *args, **options)  # type: ignore[arg-type]
        started.append(lane)
        return lane

    yield start
    for lane in started:
        if lane.process.poll() is None:
            lane.kill()


@dataclass(frozen=True)
class Delivered:
    """What a subscriber received on the crossing topic, decoded."""

    seqs: list[int]
    event_ids: dict[int, set[str]]

    @classmethod
    def of(cls, messages: list[Message]) -> Delivered:
        seqs: list[int] = []
        event_ids: dict[int, set[str]] = {}
        for message in messages:
            document = json.loads(message.payload)
            seqs.append(document["seq"])
            event_ids.setdefault(document["seq"], set()).add(document["event_id"])
        return cls(seqs, event_ids)

    @property
    def duplicates(self) -> int:
        return len(self.seqs) - len(set(self.seqs))
