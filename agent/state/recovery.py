"""Opening the outbox file, and what happens when it is damaged.

A damaged file is never deleted: :func:`open_outbox` moves it aside
(``<name>.corrupt-<time>``, with its WAL and shared-memory files), starts a fresh outbox that
continues every stream's sequence numbers it could salvage from the damaged one, and says what
it did; the caller raises the alarm.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from agent.state.outbox import DEFAULT_RETAIN_SENT_S, Outbox, OutboxCorruptError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QuarantinedOutbox:
    """A damaged outbox file moved aside by :func:`open_outbox`."""

    original: Path
    moved_to: Path
    detail: str
    """What SQLite said about the damage."""
    salvaged_last_seq: dict[str, int]
    """Last sequence numbers read from the damaged file (empty when nothing could be read)."""


def open_outbox(
    path: Path,
    *,
    synchronous: Literal["FULL", "NORMAL"] = "FULL",
    retain_sent_s: float = DEFAULT_RETAIN_SENT_S,
    max_bytes: int | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[Outbox, QuarantinedOutbox | None]:
    """Open the outbox; a damaged file is moved aside (never deleted) and a fresh one started.

    The fresh outbox continues every stream's sequence numbers from what could be salvaged from the
    damaged file. The caller raises the alarm (log, status fault) from the returned description;
    the damaged file stays for an operator to recover rows from.
    """
    path = Path(path)

    def open_file() -> Outbox:
        return Outbox(
            path,
            synchronous=synchronous,
            retain_sent_s=retain_sent_s,
            max_bytes=max_bytes,
            clock=clock,
        )

    try:
        return open_file(), None
    except OutboxCorruptError as error:
        damage = error
    stamp = datetime.fromtimestamp(clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
    moved_to = path.with_name(f"{path.name}.corrupt-{stamp}")
    suffix = 1
    while moved_to.exists():
        suffix += 1
        moved_to = path.with_name(f"{path.name}.corrupt-{stamp}-{suffix}")
    for extension in ("", "-wal", "-shm"):
        source = Path(f"{path}{extension}")
        if source.exists():
            source.rename(Path(f"{moved_to}{extension}"))
    salvaged = _salvage_last_seq(moved_to)
    log.error(
        "outbox %s is damaged (%s): moved to %s, starting a fresh outbox; %s",
        path,
        damage.detail,
        moved_to,
        f"sequence numbers continue after {salvaged}"
        if salvaged
        else "no sequence numbers salvaged",
    )
    outbox = open_file()
    if salvaged:
        outbox.continue_sequences(salvaged)
    return outbox, QuarantinedOutbox(path, moved_to, damage.detail, salvaged)


def _salvage_last_seq(path: Path) -> dict[str, int]:
    """Best effort: the highest sequence number per stream still readable in a damaged file."""
    found: dict[str, int] = {}
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return found
    try:
        for query in (
            "SELECT stream, last_seq FROM stream_seq",
            "SELECT stream, MAX(seq) FROM outbox GROUP BY stream",
        ):
            try:
                for stream, seq in connection.execute(query).fetchall():
                    if isinstance(stream, str) and isinstance(seq, int):
                        found[stream] = max(found.get(stream, 0), seq)
            except sqlite3.Error:
                continue
    finally:
        connection.close()
    return found
