"""Input journal: the controller inputs of crossings not yet committed, stored before they are ACKed.

The serial link acknowledges a controller event only after its callback returned, and the
agent's callback appends the event here first. A crossing, on the other hand, reaches the outbox
only when it closes. Between the two, the vehicle at the booth exists only in the lane engine's
memory; this journal is what survives a ``kill -9`` or a power cut in that time.

It lives in the outbox database (one file, one fsync policy, one transaction for both):

* :meth:`InputJournal.append` stores one input (a tag read or a loop edge, in lane time) and
  remembers the reader family's *resume token* of the last input stored (the lane controller's
  boot and event sequence number), so that an input stored just before the agent died, whose ACK
  never left, is not taken twice when the device resends it (:attr:`Recovery.resume` goes to the
  reader of the next run; only the family reads its tokens, see agent/readers/base.py).
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

Inputs are journalled in lane time (:mod:`agent.lane.clock`: the controller's own clock), so a
replay sees the lane as it happened, and the controller's resent events, stamped when they
happened, continue it where it was: the time the agent was down is no idle time at the booth,
because nothing in lane time says it was. The controller clock's mapping for the current boot
(``journal_state.clock``) is stored with each input, so the restarted agent maps that boot as
before. Rows of the kind ``resumed``, written by agents that correlated on their own receive
time, are recognised and skipped: lane time needs no resume marker.

Journal rows and checkpoints get the room of a crossing at the outbox's size cap (images and
health rows are evicted for them). A row that cannot be decoded is skipped with an ERROR log and
an undecodable state is treated as one that cannot be restored: a damaged file must not keep the
agent from starting.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, LoopChanged, TagRead
from agent.lane.policy import Decision
from agent.state.outbox import PRIORITY_CROSSING, Outbox, OutboxError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

JournalInput = TagRead | LoopChanged
"""The lane inputs the journal holds: what the controller reports and the engine correlates."""

_KIND_TAG = "tag"
_KIND_LOOP = "loop"
_KIND_RESUMED = "resumed"
"""Written by agents before lane time (they correlated on receive time): skipped on replay."""


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
    resume: str | None
    """The reader's resume token of the input journalled last, for the reader of the next run."""
    clock: dict[str, Any] | None = None
    """The reader clock's mapping of that input's boot (:class:`ControllerClock` state)."""
    state_error: str = ""
    """Why a stored state could not be read (then ``state`` is None but is no empty lane)."""


