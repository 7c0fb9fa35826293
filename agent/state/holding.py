"""Fail-safe commits: what happens to a crossing the outbox cannot store.

The engine must keep running when the disk is full, and it must not pretend a crossing is stored
when it is not. :class:`CrossingCommitter` sits between the engine and the outbox: it appends, and
when the outbox raises :class:`~agent.state.outbox.OutboxFullError` it keeps the record in memory,
in order, calls ``on_fault(error)`` once (the service raises the ``outbox_full`` fault and tells the lane
controller to fall back to manual processing) and retries at a steady pace. Records submitted while
others are held queue up behind them, so sequence numbers keep following the order of the
vehicles. When every held record is stored, ``on_recovered()`` is called (the service clears the
fault and releases the signal).

Held records live only in memory: a process killed while holding them loses them, which is why the
lane is on manual processing for exactly that time. The lane officer processes those vehicles by
hand; the log and the status document say how many were held.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.state.outbox import PRIORITY_CROSSING, Outbox, OutboxFullError, OutboxRow

log = logging.getLogger(__name__)

DEFAULT_RETRY_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class PendingRecord:
    """A record waiting to be stored; ``build_payload`` gets the sequence number then."""

    topic: str
    build_payload: Callable[[int], bytes]
    stream: str = "crossing"
    priority: int = PRIORITY_CROSSING
    in_transaction: Callable[[sqlite3.Connection], None] | None = None
    """Runs in the transaction that stores the record (the input journal clears inputs there)."""


class CrossingCommitter:
    """Appends records to the outbox; holds them in order while it cannot. Engine thread only."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        on_stored: Callable[[OutboxRow], None],
        on_fault: Callable[[OutboxFullError], None],
        on_recovered: Callable[[], None],
        retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``on_stored`` runs for every stored row (wake the publisher, log, count)."""
        if retry_interval_s <= 0:
            raise ValueError(f"retry_interval_s must be > 0, not {retry_interval_s!r}")
        self._outbox = outbox
        self._on_stored = on_stored
        self._on_fault = on_fault
        self._on_recovered = on_recovered
        self._retry_interval_s = retry_interval_s
        self._monotonic = monotonic
        self._held: deque[PendingRecord] = deque()
        self._next_retry_at = 0.0
        self._faulted = False
        self.stored = 0
        self.held_total = 0
        """Records that had to be held at least once since start."""

    @property
    def held(self) -> int:
        """Records waiting in memory for the outbox to take them."""
        return len(self._held)

    @property
    def faulted(self) -> bool:
        """True from the first failed store until every held record is stored."""
        return self._faulted

    def submit(self, record: PendingRecord) -> OutboxRow | None:
        """Store ``record`` now if possible (returns its row), else hold it (returns None)."""
        if self._held:
            self._held.append(record)
            self.held_total += 1
            self.retry()
            return None
        try:
            row = self._append(record)
        except OutboxFullError as error:
            self._held.append(record)
            self.held_total += 1
            self._failed(error)
            return None
        self._stored(row)
        return row

    def retry(self) -> None:
        """Try the held records again, oldest first, if the retry interval has passed."""
        if not self._held or self._monotonic() < self._next_retry_at:
            return
        while self._held:
            record = self._held[0]
            try:
                row = self._append(record)
            except OutboxFullError as error:
                self._failed(error)
                return
            self._held.popleft()
            self._stored(row)
        if self._faulted:
            self._faulted = False
            log.warning("outbox stores again: every held record is stored")
            self._on_recovered()

    def _stored(self, row: OutboxRow) -> None:
        self.stored += 1
        self._on_stored(row)

    def _append(self, record: PendingRecord) -> OutboxRow:
        return self._outbox.append(
            topic=record.topic,
            build_payload=record.build_payload,
            stream=record.stream,
            priority=record.priority,
            in_transaction=record.in_transaction,
        )

    def _failed(self, error: OutboxFullError) -> None:
        self._next_retry_at = self._monotonic() + self._retry_interval_s
        if self._faulted:
            return
        self._faulted = True
        log.error(
            "outbox cannot store (%s: %s); %d records held in memory, retrying every %.1f s",
            error.reason,
            error.detail,
            len(self._held),
            self._retry_interval_s,
        )
        self._on_fault(error)
