"""The input journal on real outbox files: what a crash leaves behind and what a restart makes of it.

A "crash" here closes the outbox without any shutdown step, which leaves on disk exactly what
SQLite had committed; a restart opens the same file again. ``Lane`` runs the real journal, engine,
outbox and fail-safe committer the way the service wires them (``tests/faults/test_agent_kill.py``
does the same with ``kill -9`` of the real process).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.lane.correlator import CorrelationSettings
from agent.lane.credentials import Program
from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, LoopChanged, TagRead, Tick
from agent.lane.policy import LanePolicy, LaneType
from agent.readers.lane_controller import resume_origin, resume_token
from agent.state.holding import CrossingCommitter, PendingRecord
from agent.state.journal import (
    Checkpoint,
    ClosedCrossing,
    InputJournal,
    JournalError,
    JournalInput,
    JournalledEngine,
)
from agent.state.outbox import PRIORITY_IMAGE, Outbox, OutboxFullError
from agent.wire.topics import Topics
from firmware_bridge.link import EventOrigin
from tests.lane.kit import arrive, depart, read

TOPICS = Topics("lane-agent/v1", "port-7", "lane-3")
CARD_A = "E28011606000020000000A01"
CARD_B = "E28011606000020000000B02"
CARD_C = "E28011606000020000000C03"
SETTINGS = CorrelationSettings(
    idle_timeout_s=2.0,
    max_open_s=60.0,
    straggler_window_s=3.0,
    min_rssi_dbm=-85.0,
    # The journal's bookkeeping is the subject here, not the loop's: a clear is a departure at
    # once, and an arrival right after one is a vehicle of its own.
    departure_confirm_s=0.0,
    min_stay_s=0.0,
    rejoin_window_s=0.0,
)
POLICY = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}))
FILLER = b"f" * 3000


def make_engine(state: dict[str, Any] | None) -> LaneEngine:
    return LaneEngine(SETTINGS, POLICY, lambda ref: None, state=state)


def summary(closed: ClosedCrossing) -> dict[str, Any]:
    crossing = closed.decision.crossing
    return {
        "cards": {card.ref: card.reads for card in crossing.cards},
        "opened_at": crossing.opened_at,
        "closed_at": crossing.closed_at,
        "opened_by": crossing.opened_by.value,
        "closed_by": crossing.closed_by.value,
    }


class Lane:
    """One run of the agent's journal path on ``path``: link side appends, engine side commits."""

    def __init__(self, path: Path, *, max_bytes: int | None = None, sync: str = "FULL") -> None:
        self.outbox = Outbox(path, max_bytes=max_bytes, synchronous=sync)  # type: ignore[arg-type]
        self.journal = InputJournal(self.outbox)
        self.engine = JournalledEngine(self.journal, make_engine)
        self.committer = CrossingCommitter(
            self.outbox,
            on_stored=lambda row: None,
            on_fault=lambda error: None,
            on_recovered=lambda: None,
            retry_interval_s=0.001,
        )
        self.skipped: list[int] = []
        for closed in self.engine.replay():
            self.commit(closed)

    def journal_input(self, lane_input: JournalInput, seq: int | None = None) -> int:
        """What the link thread does before the ACK."""
        token = None if seq is None else resume_token(EventOrigin(0xB007, seq))
        return self.journal.append(lane_input, token)

    def apply(self, lane_input: LaneInput, journal_id: int | None = None) -> None:
        """What the engine thread does with an input from its inbox."""
        for closed in self.engine.handle(lane_input, journal_id):
            self.commit(closed)

    def feed(self, *inputs: JournalInput) -> None:
        for lane_input in inputs:
            self.apply(lane_input, self.journal_input(lane_input))

    def commit(self, closed: ClosedCrossing) -> None:
        if self.engine.already_stored(closed):
            self.skipped.append(closed.number)
            return
        body = json.dumps(summary(closed)).encode()
        self.committer.submit(
            PendingRecord(
                TOPICS.crossing, lambda seq: body, in_transaction=self.engine.on_commit(closed)
            )
        )

    def stop(self, at: float) -> None:
        """A clean stop: close what is open, store it."""
        for closed in self.engine.shutdown(at):
            self.commit(closed)
        self.outbox.close()

    def crash(self) -> None:
        """No shutdown: whatever was committed to the file is all that is left."""
        self.outbox.close()

    def stored(self) -> list[dict[str, Any]]:
        return [
            json.loads(row.payload)
            for row in self.outbox.pending(10_000)
            if row.stream == "crossing"
        ]


