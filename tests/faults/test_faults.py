"""Fault injection: the lane's delivery side as a real process against a real Mosquitto.

Every scenario ends with the same question: does the subscriber hold every crossing the lane
committed, each under one event id? The lane process is ``tests/faults/lane_process.py``, which
runs the agent's own ``Delivery`` (outbox, fail-safe committer, MQTT uplink, status).
"""

from __future__ import annotations

import json
import random
import resource
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.conftest import Delivered, LaneProcess
from tests.faults.lane_process import TOPICS
from tests.support.broker import Message, MosquittoBroker, Subscriber
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.broker

KILLS = 22
KEEPALIVE_S = 5

LaneFactory = Callable[..., LaneProcess]


def last_seq(outbox: Path) -> int:
    """The last crossing sequence number the outbox handed out (read while no lane runs)."""
    connection = sqlite3.connect(outbox)
    try:
        found = connection.execute(
            "SELECT last_seq FROM stream_seq WHERE stream = 'crossing'"
        ).fetchone()
    finally:
        connection.close()
    return 0 if found is None else int(found[0])


def every_seq(count: int) -> Callable[[list[Message]], bool]:
    expected = set(range(1, count + 1))
    return lambda messages: expected <= set(Delivered.of(messages).seqs)


def status_with_fault(code: str) -> Callable[[list[Message]], bool]:
    def has(messages: list[Message]) -> bool:
        return any(
            code in {fault["code"] for fault in json.loads(message.payload)["faults"]}
            for message in messages
        )

    return has


def latest_status(messages: list[Message]) -> dict[str, object]:
    document: dict[str, object] = json.loads(messages[-1].payload)
    return document


def assert_consistent(delivered: Delivered, lanes_stored: list[dict[int, str]]) -> None:
    """One event id per seq, and it is the one the lane reported when the commit returned."""
    assert all(len(ids) == 1 for ids in delivered.event_ids.values()), "a seq with two event ids"
    for stored in lanes_stored:
        for seq, event_id in stored.items():
            assert delivered.event_ids[seq] == {event_id}


def test_kill_9_at_random_moments_loses_nothing_and_duplicates_keep_their_event_id(
    mosquitto: MosquittoBroker,
    lanes: LaneFactory,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    rng = random.Random(20261128)
    stored_per_run: list[dict[int, str]] = []
    started = time.monotonic()
    with Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as subscriber:
        for run in range(KILLS):
            lane = lanes(
                mosquitto.port,
                "--vehicles",
                "100000",
                "--interval-ms",
                "4",
                "--seed",
                str(run),
            )
            lane.wait_for_line(lambda line: line.startswith("stored "), 20, "first crossing")
            # The kill moment is the random variable of this test, not a synchronisation.
            time.sleep(rng.uniform(0.0, 0.5))
            lane.kill()
            stored_per_run.append(lane.stored())
        committed = last_seq(tmp_path / "lane" / "outbox.db")
        drain = lanes(mosquitto.port)  # no new vehicles: deliver what is left
        subscriber.wait_until(every_seq(committed), 60, f"seq 1..{committed}")
        drain.stop()
        messages = subscriber.barrier()
    delivered = Delivered.of(messages)
    assert set(delivered.seqs) == set(range(1, committed + 1))
    assert_consistent(delivered, stored_per_run)
    rate = delivered.duplicates / committed
    record_property("kills", KILLS)
    record_property("crossings", committed)
    record_property("duplicates", delivered.duplicates)
    record_property("duplicate_rate", round(rate, 4))
    print(
        f"\nkill -9 x{KILLS}: {committed} crossings, {delivered.duplicates} duplicates "
        f"({rate:.2%}), {time.monotonic() - started:.1f} s"
    )


def test_broker_stopped_while_vehicles_pass_then_everything_arrives_in_seq_order(
    mosquitto: MosquittoBroker, lanes: LaneFactory
) -> None:
    with Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as subscriber:
        lane = lanes(mosquitto.port, "--vehicles", "300", "--interval-ms", "10")
        lane.wait_for_line(lambda line: line.startswith("stored 50 "), 20, "50 crossings")
        mosquitto.stop()
        lane.wait_for_line(lambda line: line == "uplink disconnected", 10, "the outage noticed")
        lane.wait_for_line(lambda line: line.startswith("stored 200 "), 20, "200 crossings")
        mosquitto.start()
        lane.wait_for_line(lambda line: line == "committed 300", 20, "all vehicles")
        subscriber.wait_until(every_seq(300), 30, "seq 1..300")
        messages = subscriber.barrier()
        lane.stop()
    delivered = Delivered.of(messages)
    assert list(dict.fromkeys(delivered.seqs)) == list(range(1, 301))
    assert_consistent(delivered, [lane.stored()])


def test_a_half_open_link_is_detected_within_1_5_keepalives_and_nothing_is_lost(
    mosquitto: MosquittoBroker, lanes: LaneFactory
) -> None:
    with (
        TcpProxy(0, mosquitto.host, mosquitto.port) as proxy,
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as subscriber,
    ):
        lane = lanes(
            proxy.port, "--vehicles", "400", "--interval-ms", "10", "--keepalive", str(KEEPALIVE_S)
        )
        lane.wait_for_line(lambda line: line.startswith("stored 20 "), 20, "20 crossings")
        subscriber.wait_until(every_seq(10), 10, "the first crossings")
        mark = lane.mark()
        proxy.cut()
        # The bound itself is the requirement: a silent link must be given up within 1.5 x keepalive.
        lane.wait_for_line(
            lambda line: line == "uplink disconnected",
            1.5 * KEEPALIVE_S,
            "the half-open link detected",
            since=mark,
        )
        proxy.resume()
        lane.wait_for_line(lambda line: line == "committed 400", 30, "all vehicles")
        subscriber.wait_until(every_seq(400), 30, "seq 1..400")
        messages = subscriber.barrier()
        lane.stop()
    assert proxy.dropped_bytes > 0
    delivered = Delivered.of(messages)
    assert set(delivered.seqs) == set(range(1, 401))
    assert_consistent(delivered, [lane.stored()])


def test_a_publish_refused_by_the_acl_is_kept_and_alarmed_and_delivered_once_the_acl_is_fixed(
    tmp_path: Path, lanes: LaneFactory
) -> None:
    acl = tmp_path / "acl"
    lane_rules = "".join(
        f"topic {access} {topic}\n"
        for access, topic in (
            ("write", TOPICS.availability),
            ("write", TOPICS.status),
            ("read", TOPICS.ack),
        )
    )
    central_rules = "user central\ntopic read lane-agent/v1/#\ntopic readwrite lane-agent-tests/#\n"
    acl.write_text(lane_rules + central_rules)
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config=f"acl_file {acl}")
    with (
        broker,
        Subscriber(broker.host, broker.port, TOPICS.crossing, username="central") as crossings,
        Subscriber(broker.host, broker.port, TOPICS.status, username="central") as statuses,
    ):
        lane = lanes(broker.port, "--vehicles", "5", "--interval-ms", "10")
        lane.wait_for_line(lambda line: line == "committed 5", 20, "five crossings")
        statuses.wait_until(status_with_fault("publish_refused"), 20, "the refusal alarm")
        assert crossings.barrier() == []
        # Mosquitto answers a denied publish with PUBACK 0x87, or sometimes by closing the
        # connection (eclipse-mosquitto#2579): either way the lane alarms and keeps the rows.
        refusals = [
            r
            for r in lane.log_records()
            if "refused outbox row" in str(r["msg"]) or "may be refusing" in str(r["msg"])
        ]
        assert refusals
        assert all(r["level"] == "WARNING" for r in refusals)

        acl.write_text(lane_rules + f"topic write {TOPICS.crossing}\n" + central_rules)
        broker.restart()
        crossings.wait_until(every_seq(5), 30, "seq 1..5 after the fix")
        statuses.wait_until(
            lambda messages: latest_status(messages)["faults"] == [], 10, "the alarm cleared"
        )
        messages = crossings.barrier()
        lane.stop()
    delivered = Delivered.of(messages)
    assert sorted(delivered.seqs) == [1, 2, 3, 4, 5]  # delivered once each: refusals never arrive
    assert_consistent(delivered, [lane.stored()])


