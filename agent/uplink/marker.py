"""Marking acknowledged rows sent in the outbox: on a thread of its own, one batch at a time.

A mark is one UPDATE and one fsync (``synchronous=FULL``): milliseconds, many more when the disk is
busy. Done on the publisher thread, which also drives the socket, that stalls the whole pipeline;
on the marker thread SQLite runs without the GIL on the other core while the publisher keeps
reading PUBACKs and writing PUBLISHes.

Acknowledged rows are handed over at once on live traffic (a crash then repeats almost nothing);
while a backlog drains, every ``_MARK_BATCH`` rows or ``_MARK_DELAY_S``, together with whatever
was acknowledged while the previous batch was being written, so each fsync covers more rows. A
crash in between only causes duplicates: the rows are still pending in the outbox and go out
again. The next batch is handed over only once the last one is reported, so rows are marked in
the order they were acknowledged. Before re-queueing rows after a reconnect, and at stop, the
publisher waits for the marker (:meth:`Marking.settle`), so a late mark never hides a row from the
re-queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from agent.status import StatusBoard
from agent.uplink.events import Marked
from agent.uplink.stats import FAULT_OUTBOX_ERROR, Counters
from agent.uplink.store import RowStore

log = logging.getLogger(__name__)

_MARK_BATCH = 1024  # acknowledged rows marked sent in one transaction (one fsync)...
_MARK_DELAY_S = 0.1  # ...or after this long: a crash in between only causes duplicates


class _MarkerThread:
    """Marks the batches it is handed, in order, and reports each outcome (``report``)."""

    def __init__(self, outbox: RowStore, report: Callable[[Marked], None]) -> None:
        self._outbox = outbox
        self._report = report
        self._batches: queue.SimpleQueue[tuple[int, list[int]] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self.result: Marked | None = None
        """The outcome of the last batch; read it only after wait_idle() returned True."""
        self._thread = threading.Thread(target=self._run, name="mqtt-uplink-mark", daemon=True)
        self._thread.start()

    def submit(self, batch: int, row_ids: list[int]) -> None:
        self._idle.clear()
        self._batches.put((batch, row_ids))

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until the batch handed over last is in the outbox (or failed); False on timeout."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Finish the batch in hand, then end the thread."""
        self._batches.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (work := self._batches.get()) is not None:
            batch, row_ids = work
            error: Exception | None = None
            try:
                self._outbox.mark_sent_many(row_ids)
            except Exception as failure:  # reported; the publisher decides, as for its own calls
                error = failure
            self.result = result = Marked(batch, len(row_ids), error)
            self._idle.set()
            self._report(result)


class Marking:
    """The publisher thread's side: rows acknowledged, the batch being marked, and its outcome."""

    def __init__(
        self,
        outbox: RowStore,
        counters: Counters,
        *,
        status: StatusBoard | None,
        report: Callable[[Marked], None],
        storage_errors: tuple[type[Exception], ...],
        storage_failed: Callable[[str, Exception], None],
    ) -> None:
        """``report`` is called on the marker thread with each batch's outcome: it queues it for
        the publisher, which passes it to :meth:`on_marked`."""
        self._outbox = outbox
        self._counters = counters
        self._status = status
        self._report = report
        self._storage_errors = storage_errors
        self._storage_failed = storage_failed
        self._marker: _MarkerThread | None = None  # runs while the publisher thread does
        self.acked: list[int] = []  # row ids acknowledged but not yet handed to the marker
        self.acked_since = 0.0  # monotonic time of the oldest entry in acked
        self.marking: list[int] = []  # row ids the marker is marking sent right now
        self._batch = 0  # numbers the batches, so that each outcome is applied once

    def start(self) -> None:
        """Start the marker thread (from the publisher thread, as it starts)."""
        self._marker = _MarkerThread(self._outbox, self._report)

    def close(self, timeout_s: float) -> None:
        """Let the marker finish the batch in hand (within ``timeout_s``) and end."""
        if self._marker is not None:
            self._marker.close(timeout_s)

    def acknowledged(self, row_id: int) -> None:
        """The broker acknowledged this row: it is marked sent with the next batch."""
        if not self.acked:
            self.acked_since = time.monotonic()
        self.acked.append(row_id)

    def idle(self) -> bool:
        """Nothing acknowledged is waiting to be marked, nor being marked."""
        return not self.acked and not self.marking

    def mark_due(self, now: float, *, at_once: bool) -> None:
        """Hand the acknowledged rows over now if ``at_once`` (live traffic, stopping, no
        connection), or once a batch is full or its oldest row waited long enough."""
        if at_once or len(self.acked) >= _MARK_BATCH or now - self.acked_since >= _MARK_DELAY_S:
            self.hand_over()

    def next_due_at(self) -> float | None:
        """When the rows acknowledged so far are due (monotonic); None when the marker's report
        is what the publisher waits for, or nothing is acknowledged."""
        if self.acked and not self.marking:
            return self.acked_since + _MARK_DELAY_S
        return None

    def hand_over(self) -> None:
        """Hand the acknowledged rows to the marker thread, unless it is still on the last batch
        (they go with the next one: while a backlog drains, each fsync covers more rows)."""
        if not self.acked or self.marking:
            return
        assert self._marker is not None
        self.marking, self.acked = self.acked, []
        self._batch += 1
        self._marker.submit(self._batch, self.marking)

    def owns(self, result: Marked) -> bool:
        """Whether ``result`` is the outcome of the batch being marked (not yet applied)."""
        return bool(self.marking) and result.batch == self._batch

    def on_marked(self, result: Marked) -> None:
        """Apply a batch's outcome: count the rows delivered, or report the storage failure."""
        self.marking = []
        error = result.error
        if error is not None:
            if not isinstance(error, self._storage_errors):
                raise error  # a bug, not a storage problem: fail as if it happened here
            # The rows stay unsent in the outbox and go out again later: a duplicate, never a loss.
            self._storage_failed("marking acknowledged rows sent", error)
            return
        with self._counters.lock:
            self._counters.delivered += result.count
        if self._status is not None and FAULT_OUTBOX_ERROR in self._status.active_faults():
            self._status.clear_fault(FAULT_OUTBOX_ERROR)

    def settle(self, timeout_s: float | None = None) -> bool:
        """Make the outbox show every acknowledged row as sent before going on.

        Before re-queueing after a reconnect, so that a mark landing late cannot hide a row the
        re-queue should have sent again; and at stop, within ``timeout_s`` in all. Waits for the
        marker's batch, then has it mark what is left: on the marker, a write that waits for a
        lock (SQLite's busy timeout) cannot hold this thread past ``timeout_s``. False when the
        marker is still at it.
        """
        assert self._marker is not None
        until = None if timeout_s is None else time.monotonic() + timeout_s
        for _ in range(2):  # the batch in hand, then the rows acknowledged since
            if not self.marking:
                self.hand_over()
            if not self.marking:
                return True
            left = None if until is None else max(0.0, until - time.monotonic())
            if not self._marker.wait_idle(left):
                log.warning("outbox still busy marking rows sent; they may be sent again")
                return False
            assert self._marker.result is not None
            self.on_marked(self._marker.result)  # its event, still queued, is then ignored
        return not self.acked and not self.marking