def fill(outbox: Outbox, sizes: tuple[int, ...] = (3000, 300, 30, 1)) -> int:
    """Append filler crossings, smaller and smaller, until not even one byte fits; return how many."""
    stored = 0
    for size in sizes:

        def payload(seq: int, size: int = size) -> bytes:
            return FILLER[:size]

        while True:
            try:
                outbox.append(topic=TOPICS.status, stream="filler", build_payload=payload)
            except OutboxFullError:
                break
            stored += 1
    return stored


def journal_rows(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM input_journal").fetchone()[0])
    finally:
        connection.close()


# --- the journal table ---------------------------------------------------------------------


def test_inputs_come_back_in_order_with_their_times_and_fields(outbox: Outbox) -> None:
    journal = InputJournal(outbox)
    inputs: list[TagRead | LoopChanged] = [
        arrive(100.25),
        TagRead(at=100.5, epc=CARD_A, antenna=2, rssi_dbm=-61.5, tid="E2003412ABCD"),
        read(100.75, CARD_B),
        depart(101.0),
    ]
    ids = [journal.append(lane_input, None) for lane_input in inputs]
    assert ids == sorted(ids)
    recovery = journal.recover()
    assert [entry.id for entry in recovery.entries] == ids
    assert [entry.input for entry in recovery.entries] == inputs
    assert (recovery.state, recovery.through_id, recovery.committed) == (None, 0, 0)


def test_the_readers_token_of_the_last_input_is_where_the_next_reader_resumes(
    outbox: Outbox,
) -> None:
    journal = InputJournal(outbox)
    assert journal.recover().resume is None
    journal.append(arrive(1.0), resume_token(EventOrigin(boot_id=7, seq=41)))
    journal.append(read(1.5, CARD_A), resume_token(EventOrigin(boot_id=7, seq=42)))
    journal.append(read(1.6, CARD_A), None)  # released by a controller reboot: no origin
    assert resume_origin(journal.recover().resume) == EventOrigin(boot_id=7, seq=42)


def test_a_batch_of_inputs_is_stored_in_one_go_with_the_token_of_its_last(
    outbox: Outbox,
) -> None:
    journal = InputJournal(outbox)
    inputs = [arrive(1.0), read(1.2, CARD_A), read(1.3, CARD_A)]
    ids = journal.append_many(inputs, '{"family": "llrp", "stamp_us": 1300000}', {"base": 1.0})
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    recovery = journal.recover()
    assert [entry.input for entry in recovery.entries] == inputs
    assert recovery.resume == '{"family": "llrp", "stamp_us": 1300000}'
    assert recovery.clock == {"base": 1.0}


def test_a_version_4_outbox_keeps_the_controllers_resume_point_as_its_token(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        InputJournal(outbox).append(arrive(1.0), None)
    connection = sqlite3.connect(path)
    # What a version 4 agent left: boot and seq columns, no token.
    connection.execute("ALTER TABLE journal_state DROP COLUMN resume")
    connection.execute("UPDATE journal_state SET boot_id = 48903, seq = 512")
    connection.execute("PRAGMA user_version = 4")
    connection.commit()
    connection.close()
    with Outbox(path) as outbox:
        recovery = InputJournal(outbox).recover()
    assert resume_origin(recovery.resume) == EventOrigin(boot_id=48903, seq=512)
    assert [entry.input for entry in recovery.entries] == [arrive(1.0)]


def test_a_crossing_and_the_clearing_of_the_rows_it_covers_commit_in_one_transaction(
    outbox: Outbox,
) -> None:
    journal = InputJournal(outbox)
    ids = [journal.append(lane_input, None) for lane_input in (arrive(1), depart(2), arrive(3))]
    state = {"anything": "json"}
    outbox.append(
        topic=TOPICS.crossing,
        build_payload=lambda seq: b"A",
        in_transaction=journal.on_commit(1, Checkpoint(ids[1], state)),
    )
    recovery = journal.recover()
    assert (recovery.through_id, recovery.committed, recovery.state) == (ids[1], 1, state)
    assert [entry.id for entry in recovery.entries] == [ids[2]]
    assert journal.rows() == 1


def test_a_crossing_the_outbox_refuses_leaves_its_rows_and_the_checkpoint_untouched(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=256 * 1024) as outbox:
        journal = InputJournal(outbox)
        ids = [journal.append(lane_input, None) for lane_input in (arrive(1), depart(2))]
        fill(outbox)
        with pytest.raises(OutboxFullError):
            outbox.append(
                topic=TOPICS.crossing,
                build_payload=lambda seq: FILLER,
                in_transaction=journal.on_commit(1, Checkpoint(ids[1], {"v": 1})),
            )
        recovery = journal.recover()
        assert (recovery.through_id, recovery.committed, recovery.state) == (0, 0, None)
        assert [entry.id for entry in recovery.entries] == ids


def test_an_older_checkpoint_never_replaces_a_newer_one(outbox: Outbox) -> None:
    journal = InputJournal(outbox)
    ids = [journal.append(arrive(float(at)), None) for at in range(4)]
    journal.checkpoint(Checkpoint(ids[2], {"newer": True}))
    journal.checkpoint(Checkpoint(ids[0], {"newer": False}))
    recovery = journal.recover()
    assert (recovery.through_id, recovery.state) == (ids[2], {"newer": True})
    assert [entry.id for entry in recovery.entries] == [ids[3]]


def test_journal_ids_keep_growing_after_every_row_was_cleared(outbox: Outbox) -> None:
    """Checkpoints compare ids: an id handed out again would fold a new input into an old state."""
    journal = InputJournal(outbox)
    first = journal.append(arrive(1), None)
    journal.checkpoint(Checkpoint(first, {}))
    assert journal.rows() == 0
    assert journal.append(depart(2), None) > first


def test_an_input_that_cannot_be_stored_raises_journal_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    journal = InputJournal(outbox)
    outbox.close()
    with pytest.raises(JournalError, match="cannot store an input"):
        journal.append(arrive(1), None)


def test_a_version_2_outbox_gets_the_journal_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        outbox.append(topic=TOPICS.crossing, build_payload=lambda seq: b"kept")
    connection = sqlite3.connect(path)
    connection.execute("DROP TABLE input_journal")
    connection.execute("DROP TABLE journal_state")
    connection.execute("PRAGMA user_version = 2")
    connection.commit()
    connection.close()
    with Outbox(path) as outbox:
        assert [row.payload for row in outbox.pending(10)] == [b"kept"]
        journal = InputJournal(outbox)
        journal.append(arrive(1), None)
        assert journal.rows() == 1


# --- crash and restart ---------------------------------------------------------------------


def test_the_vehicle_at_the_booth_survives_a_crash_with_its_arrival_time_and_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(10.0), read(10.5, CARD_A), read(11.0, CARD_A), read(11.2, CARD_B))
    lane.crash()

    lane = Lane(path)
    assert lane.stored() == [], "still at the booth: nothing to store yet"
    lane.feed(read(12.0, CARD_A), depart(13.0))
    assert lane.stored() == [
        {
            "cards": {CARD_A: 3, CARD_B: 1},
            "opened_at": 10.0,
            "closed_at": 13.0,
            "opened_by": "loop",
            "closed_by": "departure",
        }
    ]
    assert journal_rows(path) == 0, "the commit cleared every input it covered"


def test_a_crossing_stored_before_the_crash_is_not_stored_again(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0), read(1.5, CARD_A), depart(2.0))
    assert len(lane.stored()) == 1
    lane.crash()
    lane = Lane(path)
    assert len(lane.stored()) == 1
    assert lane.engine.recovery.entries == []


