"""The outbox on real SQLite files: durable appends, sequence numbers, order, marking, pruning."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.state.outbox import (
    PRIORITY_CROSSING,
    PRIORITY_IMAGE,
    Outbox,
    OutboxClosedError,
    OutboxRowNotFoundError,
    OutboxSchemaError,
)
from agent.state.schema import SCHEMA_VERSION
from agent.wire.topics import InvalidTopicPartError, Topics

TOPIC = Topics("lane-agent/v1", "port-7", "lane-3").crossing
REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """Wall-clock stand-in so retention and ages are tested without waiting."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def payload_with_seq(seq: int) -> bytes:
    return b"crossing %d" % seq


def test_sequence_numbers_start_at_one_per_stream_and_continue_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as outbox:
        first = [outbox.append(topic=TOPIC, build_payload=payload_with_seq).seq for _ in range(3)]
        other_stream = outbox.append(topic=TOPIC, build_payload=payload_with_seq, stream="health")
    with Outbox(path) as outbox:
        after_reopen = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
    assert first == [1, 2, 3]
    assert other_stream.seq == 1
    assert after_reopen.seq == 4


def test_sequence_numbers_and_row_ids_are_not_reused_after_sent_rows_are_pruned(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    clock = FakeClock()
    with Outbox(path, retain_sent_s=10, clock=clock) as outbox:
        rows = [outbox.append(topic=TOPIC, build_payload=payload_with_seq) for _ in range(2)]
        outbox.mark_sent_many(row.id for row in rows)
        clock.now += 11
        assert outbox.prune_sent() == 2
        assert outbox.stats().total_rows == 0
    with Outbox(path, clock=clock) as outbox:
        later = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
    assert later.seq == 3
    assert later.id > rows[-1].id


def test_payload_is_built_from_the_allocated_sequence_number(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        row = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        assert row.payload == b"crossing 2"
        assert outbox.pending(10)[1].payload == b"crossing 2"


def test_a_failing_payload_builder_stores_nothing_and_consumes_no_sequence_number(
    tmp_path: Path,
) -> None:
    def explode(seq: int) -> bytes:
        raise RuntimeError(f"cannot serialise {seq}")

    with Outbox(tmp_path / "outbox.db") as outbox:
        outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        with pytest.raises(RuntimeError, match="cannot serialise 2"):
            outbox.append(topic=TOPIC, build_payload=explode)
        assert outbox.stats().depth == 1
        assert outbox.append(topic=TOPIC, build_payload=payload_with_seq).seq == 2


def test_rows_survive_close_and_reopen_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, clock=FakeClock(1234.5)) as outbox:
        stored = outbox.append(
            topic=TOPIC, build_payload=lambda seq: b"\x00\xffbinary", qos=0, retain=True, priority=3
        )
    with Outbox(path) as outbox:
        assert outbox.pending(10) == [stored]
    assert stored.created_at == 1234.5
    assert (stored.qos, stored.retain, stored.priority, stored.sent_at) == (0, True, 3, None)


def test_rows_whose_append_returned_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    """append() returns only after a durable commit, so a kill right after cannot lose the row."""
    path = tmp_path / "outbox.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.uplink.agent_child", "append", str(path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    reported = []
    try:
        for line in child.stdout:
            reported.append(tuple(int(field) for field in line.split()))
            if len(reported) == 50:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    with Outbox(path) as outbox:
        stored = {(row.id, row.seq) for row in outbox.pending(100_000)}
        last_seq = outbox.stats().last_seq["crossing"]
        assert set(reported) <= stored
        # Rows committed after the last printed line may exist too; sequence numbers have no gaps.
        assert sorted(seq for _, seq in stored) == list(range(1, last_seq + 1))
        assert outbox.append(topic=TOPIC, build_payload=payload_with_seq).seq == last_seq + 1


def test_pending_returns_lower_priority_values_first_then_append_order(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        a = outbox.append(topic=TOPIC, build_payload=payload_with_seq, priority=5)
        b = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        c = outbox.append(topic=TOPIC, build_payload=payload_with_seq, priority=5)
        d = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        assert [row.id for row in outbox.pending(10)] == [b.id, d.id, a.id, c.id]
        assert [row.id for row in outbox.pending(2)] == [b.id, d.id]
        assert outbox.pending(0) == []


def test_pending_skips_excluded_rows(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        rows = [outbox.append(topic=TOPIC, build_payload=payload_with_seq) for _ in range(5)]
        excluded = {rows[0].id, rows[2].id}
        assert [row.id for row in outbox.pending(2, exclude_ids=excluded)] == [
            rows[1].id,
            rows[3].id,
        ]


def test_pending_after_a_row_continues_the_scan_in_priority_then_append_order(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        health = [
            outbox.append(topic=TOPIC, build_payload=payload_with_seq, stream="health", priority=50)
            for _ in range(3)
        ]
        crossings = [outbox.append(topic=TOPIC, build_payload=payload_with_seq) for _ in range(3)]
        everything = [row.id for row in crossings + health]
        scanned: list[int] = []
        batch = outbox.pending(2)
        while batch:
            scanned.extend(row.id for row in batch)
            batch = outbox.pending(2, after=(batch[-1].priority, batch[-1].id))
        assert scanned == everything
        # Across the priority boundary: the last crossing, then every health row.
        assert [row.id for row in outbox.pending(10, after=(0, crossings[1].id))] == everything[2:]
        # A row made pending before the cursor (here: a crossing appended later) is not seen:
        # the caller starts a fresh scan when that can happen.
        late = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        assert late.id not in [row.id for row in outbox.pending(10, after=(50, health[0].id))]
        assert outbox.pending(1)[0].id == crossings[0].id


def test_pending_after_excludes_nothing_so_it_refuses_exclusions(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        row = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        with pytest.raises(ValueError, match="after"):
            outbox.pending(5, after=(0, 0), exclude_ids=[row.id])
        with pytest.raises(ValueError, match="after"):
            outbox.pending(5, after=(0, 0), exclude_topics=[TOPIC])


def test_mark_sent_many_marks_every_listed_row_in_one_go_and_counts_only_unsent_ones(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "outbox.db", clock=clock) as outbox:
        rows = [outbox.append(topic=TOPIC, build_payload=payload_with_seq) for _ in range(2000)]
        first = [row.id for row in rows[:1500:2]]  # every other row: not one contiguous range
        assert outbox.mark_sent_many(iter(first)) == 750  # any iterable, not only lists
        clock.now += 5
        assert outbox.mark_sent_many([*first[:10], *first[:10], rows[1].id, 10**9]) == 1
        assert outbox.mark_sent_many([]) == 0
        pending_ids = {row.id for row in outbox.pending(5000)}
        assert pending_ids == {row.id for row in rows} - set(first) - {rows[1].id}
        kept = outbox.get(first[0])
        assert kept is not None
        assert kept.sent_at == clock.now - 5


def test_mark_sent_removes_a_row_from_pending_but_keeps_it_for_the_retention_window(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "outbox.db", retain_sent_s=60, clock=clock) as outbox:
        first, second = (
            outbox.append(topic=TOPIC, build_payload=payload_with_seq) for _ in range(2)
        )
        outbox.mark_sent(first.id)
        assert outbox.pending(10) == [second]
        marked = outbox.get(first.id)
        assert marked is not None
        assert marked.sent_at == clock.now
        clock.now += 60
        assert outbox.prune_sent() == 0
        clock.now += 1
        assert outbox.prune_sent() == 1
        assert outbox.get(first.id) is None
        assert outbox.get(second.id) == second


def test_marking_twice_keeps_the_first_time_and_unknown_ids_are_reported(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "outbox.db", clock=clock) as outbox:
        row = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        assert outbox.mark_sent_many([row.id, 9999]) == 1
        clock.now += 5
        outbox.mark_sent(row.id)
        marked = outbox.get(row.id)
        assert marked is not None
        assert marked.sent_at == clock.now - 5
        with pytest.raises(OutboxRowNotFoundError) as raised:
            outbox.mark_sent(9999)
        assert raised.value.row_id == 9999


def test_stats_report_depth_oldest_unsent_age_total_rows_and_last_seq(tmp_path: Path) -> None:
    clock = FakeClock()
    with Outbox(tmp_path / "outbox.db", clock=clock) as outbox:
        empty = outbox.stats()
        first = outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        clock.now += 10
        outbox.append(topic=TOPIC, build_payload=payload_with_seq)
        outbox.append(topic=TOPIC, build_payload=payload_with_seq, stream="health")
        clock.now += 5
        outbox.mark_sent(first.id)
        stats = outbox.stats()
    assert (empty.depth, empty.oldest_unsent_age_s, empty.total_rows, empty.last_seq) == (
        0,
        None,
        0,
        {},
    )
    assert stats.depth == 2
    assert stats.oldest_unsent_age_s == 5.0
    assert stats.total_rows == 3
    assert stats.last_seq == {"crossing": 2, "health": 1}


def test_one_thread_appending_while_another_marks_sent_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    total = 400
    appended: list[int] = []
    marked: list[int] = []
    errors: list[BaseException] = []
    appending_done = threading.Event()
    with Outbox(tmp_path / "outbox.db") as outbox:

        def engine() -> None:
            try:
                for _ in range(total):
                    appended.append(outbox.append(topic=TOPIC, build_payload=payload_with_seq).seq)
            except BaseException as error:
                errors.append(error)
            finally:
                appending_done.set()

        def publisher() -> None:
            try:
                while True:
                    done = appending_done.is_set()  # read before pending(): no append can slip past
                    rows = outbox.pending(25)
                    outbox.mark_sent_many(row.id for row in rows)
                    marked.extend(row.seq for row in rows)
                    if done and not rows:
                        return
            except BaseException as error:
                errors.append(error)

        threads = [threading.Thread(target=engine), threading.Thread(target=publisher)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        stats = outbox.stats()
    assert errors == []
    assert appended == list(range(1, total + 1))
    assert marked == appended
    assert stats.depth == 0
    assert stats.total_rows == total


def test_database_files_are_readable_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    previous = os.umask(0o022)
    try:
        with Outbox(path) as outbox:
            outbox.append(topic=TOPIC, build_payload=payload_with_seq)
            wal = path.with_name("outbox.db-wal")
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (path, wal)}
    finally:
        os.umask(previous)
    assert modes == {"outbox.db": 0o600, "outbox.db-wal": 0o600}


def test_durability_defaults_to_synchronous_full_and_normal_can_be_chosen(tmp_path: Path) -> None:
    with (
        Outbox(tmp_path / "full.db") as full,
        Outbox(tmp_path / "normal.db", synchronous="NORMAL") as normal,
    ):
        assert full.synchronous == "FULL"
        assert normal.synchronous == "NORMAL"
    with sqlite3.connect(tmp_path / "full.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_using_a_closed_outbox_raises_outbox_closed_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.db")
    outbox.close()
    outbox.close()
    with pytest.raises(OutboxClosedError):
        outbox.append(topic=TOPIC, build_payload=payload_with_seq)
    with pytest.raises(OutboxClosedError):
        outbox.pending(1)


def test_a_file_from_a_newer_schema_is_refused_with_both_versions_named(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(OutboxSchemaError) as raised:
        Outbox(path)
    assert (raised.value.found, raised.value.supported) == (SCHEMA_VERSION + 1, SCHEMA_VERSION)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"topic": "lane-agent/v1/+/crossing"}, InvalidTopicPartError),
        ({"topic": ""}, InvalidTopicPartError),
        ({"topic": TOPIC, "qos": 3}, ValueError),
        ({"topic": TOPIC, "stream": ""}, ValueError),
    ],
)
def test_append_rejects_rows_that_could_never_be_published(
    tmp_path: Path, arguments: dict[str, object], error: type[Exception]
) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        with pytest.raises(error):
            outbox.append(build_payload=payload_with_seq, **arguments)  # type: ignore[arg-type]
        assert outbox.stats().depth == 0


def test_a_row_repr_leaves_the_payload_out(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db") as outbox:
        row = outbox.append(topic=TOPIC, build_payload=lambda seq: b"EPC 3034257BF7194E4000001A85")
    assert "3034257BF7194E4000001A85" not in repr(row)


def test_pending_of_priority_reads_only_that_priority_in_append_order_minus_exclusions(
    tmp_path: Path,
) -> None:
    with Outbox(tmp_path / "outbox.db") as box:
        image = box.append(
            topic="t/i", build_payload=lambda seq: b"i", stream="image", priority=PRIORITY_IMAGE
        )
        first = box.append(topic="t/c", build_payload=lambda seq: b"1")
        second = box.append(topic="t/c", build_payload=lambda seq: b"2")
        third = box.append(topic="t/c", build_payload=lambda seq: b"3")
        rows = box.pending_of_priority(PRIORITY_CROSSING, 10, exclude_ids=[second.id])
        assert [row.id for row in rows] == [first.id, third.id]
        assert image.id not in [row.id for row in box.pending_of_priority(PRIORITY_CROSSING, 10)]
        assert [row.id for row in box.pending_of_priority(PRIORITY_CROSSING, 1)] == [first.id]