def test_a_full_disk_sets_the_lane_to_manual_keeps_every_crossing_and_recovers_by_itself(
    mosquitto: MosquittoBroker, lanes: LaneFactory
) -> None:
    limit = 128 * 1024  # the new outbox and its WAL outgrow this after a few dozen crossings

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    vehicles = 200
    with (
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as crossings,
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.status) as statuses,
    ):
        lane = lanes(
            mosquitto.port,
            "--vehicles",
            str(vehicles),
            "--interval-ms",
            "5",
            preexec_fn=limit_file_size,
        )
        lane.wait_for_line(lambda line: line.startswith("held "), 30, "a crossing held")
        lane.wait_for_line(lambda line: line == "signal MANUAL", 10, "the fail-safe signal")
        statuses.wait_until(status_with_fault("outbox_full"), 15, "the outbox_full alarm")
        lane.wait_for_line(lambda line: line == f"committed {vehicles}", 30, "all vehicles")
        assert lane.process.poll() is None, "the lane process must keep running"

        # Space returns: lift the limit on the running process.
        resource.prlimit(
            lane.process.pid,
            resource.RLIMIT_FSIZE,
            (resource.RLIM_INFINITY, resource.RLIM_INFINITY),
        )
        lane.wait_for_line(lambda line: line == "signal OFF", 15, "the signal released")
        crossings.wait_until(every_seq(vehicles), 30, f"seq 1..{vehicles}")
        statuses.wait_until(
            lambda messages: latest_status(messages)["faults"] == [], 10, "the alarm cleared"
        )
        messages = crossings.barrier()
        lane.stop()
    delivered = Delivered.of(messages)
    assert set(delivered.seqs) == set(range(1, vehicles + 1))
    assert_consistent(delivered, [lane.stored()])
    held = sum(1 for line in lane.lines if line.startswith("held "))
    assert 0 < held < vehicles


def test_a_corrupt_outbox_is_kept_aside_replaced_alarmed_and_the_lane_carries_on(
    mosquitto: MosquittoBroker, lanes: LaneFactory, tmp_path: Path
) -> None:
    workdir = tmp_path / "lane"
    workdir.mkdir()
    damaged = b"SQLite format 3\x00" + bytes(range(256)) * 64
    (workdir / "outbox.db").write_bytes(damaged)
    with (
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as crossings,
        Subscriber(mosquitto.host, mosquitto.port, TOPICS.status) as statuses,
    ):
        lane = lanes(mosquitto.port, "--vehicles", "5", "--interval-ms", "10")
        statuses.wait_until(status_with_fault("outbox_replaced"), 20, "the alarm")
        crossings.wait_until(every_seq(5), 20, "seq 1..5 from the fresh outbox")
        lane.stop()
    kept = [path for path in workdir.iterdir() if path.name.startswith("outbox.db.corrupt-")]
    assert [path.read_bytes() for path in kept] == [damaged]
    errors = [r for r in lane.log_records() if r["level"] == "ERROR"]
    assert any("is damaged" in str(r["msg"]) and kept[0].name in str(r["msg"]) for r in errors)