def test_an_input_that_closes_one_crossing_and_opens_the_next_is_replayed_once(
    tmp_path: Path,
) -> None:
    """Occupied twice (the clear was lost): A closes at B's arrival, and B starts there."""
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0), read(1.5, CARD_A), arrive(3.0), read(3.5, CARD_B))
    lane.crash()
    lane = Lane(path)
    lane.feed(depart(5.0))
    stored = lane.stored()
    assert [(s["cards"], s["closed_by"]) for s in stored] == [
        ({CARD_A: 1}, "next_arrival"),
        ({CARD_B: 1}, "departure"),
    ]
    assert stored[1]["opened_at"] == 3.0


def test_a_straggler_read_stays_dropped_after_a_restart_and_leaves_the_journal(
    tmp_path: Path,
) -> None:
    """The card of the vehicle that just left, read as the next one pulls up, goes to neither."""
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0), read(1.5, CARD_A), depart(2.0), read(2.5, CARD_A), arrive(3.0))
    lane.crash()
    lane = Lane(path)
    lane.feed(read(3.5, CARD_B), read(3.6, CARD_A), depart(4.0))
    assert [s["cards"] for s in lane.stored()] == [{CARD_A: 1}, {CARD_B: 1}]
    assert lane.engine.engine.correlator.counters.straggler_reads == 2
    assert journal_rows(path) == 0


