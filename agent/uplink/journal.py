"""Input journal: the controller inputs of crossings not yet committed, stored before they are ACKed.

The serial link acknowledges a controller event only after its callback returned, and the
agent's callback appends the event here first. A crossing, on the other hand, reaches the outbox
only when it closes. Between the two, the vehicle at the booth exists only in the lane engine's
memory; this journal is what survives a ``kill -9`` or a power cut in that time.

It lives in the outbox database (one file, one fsync policy, one transaction for both):

* :meth:`InputJournal.append` stores one input (a tag read or a loop edge, with the time the agent
  received it) and remembers the controller's ``(boot_id, seq)`` of the last event stored, so that
  an event stored just before the agent died, whose ACK never left, is not taken twice when the
  controller resends it (:meth:`Recovery.resume` goes to the next link).
* Each committed crossing carries a :class:`Checkpoint`: the lane engine's state (plain data from
  the correlator) right after it closed, and the id of the last journal row applied then. The
  outbox stores the crossing and, in the same transaction (:meth:`InputJournal.on_commit`), stores
  that checkpoint and deletes every row up to it. A crossing that cannot be stored (full disk)
  leaves the journal as it was, so its inputs stay.
* At start, :meth:`InputJournal.recover` gives the last checkpoint and the rows after it; the
  service restores the engine from the checkpoint and replays the rows with their original times.
  The engine is deterministic, so the replay closes the same crossings, and because the correlator
  numbers every crossing it closes, the ones already stored (``Recovery.committed``) are skipped.

What the checkpoint covers decides the boundary cases: an input that closes crossing A and opens
B is folded into A's checkpoint together with B's open state; inputs the correlator drops (weak
reads, stragglers, a clear with no vehicle) are folded into the next checkpoint, and until then a
replay drops them again from the same state; when one input closes two crossings, only the second
carries a checkpoint (the first is numbered, so a replay from the older checkpoint skips it).
Plate readings are not journalled: after a crash the recovered vehicle's crossing carries its
cards and loop times but not the plates read before the crash.

:class:`JournalledEngine` is the engine thread's side of all this: it builds the engine from the
recovery, replays, numbers what closes, attaches checkpoints and says which crossings a replay
closed again after they had been stored.

Exceptions::

    OutboxError
     └── JournalError
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, LoopChanged, TagRead
from agent.lane.policy import Decision
from agent.uplink.outbox import Outbox, OutboxError
from firmware_bridge.link import EventOrigin

log = logging.getLogger(__name__)

JournalInput = TagRead | LoopChanged
"""The lane inputs the journal holds: what the controller reports and the engine correlates."""

_KIND_TAG = "tag"
_KIND_LOOP = "loop"


class JournalError(OutboxError):
    """An input could not be journalled (disk full, I/O error, outbox closed); nothing was stored."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"input journal: cannot store an input: {detail}")
        self.detail = detail


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One journalled input, in the order the engine applies them."""

    id: int
    input: JournalInput


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The lane engine's state once every journal row up to ``through_id`` had been applied."""

    through_id: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a restarted agent finds in the journal."""

    state: dict[str, Any] | None
    """Engine state of the last checkpoint; None: start from an empty lane."""
    through_id: int
    """Rows up to this id are folded into ``state``."""
    committed: int
    """Number of the last crossing stored (the correlator's ``closed_count`` then)."""
    entries: list[JournalEntry]
    """Rows after the checkpoint, oldest first: to replay on top of ``state``."""
    resume: EventOrigin | None
    """The controller event journalled last, for the link's ``resume``."""


class InputJournal:
    """The journal tables of one outbox. ``append`` from the link thread, the rest from the engine."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        outbox.transact(
            lambda connection: connection.execute(
                "INSERT OR IGNORE INTO journal_state (key, through_id, committed) VALUES (0, 0, 0)"
            )
        )

    def append(self, lane_input: JournalInput, origin: EventOrigin | None) -> int:
        """Store one input durably and return its journal id; raise JournalError if it is not stored.

        With ``origin`` the controller event it came from is recorded in the same transaction.
        """
        kind, body = _encode(lane_input)

        def work(connection: sqlite3.Connection) -> int:
            cursor = connection.execute(
                "INSERT INTO input_journal (at, kind, body) VALUES (?, ?, ?)",
                (lane_input.at, kind, body),
            )
            if origin is not None:
                connection.execute(
                    "UPDATE journal_state SET boot_id = ?, seq = ? WHERE key = 0",
                    (origin.boot_id, origin.seq),
                )
            row_id = cursor.lastrowid
            assert row_id is not None
            return row_id

        try:
            return self.outbox.transact(work)
        except (sqlite3.Error, OutboxError) as error:
            raise JournalError(str(error)) from error

    def on_commit(
        self, number: int, checkpoint: Checkpoint | None
    ) -> Callable[[sqlite3.Connection], None]:
        """The journal's part of storing crossing ``number``: runs inside the outbox append.

        It records the crossing as stored and, with a checkpoint, stores it and deletes every row
        it covers. Both only move forward, so an older checkpoint never replaces a newer one.
        """

        def work(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE journal_state SET committed = MAX(committed, ?) WHERE key = 0", (number,)
            )
            if checkpoint is not None:
                _store_checkpoint(connection, checkpoint)

        return work

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint on its own, when every crossing closed so far is stored.

        Keeps the journal short while no crossing closes (a long stay at the booth, reads from
        the next lane that the correlator drops). Raises JournalError if it cannot be stored.
        """
        try:
            self.outbox.transact(lambda connection: _store_checkpoint(connection, checkpoint))
        except (sqlite3.Error, OutboxError) as error:
            raise JournalError(str(error)) from error

    def recover(self) -> Recovery:
        """The last checkpoint and the rows after it; rows of an unknown kind are skipped."""

        def work(connection: sqlite3.Connection) -> Recovery:
            through_id, committed, state_json, boot_id, seq = connection.execute(
                "SELECT through_id, committed, engine_state, boot_id, seq FROM journal_state"
                " WHERE key = 0"
            ).fetchone()
            rows = connection.execute(
                "SELECT id, at, kind, body FROM input_journal WHERE id > ? ORDER BY id",
                (through_id,),
            ).fetchall()
            entries = []
            for row_id, at, kind, body in rows:
                decoded = _decode(at, kind, body)
                if decoded is None:
                    log.error("input journal: row %d has unknown kind %r; skipped", row_id, kind)
                    continue
                entries.append(JournalEntry(row_id, decoded))
            return Recovery(
                state=None if state_json is None else json.loads(state_json),
                through_id=int(through_id),
                committed=int(committed),
                entries=entries,
                resume=None if boot_id is None else EventOrigin(int(boot_id), int(seq)),
            )

        return self.outbox.transact(work)

    def rows(self) -> int:
        """Journal rows waiting to be folded into a checkpoint (for status and tests)."""
        return int(
            self.outbox.transact(
                lambda connection: connection.execute(
                    "SELECT COUNT(*) FROM input_journal"
                ).fetchone()[0]
            )
        )


def _store_checkpoint(connection: sqlite3.Connection, checkpoint: Checkpoint) -> None:
    cursor = connection.execute(
        "UPDATE journal_state SET through_id = ?, engine_state = ? WHERE key = 0 AND through_id <= ?",
        (checkpoint.through_id, json.dumps(checkpoint.state), checkpoint.through_id),
    )
    if cursor.rowcount:
        connection.execute("DELETE FROM input_journal WHERE id <= ?", (checkpoint.through_id,))


def _encode(lane_input: JournalInput) -> tuple[str, str]:
    match lane_input:
        case TagRead():
            body: dict[str, Any] = {
                "epc": lane_input.epc,
                "antenna": lane_input.antenna,
                "rssi_dbm": lane_input.rssi_dbm,
                "tid": lane_input.tid,
            }
            return _KIND_TAG, json.dumps(body)
        case LoopChanged():
            body = {"loop_id": lane_input.loop_id, "occupied": lane_input.occupied}
            return _KIND_LOOP, json.dumps(body)


def _decode(at: float, kind: str, body: str) -> JournalInput | None:
    fields = json.loads(body)
    if kind == _KIND_TAG:
        return TagRead(
            at=at,
            epc=fields["epc"],
            antenna=fields["antenna"],
            rssi_dbm=fields["rssi_dbm"],
            tid=fields["tid"],
        )
    if kind == _KIND_LOOP:
        return LoopChanged(at=at, loop_id=fields["loop_id"], occupied=fields["occupied"])
    return None


@dataclass(frozen=True, slots=True)
class ClosedCrossing:
    """A decided crossing, its number, and for the last one an input closed, a checkpoint."""

    decision: Decision
    number: int
    checkpoint: Checkpoint | None


class JournalledEngine:
    """The lane engine with its journal bookkeeping; engine thread only.

    ``make_engine(state)`` builds a :class:`LaneEngine` from an exported state (None: empty
    lane). Feed it inputs with :meth:`handle` (with their journal ids), store every crossing it
    returns unless :meth:`already_stored` says so, passing :meth:`on_commit` to the outbox append.
    """

    def __init__(
        self, journal: InputJournal, make_engine: Callable[[dict[str, Any] | None], LaneEngine]
    ) -> None:
        self.journal = journal
        self._make_engine = make_engine
        recovery = journal.recover()
        self.recovery = recovery
        self.applied_through = recovery.through_id
        """Journal id of the last journalled input applied."""
        self.checkpointed_through = recovery.through_id
        self.last_input_at = float("-inf")
        """Latest time of a controller input applied (ticks never go behind it)."""
        try:
            self.engine = make_engine(recovery.state)
        except ValueError as error:
            # Never take a crossing for one stored before when that cannot be known: number on
            # from the last stored one, so the replay stores all it closes (a duplicate at worst).
            log.error(
                "input journal: engine state not restorable (%s); replaying from empty", error
            )
            self.engine = self._renumbered(make_engine(None), recovery.committed)

    @property
    def resume(self) -> EventOrigin | None:
        """The controller event journalled last, for the link."""
        return self.recovery.resume

    def replay(self) -> Iterator[ClosedCrossing]:
        """Apply the journalled inputs after the checkpoint; yield what they close, in order."""
        entries = self.recovery.entries
        if entries:
            log.info(
                "input journal: replaying %d inputs from before the restart "
                "(%d crossings stored then)",
                len(entries),
                self.recovery.committed,
            )
        for entry in entries:
            yield from self.handle(entry.input, entry.id)
        if self.engine.closed_count < self.recovery.committed:
            # Rows the replay could not read: number on past every stored crossing, so that no
            # later crossing is taken for one stored before.
            log.error(
                "input journal: replay closed %d crossings but %d were stored; numbering on",
                self.engine.closed_count,
                self.recovery.committed,
            )
            self.engine = self._renumbered(self.engine, self.recovery.committed)

    def handle(self, lane_input: LaneInput, journal_id: int | None = None) -> list[ClosedCrossing]:
        """Apply one input (``journal_id``: its row, None if not journalled)."""
        before = self.engine.closed_count
        decisions = self.engine.handle(lane_input)
        if journal_id is not None:
            self.applied_through = journal_id
        if isinstance(lane_input, TagRead | LoopChanged):
            self.last_input_at = max(self.last_input_at, lane_input.at)
        return self._numbered(before, decisions)

    def shutdown(self, at: float) -> list[ClosedCrossing]:
        """Close whatever is open (clean stop)."""
        before = self.engine.closed_count
        return self._numbered(before, self.engine.shutdown(at))

    def already_stored(self, closed: ClosedCrossing) -> bool:
        """The replay closed this crossing again, and it had been stored before the restart."""
        return closed.number <= self.recovery.committed

    def on_commit(self, closed: ClosedCrossing) -> Callable[[sqlite3.Connection], None]:
        """What the outbox runs in the transaction that stores ``closed``."""
        if closed.checkpoint is not None:
            self.checkpointed_through = closed.checkpoint.through_id
        return self.journal.on_commit(closed.number, closed.checkpoint)

    def idle_checkpoint(self, held: int) -> bool:
        """Checkpoint inputs applied since the last checkpoint when no crossing is ``held``.

        Returns whether one was stored; a failure is logged and left for the next call.
        """
        if held or self.applied_through <= self.checkpointed_through:
            return False
        checkpoint = Checkpoint(self.applied_through, self.engine.export_state())
        try:
            self.journal.checkpoint(checkpoint)
        except JournalError as error:
            log.warning("input journal: checkpoint not stored (%s); retried later", error.detail)
            return False
        self.checkpointed_through = checkpoint.through_id
        return True

    def _numbered(self, before: int, decisions: list[Decision]) -> list[ClosedCrossing]:
        if not decisions:
            return []
        checkpoint = Checkpoint(self.applied_through, self.engine.export_state())
        last = len(decisions) - 1
        return [
            ClosedCrossing(decision, before + index + 1, checkpoint if index == last else None)
            for index, decision in enumerate(decisions)
        ]

    def _renumbered(self, engine: LaneEngine, closed_count: int) -> LaneEngine:
        state = engine.export_state()
        state["closed_count"] = closed_count
        return self._make_engine(state)
