"""Outbox rules beyond plain append/send: confirmation watermark, size cap, eviction, damage."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agent.state.holding import CrossingCommitter, PendingRecord
from agent.state.outbox import (
    PRIORITY_HEALTH,
    PRIORITY_IMAGE,
    Outbox,
    OutboxCorruptError,
    OutboxFullError,
    OutboxRow,
)
from agent.state.recovery import open_outbox
from agent.wire.topics import Topics

TOPICS = Topics("lane-agent/v1", "port-7", "lane-3")
CAP = 256 * 1024
BLOB = b"x" * 2000  # about half a page: a few rows fill the small cap quickly


def crossing(outbox: Outbox) -> OutboxRow:
    return outbox.append(topic=TOPICS.crossing, build_payload=lambda seq: b"%d" % seq + BLOB)


def health(outbox: Outbox, priority: int = PRIORITY_HEALTH) -> OutboxRow:
    return outbox.append(
        topic=TOPICS.status,
        build_payload=lambda seq: b"%d" % seq + BLOB,
        stream="health" if priority == PRIORITY_HEALTH else "image",
        priority=priority,
    )


def fill_with_crossings(outbox: Outbox) -> int:
    """Append crossings until the cap refuses one; returns how many were stored."""
    stored = 0
    while True:
        try:
            crossing(outbox)
        except OutboxFullError as error:
            reason = error.reason
            break
        stored += 1
    assert reason == "cap"
    return stored


def test_a_watermark_removes_rows_up_to_it_sent_or_not_and_keeps_the_rest(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        rows = [crossing(outbox) for _ in range(5)]
        outbox.mark_sent_many([rows[0].id, rows[1].id])
        result = outbox.confirm("crossing", 3)
        assert (result.acked_seq, result.removed, result.ahead) == (3, 3, False)
        assert [row.seq for row in outbox.pending(10)] == [4, 5]
        assert outbox.stats().acked_seq == {"crossing": 3}


def test_a_lower_or_equal_watermark_changes_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        for _ in range(5):
            crossing(outbox)
        outbox.confirm("crossing", 4)
        result = outbox.confirm("crossing", 2)
        assert (result.acked_seq, result.removed) == (4, 0)
        assert [row.seq for row in outbox.pending(10)] == [5]


def test_a_watermark_beyond_the_last_handed_out_seq_is_reported_and_not_applied(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        for _ in range(3):
            crossing(outbox)
        result = outbox.confirm("crossing", 900)
        assert result.ahead
        assert outbox.stats().depth == 3
        assert outbox.stats().acked_seq == {}


def test_requeue_makes_sent_rows_of_confirmed_streams_pending_and_leaves_other_streams(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        crossings = [crossing(outbox) for _ in range(4)]
        healths = [health(outbox) for _ in range(2)]
        outbox.mark_sent_many([row.id for row in crossings + healths])
        assert outbox.requeue_unconfirmed() == 0  # nobody confirms anything yet: nothing re-sent
        outbox.confirm("crossing", 1)
        assert outbox.requeue_unconfirmed() == 3
        assert [(row.stream, row.seq) for row in outbox.pending(10)] == [
            ("crossing", 2),
            ("crossing", 3),
            ("crossing", 4),
        ]


def append_until_evicting(outbox: Outbox, priority: int) -> None:
    """Append lower-priority rows until the cap makes the outbox evict some."""
    while outbox.stats().evicted == 0:
        health(outbox, priority)


def test_lower_priority_rows_replace_their_oldest_peers_at_the_cap_instead_of_failing(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=CAP) as outbox:
        first = health(outbox)
        append_until_evicting(outbox, PRIORITY_HEALTH)
        newest = health(outbox)
        ids = {row.id for row in outbox.pending(10_000)}
        assert first.id not in ids
        assert newest.id in ids
        assert outbox.stats().size_bytes <= CAP


def test_crossings_evict_lower_priority_rows_and_are_never_evicted(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=CAP) as outbox:
        append_until_evicting(outbox, PRIORITY_HEALTH)
        health_rows = outbox.stats().total_rows
        stored = fill_with_crossings(outbox)
        remaining = [row.stream for row in outbox.pending(10_000)]
        assert remaining.count("crossing") == stored
        assert stored > health_rows // 2  # the crossings took the room the health rows had
        assert outbox.stats().size_bytes <= CAP


def test_lower_priority_rows_leave_a_reserve_that_crossings_use_without_evicting(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=CAP) as outbox:
        append_until_evicting(outbox, PRIORITY_IMAGE)
        assert outbox.stats().size_bytes <= CAP * 0.9
        before = outbox.stats()
        crossing(outbox)
        after = outbox.stats()
        assert after.total_rows == before.total_rows + 1
        assert after.evicted == before.evicted


def test_images_are_evicted_before_any_health_row(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=CAP) as outbox:
        healths = {health(outbox).id for _ in range(10)}
        append_until_evicting(outbox, PRIORITY_IMAGE)
        assert healths <= {row.id for row in outbox.pending(10_000)}  # images evict images only
        while True:
            crossing(outbox)
            left = outbox.pending(10_000)
            if not healths <= {row.id for row in left}:
                break
        assert not [row for row in left if row.stream == "image"]


def test_a_crossing_that_does_not_fit_stores_nothing_and_uses_no_sequence_number(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db", max_bytes=CAP) as outbox:
        stored = fill_with_crossings(outbox)
        assert outbox.stats().last_seq == {"crossing": stored}
        outbox.confirm("crossing", 10)  # central has the first ten: their room comes back
        assert crossing(outbox).seq == stored + 1


def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        crossing(outbox)
    connection = sqlite3.connect(path)
    connection.execute("DROP TABLE stream_ack")
    connection.execute("DROP INDEX outbox_evictable")
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()
    with Outbox(path) as outbox:
        assert [row.seq for row in outbox.pending(10)] == [1]
        assert outbox.confirm("crossing", 1).removed == 1


def test_a_file_that_is_not_a_database_raises_outbox_corrupt_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not an SQLite file at all" * 200)
    with pytest.raises(OutboxCorruptError, match="is damaged"):
        Outbox(path)


def test_a_damaged_outbox_is_moved_aside_unchanged_and_a_fresh_one_continues_the_numbers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        for _ in range(40):
            crossing(outbox)
        outbox.mark_sent_many(range(1, 41))
        outbox.prune_sent()  # rows gone, but the stream's last seq stays readable
    raw = bytearray(path.read_bytes())
    page = 4096
    # Wreck the outbox table's pages (not page 1, where stream_seq's root usually is not).
    for offset in range(2 * page, len(raw) - page, page):
        raw[offset : offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))
    damaged = bytes(raw)

    outbox, quarantined = open_outbox(path)
    with outbox:
        assert quarantined is not None
        assert quarantined.moved_to.read_bytes() == damaged
        assert quarantined.moved_to.name.startswith("outbox.db.corrupt-")
        assert crossing(outbox).seq == quarantined.salvaged_last_seq.get("crossing", 0) + 1


def test_a_garbage_file_is_replaced_by_a_fresh_outbox_starting_at_one(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"\x00garbage" * 1000)
    outbox, quarantined = open_outbox(path)
    with outbox:
        assert quarantined is not None
        assert quarantined.salvaged_last_seq == {}
        assert crossing(outbox).seq == 1
    assert sorted(p.name for p in tmp_path.iterdir() if "corrupt" in p.name) == [
        quarantined.moved_to.name
    ]


class Calls:
    def __init__(self) -> None:
        self.stored: list[int] = []
        self.faults: list[str] = []
        self.recovered = 0

    def committer(self, outbox: Outbox, clock: list[float]) -> CrossingCommitter:
        return CrossingCommitter(
            outbox,
            on_stored=lambda row: self.stored.append(row.seq),
            on_fault=lambda error: self.faults.append(error.reason),
            on_recovered=self._recovered,
            retry_interval_s=1.0,
            monotonic=lambda: clock[0],
        )

    def _recovered(self) -> None:
        self.recovered += 1


def record() -> PendingRecord:
    return PendingRecord(TOPICS.crossing, lambda seq: b"%d" % seq + BLOB)


def test_committer_holds_what_does_not_fit_in_order_and_stores_it_when_room_returns(
    tmp_path: Path,
) -> None:
    clock = [0.0]
    calls = Calls()
    with Outbox(tmp_path / "outbox.db", max_bytes=CAP) as outbox:
        committer = calls.committer(outbox, clock)
        while committer.submit(record()) is not None:
            pass
        capacity = len(calls.stored)
        for _ in range(4):
            assert committer.submit(record()) is None
        assert committer.held == 5
        assert calls.faults == ["cap"]  # raised once, not per held record

        outbox.confirm("crossing", 20)
        committer.retry()  # too early: the retry interval has not passed
        assert committer.held == 5
        clock[0] += 1.0
        committer.retry()
        assert committer.held == 0
        assert not committer.faulted
        assert calls.recovered == 1
        assert calls.stored == list(range(1, capacity + 6))


def test_committer_keeps_holding_while_the_outbox_stays_full(tmp_path: Path) -> None:
    clock = [0.0]
    calls = Calls()
    with Outbox(tmp_path / "outbox.db", max_bytes=CAP) as outbox:
        committer = calls.committer(outbox, clock)
        while committer.submit(record()) is not None:
            pass
        for _ in range(3):
            clock[0] += 1.0
            committer.retry()
        assert committer.held == 1
        assert committer.faulted
        assert calls.recovered == 0
        assert outbox.stats().depth == len(calls.stored)