def test_with_no_vehicle_at_the_booth_the_downtime_is_plain_time_for_the_straggler_window(
    tmp_path: Path,
) -> None:
    """A card that left before the stop and comes back after the restart is a new crossing's:
    in lane time the controller's events say when they happened, so the straggler window ran
    out during the downtime as it did at the booth."""
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0), read(1.5, CARD_A), depart(2.0))
    lane.stop(2.1)
    lane = Lane(path)
    lane.feed(arrive(30.2), read(30.4, CARD_A), depart(31.0))
    assert [s["cards"] for s in lane.stored()] == [{CARD_A: 1}, {CARD_A: 1}]
    assert lane.engine.engine.correlator.counters.straggler_reads == 0


def test_dropped_inputs_with_no_crossing_are_folded_away_by_an_idle_checkpoint(
    tmp_path: Path,
) -> None:
    """Weak reads from the next lane and a clear with no vehicle: never replayed forever."""
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(read(1.0, CARD_C, rssi=-95.0), depart(2.0), read(3.0, CARD_C, rssi=-90.0))
    assert journal_rows(path) == 3
    assert lane.engine.idle_checkpoint(held=0)
    assert journal_rows(path) == 0
    assert not lane.engine.idle_checkpoint(held=0), "nothing new to fold"
    lane.crash()
    lane = Lane(path)
    assert lane.engine.recovery.entries == []
    lane.apply(Tick(100.0))
    assert lane.stored() == []


def test_no_idle_checkpoint_while_a_crossing_is_held(tmp_path: Path) -> None:
    lane = Lane(tmp_path / "outbox.db")
    lane.feed(read(1.0, CARD_C, rssi=-95.0))
    assert not lane.engine.idle_checkpoint(held=1)
    assert journal_rows(tmp_path / "outbox.db") == 1


def test_a_crossing_held_on_a_full_disk_keeps_its_inputs_and_a_crash_then_loses_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    lane = Lane(path, max_bytes=256 * 1024)
    lane.feed(arrive(1.0), read(1.5, CARD_A))
    departure = depart(2.0)
    departure_id = lane.journal_input(departure)  # journalled (and ACKed) while there was room
    filler = fill(lane.outbox)
    lane.apply(departure, departure_id)
    assert lane.committer.held == 1, "the crossing could not be stored"
    assert journal_rows(path) == 3, "its inputs stay in the journal"
    lane.crash()  # the held crossing was only in memory

    with Outbox(path) as outbox:  # space comes back while the agent is down
        outbox.confirm("filler", filler)
    lane = Lane(path, max_bytes=256 * 1024)
    assert [(s["cards"], s["opened_at"]) for s in lane.stored()] == [({CARD_A: 1}, 1.0)]
    assert journal_rows(path) == 0