class InputJournal:
    """The journal tables of one outbox. ``append`` from the link thread, the rest from the engine."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        outbox.transact(
            lambda connection: connection.execute(
                "INSERT OR IGNORE INTO journal_state (key, through_id, committed) VALUES (0, 0, 0)"
            )
        )

    def append(
        self,
        lane_input: JournalInput,
        resume: str | None,
        clock: dict[str, Any] | None = None,
    ) -> int:
        """Store one input durably and return its journal id; raise JournalError if it is not stored.

        The reader's ``resume`` token for it and ``clock`` (the reader clock's state after
        stamping it) are recorded in the same transaction (None: keep the previous).
        """
        return self.append_many([lane_input], resume, clock)[0]

    def append_many(
        self,
        inputs: Sequence[JournalInput],
        resume: str | None,
        clock: dict[str, Any] | None = None,
    ) -> list[int]:
        """:meth:`append` for a batch, in one transaction (one fsync): a reader that delivers
        a burst of reads at once (an LLRP reader at its full rate) stores them together.
        ``resume`` is the token of the last one."""
        rows = [(lane_input.at, *_encode(lane_input)) for lane_input in inputs]
        clock_json = None if clock is None else json.dumps(clock)

        def work(connection: sqlite3.Connection) -> list[int]:
            ids = []
            for row in rows:
                cursor = connection.execute(
                    "INSERT INTO input_journal (at, kind, body) VALUES (?, ?, ?)", row
                )
                row_id = cursor.lastrowid
                assert row_id is not None
                ids.append(row_id)
            if resume is not None or clock_json is not None:
                connection.execute(
                    "UPDATE journal_state SET resume = COALESCE(?, resume),"
                    " clock = COALESCE(?, clock) WHERE key = 0",
                    (resume, clock_json),
                )
            return ids

        return self._write(work)

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

    def store_clock(self, clock: dict[str, Any]) -> None:
        """Keep the controller clock's current state (its measured rate, its last heartbeat)
        between inputs, so that a restart maps a new boot where lane time had got to. Raises
        JournalError if it cannot be stored."""
        encoded = json.dumps(clock)
        self._write(
            lambda connection: connection.execute(
                "UPDATE journal_state SET clock = ? WHERE key = 0", (encoded,)
            )
        )

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint on its own, when every crossing closed so far is stored.

        Keeps the journal short while no crossing closes (a long stay at the booth, reads from
        the next lane that the correlator drops). Raises JournalError if it cannot be stored.
        """
        self._write(lambda connection: _store_checkpoint(connection, checkpoint))

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one outbox transaction; JournalError if it cannot be stored.

        Crossing priority: at the size cap, images and health rows make room for it.
        """
        try:
            return self.outbox.transact(work, make_room_for=PRIORITY_CROSSING)
        except (sqlite3.Error, OutboxError) as error:
            raise JournalError(str(error)) from error

    def recover(self) -> Recovery:
        """The last checkpoint and the rows after it.

        Rows of an unknown kind or that cannot be decoded are skipped with an ERROR log, and a
        state that cannot be decoded counts as one that cannot be restored (``state_error``): a
        damaged row must not keep the agent from starting, over and over.
        """

        def work(connection: sqlite3.Connection) -> Recovery:
            through_id, committed, state_json, resume, clock_json = connection.execute(
                "SELECT through_id, committed, engine_state, resume, clock"
                " FROM journal_state WHERE key = 0"
            ).fetchone()
            rows = connection.execute(
                "SELECT id, at, kind, body FROM input_journal WHERE id > ? ORDER BY id",
                (through_id,),
            ).fetchall()
            entries = []
            for row_id, at, kind, body in rows:
                try:
                    decoded = _decode(at, kind, body)
                except (ValueError, KeyError, TypeError) as error:
                    log.error(
                        "input journal: row %d cannot be decoded (%r); skipped", row_id, error
                    )
                    continue
                if decoded is None:
                    if kind == _KIND_RESUMED:
                        log.info(
                            "input journal: row %d marks an old agent's resume; skipped", row_id
                        )
                    else:
                        log.error(
                            "input journal: row %d has unknown kind %r; skipped", row_id, kind
                        )
                    continue
                entries.append(JournalEntry(row_id, decoded))
            state: dict[str, Any] | None = None
            state_error = ""
            if state_json is not None:
                try:
                    loaded = json.loads(state_json)
                except (ValueError, TypeError) as error:
                    state_error = f"engine state cannot be decoded: {error!r}"
                else:
                    if isinstance(loaded, dict):
                        state = loaded
                    else:
                        state_error = f"engine state is a {type(loaded).__name__}, not an object"
            clock: dict[str, Any] | None = None
            if clock_json is not None:
                try:
                    loaded_clock = json.loads(clock_json)
                except (ValueError, TypeError) as error:
                    log.error("input journal: reader clock state unreadable (%r)", error)
                else:
                    clock = loaded_clock if isinstance(loaded_clock, dict) else None
            return Recovery(
                state=state,
                state_error=state_error,
                through_id=int(through_id),
                committed=int(committed),
                entries=entries,
                resume=None if resume is None else str(resume),
                clock=clock,
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


def _decode(at: object, kind: str, body: str) -> JournalInput | None:
    """The input of one row; None for a kind that is no input (an old agent's ``resumed``, or
    unknown); ValueError/KeyError/TypeError if damaged.

    Types are checked here, not trusted: a damaged row must fail here, where it is skipped, and
    not inside the engine during the replay.
    """
    if kind not in (_KIND_TAG, _KIND_LOOP):
        return None
    time = _number(at, "at")
    fields = json.loads(body)
    if not isinstance(fields, dict):
        raise ValueError(f"row body is a {type(fields).__name__}, not an object")
    if kind == _KIND_TAG:
        tid = fields["tid"]
        if tid is not None and not isinstance(tid, str):
            raise TypeError(f"tid is a {type(tid).__name__}")
        return TagRead(
            at=time,
            epc=_typed(fields["epc"], str, "epc"),
            antenna=_typed(fields["antenna"], int, "antenna"),
            rssi_dbm=_number(fields["rssi_dbm"], "rssi_dbm"),
            tid=tid,
        )
    return LoopChanged(
        at=time,
        loop_id=_typed(fields["loop_id"], int, "loop_id"),
        occupied=_typed(fields["occupied"], bool, "occupied"),
    )


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} is a {type(value).__name__}, not a number")
    return float(value)


def _typed(value: object, kind: type[_T], name: str) -> _T:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        # The type only: a damaged row's value may be a card number, not for an ERROR log.
        raise TypeError(f"{name} is a {type(value).__name__}, not {kind.__name__}")
    return value


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
        self.memory_only = False
        """An input was applied that is not journalled and no checkpoint stored since covers it."""
        try:
            if recovery.state_error:
                raise ValueError(recovery.state_error)
            self.engine = make_engine(recovery.state)
        except ValueError as error:
            # Never take a crossing for one stored before when that cannot be known: number on
            # from the last stored one, so the replay stores all it closes (a duplicate at worst).
            log.error(
                "input journal: engine state not restorable (%s); replaying from empty", error
            )
            self.engine = self._renumbered(make_engine(None), recovery.committed)

    @property
    def resume(self) -> str | None:
        """The reader's resume token of the input journalled last, for the reader."""
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

    def now(self, lane_now: float) -> float:
        """The time for an input the engine thread makes itself (a tick, a camera change):
        ``lane_now`` (from the controller clock), never behind an input already applied."""
        return max(self.last_input_at, lane_now)

    def handle(self, lane_input: LaneInput, journal_id: int | None = None) -> list[ClosedCrossing]:
        """Apply one input (``journal_id``: its row, None if not journalled)."""
        before = self.engine.closed_count
        decisions = self.engine.handle(lane_input)
        if journal_id is not None:
            self.applied_through = journal_id
        elif isinstance(lane_input, TagRead | LoopChanged):
            self.memory_only = True
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
        return self._store_checkpoint()

    def secure_memory_inputs(self, held: int) -> bool:
        """Store a checkpoint that covers every input applied, journalled or not.

        For when the journal works again after inputs could not be journalled: those inputs
        live in the engine's memory only until a checkpoint holds their effect, so the fault is
        only cleared once this returns True. Not while crossings are ``held`` (the checkpoint
        would clear the inputs they were closed from); call it after storing what the last input
        closed, like :meth:`idle_checkpoint`.
        """
        if not self.memory_only:
            return True
        if held or not self._store_checkpoint():
            return False
        self.memory_only = False
        return True

    def _store_checkpoint(self) -> bool:
        """Checkpoint every input applied; a failure is logged and returns False."""
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