def test_a_clean_stop_stores_the_open_crossing_and_leaves_nothing_to_replay(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0), read(1.5, CARD_A))
    lane.stop(at=2.0)
    lane = Lane(path)
    assert [(s["cards"], s["closed_by"]) for s in lane.stored()] == [({CARD_A: 1}, "shutdown")]
    assert lane.engine.recovery.entries == []


def test_a_crossing_the_replay_closes_again_is_recognised_by_its_number(tmp_path: Path) -> None:
    """Stored without moving the checkpoint (the first of two crossings one input closed)."""
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    for lane_input in (arrive(1.0), read(1.5, CARD_A), depart(2.0)):
        journal_id = lane.journal_input(lane_input)
        for closed in lane.engine.handle(lane_input, journal_id):
            lane.commit(dataclasses.replace(closed, checkpoint=None))
    lane.feed(arrive(3.0))
    lane.crash()
    lane = Lane(path)
    assert lane.skipped == [1]
    lane.feed(depart(4.0))
    assert [s["cards"] for s in lane.stored()] == [{CARD_A: 1}, {}]


# --- any crash, anywhere -------------------------------------------------------------------

_traffic = st.lists(
    st.tuples(
        st.floats(min_value=0.01, max_value=2.5),
        st.one_of(
            st.tuples(
                st.just("read"), st.sampled_from([CARD_A, CARD_B, CARD_C]), st.floats(-95, -40)
            ),
            st.tuples(st.just("loop"), st.booleans()),
        ),
    ),
    min_size=1,
    max_size=30,
)
_crashes = st.lists(
    st.tuples(st.integers(min_value=0, max_value=30), st.sampled_from(["before", "after"])),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(_traffic, _crashes)
def test_crashes_at_any_input_store_exactly_the_crossings_of_an_uninterrupted_run(
    steps: list[tuple[float, tuple[object, ...]]], crashes: list[tuple[int, str]]
) -> None:
    """A crash before an input is journalled (the controller resends it) or just after (it is
    replayed): either way the stored crossings are those of a run without crashes."""
    at = 0.0
    inputs: list[TagRead | LoopChanged] = []
    for gap, step in steps:
        at += gap
        match step:
            case ("read", str(epc), float(rssi)):
                inputs.append(read(at, epc, rssi))
            case ("loop", bool(occupied)):
                inputs.append(LoopChanged(at=at, loop_id=1, occupied=occupied))
    crash_at = dict(crashes)
    with tempfile.TemporaryDirectory() as directory:
        straight = Lane(Path(directory) / "straight.db", sync="NORMAL")
        straight.feed(*inputs)
        straight.stop(at + 1.0)
        expected = Lane(Path(directory) / "straight.db", sync="NORMAL").stored()

        path = Path(directory) / "crashing.db"
        lane = Lane(path, sync="NORMAL")
        for index, lane_input in enumerate(inputs):
            if crash_at.get(index) == "before":
                lane.crash()
                lane = Lane(path, sync="NORMAL")
            journal_id = lane.journal_input(lane_input)
            if crash_at.get(index) == "after":
                lane.crash()
                lane = Lane(path, sync="NORMAL")
                continue  # journalled: the replay applies it
            lane.apply(lane_input, journal_id)
        lane.stop(at + 1.0)
        assert Lane(path, sync="NORMAL").stored() == expected


# --- restarts, a full outbox, damaged rows (review of the journal) -------------------------


def test_a_restored_vehicle_goes_on_with_the_controllers_resent_events_at_their_own_times(
    tmp_path: Path,
) -> None:
    """After a crash the controller resends what the agent had not taken, stamped when it
    happened: the vehicle at the booth is one crossing, however long the agent was down, and a
    second crash before any checkpoint replays to the same."""
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0), read(1.5, CARD_A))
    lane.crash()
    lane = Lane(path)  # back much later than the idle timeout; the events come at their times
    lane.feed(read(3.0, CARD_A))
    lane.crash()
    lane = Lane(path)
    lane.feed(read(4.0, CARD_A), depart(25.0))
    assert [
        (s["cards"], s["opened_at"], s["closed_at"], s["opened_by"], s["closed_by"])
        for s in lane.stored()
    ] == [({CARD_A: 3}, 1.0, 25.0, "loop", "departure")]


def test_rows_an_older_agent_journalled_as_resumed_are_skipped(outbox: Outbox) -> None:
    """Agents before lane time journalled a 'resumed' marker; a replay needs none."""
    journal = InputJournal(outbox)
    journal.append(read(5.0, CARD_A), None)
    for body in ('{"excise": false}', "{}"):
        outbox.transact(
            lambda connection, body=body: connection.execute(
                "INSERT INTO input_journal (at, kind, body) VALUES (6.0, 'resumed', ?)", (body,)
            )
        )
    journal.append(read(7.0, CARD_A), None)
    assert [entry.input for entry in journal.recover().entries] == [
        read(5.0, CARD_A),
        read(7.0, CARD_A),
    ]


def test_the_controller_clock_of_the_last_event_is_kept_for_the_next_start(
    outbox: Outbox,
) -> None:
    journal = InputJournal(outbox)
    clock = {"boot_id": 0xB007, "base": 1_700_000_000.25, "wraps": 0, "last_event_ms": 1500}
    journal.append(read(5.0, CARD_A), resume_token(EventOrigin(0xB007, 3)), clock)
    journal.append(read(6.0, CARD_A), None)  # no origin: the clock state stays
    recovery = journal.recover()
    assert recovery.clock == clock
    assert resume_origin(recovery.resume) == EventOrigin(0xB007, 3)


def fill_with_crossing_rows(outbox: Outbox) -> int:
    """Crossing rows inserted without the outbox's eviction, until not one more byte fits."""
    stored = 0
    for size in (3000, 300, 30, 1):
        while True:
            try:
                outbox.transact(
                    lambda connection, size=size, seq=stored + 1: connection.execute(
                        "INSERT INTO outbox (stream, seq, topic, payload, qos, retain, priority,"
                        " created_at) VALUES ('filler', ?, ?, ?, 1, 0, 0, 0)",
                        (seq, TOPICS.status, FILLER[:size]),
                    )
                )
            except sqlite3.OperationalError:
                break
            stored += 1
    return stored


def test_at_the_size_cap_journal_appends_evict_images_as_a_crossing_would(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=1024 * 1024)
    journal = InputJournal(outbox)
    while outbox.stats().evicted == 0:  # images up to the crossings' reserve (then they evict)
        outbox.append(
            topic=TOPICS.plate_image,
            stream="image",
            priority=PRIORITY_IMAGE,
            build_payload=lambda seq: FILLER,
        )
    evicted_by_images = outbox.stats().evicted
    crossings = fill_with_crossing_rows(outbox)  # the reserve is full too: the cap is reached
    images = outbox.stats().depth - crossings
    assert images > 100, "images are there to evict"
    inputs = [read(1.0 + second / 10, CARD_A) for second in range(300)]  # pages, not a page
    ids = [journal.append(lane_input, None) for lane_input in inputs]
    journal.checkpoint(Checkpoint(ids[99], {"any": "state"}))
    assert outbox.stats().evicted > evicted_by_images, "images made room for the journal"
    assert [entry.input for entry in journal.recover().entries] == inputs[100:]
    assert outbox.stats().depth - crossings < images
    outbox.close()


def test_at_the_size_cap_with_nothing_to_evict_a_journal_append_still_fails(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=128 * 1024)
    journal = InputJournal(outbox)
    fill_with_crossing_rows(outbox)
    stored = 0
    try:
        for second in range(200):  # the journal table's free space runs out first
            journal.append(read(float(second), CARD_A), None)
            stored += 1
    except JournalError:
        pass
    assert stored < 200, "a journal append failed: nothing could be evicted"
    assert outbox.stats().evicted == 0
    outbox.close()


def test_inputs_the_journal_missed_survive_a_crash_only_once_a_checkpoint_covers_them(
    tmp_path: Path,
) -> None:
    for secured in (False, True):
        path = tmp_path / f"outbox-{secured}.db"
        lane = Lane(path)
        lane.feed(arrive(1.0))
        lane.apply(read(1.5, CARD_A))  # could not be journalled: in memory only
        assert lane.engine.memory_only
        lane.feed(read(1.6, CARD_B))  # the journal works again
        if secured:
            assert lane.engine.secure_memory_inputs(held=0)
            assert not lane.engine.memory_only
        lane.crash()
        lane = Lane(path)
        lane.feed(depart(2.0))
        cards = [s["cards"] for s in lane.stored()]
        assert cards == ([{CARD_A: 1, CARD_B: 1}] if secured else [{CARD_B: 1}])


def test_no_checkpoint_secures_missed_inputs_while_a_crossing_is_held(tmp_path: Path) -> None:
    lane = Lane(tmp_path / "outbox.db")
    lane.feed(arrive(1.0))
    lane.apply(read(1.5, CARD_A))
    assert not lane.engine.secure_memory_inputs(held=1)
    assert lane.engine.memory_only
    assert journal_rows(tmp_path / "outbox.db") == 1


def damage(path: Path, statement: str, *parameters: object) -> None:
    connection = sqlite3.connect(path)
    connection.execute(statement, parameters)
    connection.commit()
    connection.close()


@pytest.mark.parametrize(
    ("at", "body"),
    [
        (1.5, "{not json"),
        (1.5, '{"antenna": 1, "rssi_dbm": -50.0, "tid": null}'),
        (1.5, '{"epc": 7, "antenna": 1, "rssi_dbm": -50.0, "tid": null}'),
        (1.5, '["a list"]'),
        ("soon", json.dumps({"epc": CARD_B, "antenna": 1, "rssi_dbm": -50.0, "tid": None})),
    ],
    ids=["bad-json", "missing-field", "wrong-type", "not-an-object", "time-not-a-number"],
)
def test_a_damaged_journal_row_is_skipped_and_the_rest_replayed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, at: object, body: str
) -> None:
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0))
    damaged = lane.journal_input(read(1.5, CARD_B))
    lane.feed(read(1.6, CARD_A))
    lane.crash()
    damage(path, "UPDATE input_journal SET at = ?, body = ? WHERE id = ?", at, body, damaged)
    lane = Lane(path)
    lane.feed(depart(2.0))
    assert [s["cards"] for s in lane.stored()] == [{CARD_A: 1}]
    assert f"row {damaged} cannot be decoded" in caplog.text
    assert CARD_B not in caplog.text


@pytest.mark.parametrize("state", ["{not json", '["a list"]', '{"version": 1}', '{"version": 99}'])
def test_a_damaged_engine_state_replays_from_an_empty_lane(tmp_path: Path, state: str) -> None:
    """Not decodable, or a state of another release: replayed from empty, nothing skipped."""
    path = tmp_path / "outbox.db"
    lane = Lane(path)
    lane.feed(arrive(1.0), depart(2.0), arrive(3.0), read(3.5, CARD_B))
    lane.crash()
    damage(path, "UPDATE journal_state SET engine_state = ?", state)
    lane = Lane(path)
    assert lane.skipped == []
    lane.feed(depart(4.0))
    assert [s["cards"] for s in lane.stored()] == [{}, {CARD_B: 1}]
    assert lane.engine.engine.closed_count == 2
