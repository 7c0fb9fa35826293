"""MqttUplink on a real Mosquitto: ordered at-least-once delivery, availability, refusal, outage."""

from __future__ import annotations

import json
import logging
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.mqtt import backoff_delay
from agent.state.outbox import PRIORITY_HEALTH, PRIORITY_IMAGE, Outbox, OutboxRow
from agent.status import StatusBoard
from agent.uplink import FAULT_OUTBOX_ERROR, MqttUplink, UplinkState
from agent.wire.topics import Topics
from tests.support.broker import LOOPBACK, MosquittoBroker, Subscriber, free_port, wait_until
from tests.support.proxy import TcpProxy
from tests.uplink.conftest import UplinkFactory, append_crossings, crossing_payload, seqs

pytestmark = pytest.mark.broker

REPO_ROOT = Path(__file__).resolve().parents[2]


def first_occurrences(numbers: list[int]) -> list[int]:
    """The order in which distinct values first arrived (re-sends after a reconnect repeat some)."""
    return list(dict.fromkeys(numbers))


def append_backlog(outbox: Outbox, topics: Topics, count: int, stream: str, priority: int) -> None:
    """``count`` rows of a lower-priority ``stream``, each payload naming its seq and stream."""
    for _ in range(count):
        outbox.append(
            topic=topics.crossing,
            build_payload=lambda seq: json.dumps({"seq": seq, "stream": stream}).encode(),
            stream=stream,
            priority=priority,
        )


def test_rows_arrive_exactly_once_each_in_outbox_order_and_are_marked_sent(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    uplink, _ = make_uplink(mosquitto.host, mosquitto.port)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        for _ in range(200):
            append_crossings(outbox, topics, 1)
            uplink.notify()
        subscriber.wait_for(200)
        wait_until(lambda: outbox.stats().depth == 0, 10, "every row marked sent")
        messages = subscriber.barrier()
    assert seqs(messages) == list(range(1, 201))
    assert all(message.qos == 1 and not message.retain for message in messages)
    stats = uplink.stats()
    assert (stats.delivered, stats.published, stats.refused, stats.in_flight) == (200, 200, 0, 0)


def test_rows_waiting_from_a_previous_run_are_sent_after_start(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    append_crossings(outbox, topics, 30)
    uplink, _ = make_uplink(mosquitto.host, mosquitto.port)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        assert seqs(subscriber.wait_for(30)) == list(range(1, 31))


def test_a_missed_notify_only_delays_a_row_until_the_next_poll(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, poll_interval_s=0.2)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        append_crossings(outbox, topics, 3)  # no notify()
        assert seqs(subscriber.wait_for(3)) == [1, 2, 3]


def test_rows_appended_while_the_broker_is_down_are_delivered_after_it_restarts(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        append_crossings(outbox, topics, 20)
        uplink.notify()
        subscriber.wait_for(20)
        wait_until(lambda: outbox.stats().depth == 0, 10, "the first rows marked sent")

        mark = recorder.mark()
        mosquitto.stop()
        recorder.wait_for(UplinkState.DISCONNECTED, since=mark)
        append_crossings(outbox, topics, 30)
        uplink.notify()
        assert outbox.stats().depth == 30

        mark = recorder.mark()
        mosquitto.start()
        recorder.wait_for(UplinkState.CONNECTED, since=mark)
        messages = subscriber.wait_until(
            lambda received: set(seqs(received)) >= set(range(1, 51)), 15, "all 50 sequence numbers"
        )
        wait_until(lambda: outbox.stats().depth == 0, 10, "every row marked sent")
    assert first_occurrences(seqs(messages)) == list(range(1, 51))
    assert uplink.stats().connection_losses == 1


def test_rows_in_flight_when_the_connection_drops_go_back_to_pending_and_are_re_sent(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    with (
        TcpProxy(0, mosquitto.host, mosquitto.port) as proxy,
        Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber,
    ):
        uplink, recorder = make_uplink(proxy.host, proxy.port)
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        proxy.cut()  # the PUBLISH packets vanish on the way: no PUBACK can come back
        append_crossings(outbox, topics, 10)
        uplink.notify()
        wait_until(lambda: uplink.stats().in_flight == 10, 5, "ten rows in flight")
        assert outbox.stats().depth == 10

        mark = recorder.mark()
        proxy.resume()
        proxy.drop_connections()
        recorder.wait_for(UplinkState.CONNECTED, since=mark)
        subscriber.wait_for(10)
        wait_until(lambda: outbox.stats().depth == 0, 10, "every row marked sent")
        messages = subscriber.barrier()
    assert seqs(messages) == list(
        range(1, 11)
    )  # each once: the dead connection's copies were never re-sent
    assert uplink.stats().published == 20


def test_nothing_is_lost_when_the_broker_is_killed_mid_stream(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """Rows the broker had not acknowledged when it died are published again once it is back."""
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port)
    append_crossings(outbox, topics, 2000)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        subscriber.wait_for(1)
        mosquitto.kill()
        recorder.wait_for(UplinkState.DISCONNECTED)
        mosquitto.start()
        wait_until(lambda: outbox.stats().depth == 0, 15, "every row marked sent after the restart")
    assert uplink.stats().delivered >= 2000


def test_availability_is_retained_online_while_connected_and_stopped_after_a_clean_stop(
    mosquitto: MosquittoBroker, topics: Topics, make_uplink: UplinkFactory
) -> None:
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port)
    uplink.start()
    recorder.wait_for(UplinkState.CONNECTED)
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as first_subscriber:
        first_subscriber.wait_for(1)  # 'online' reached the broker (live or retained)
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as late_subscriber:
        (online,) = late_subscriber.wait_for(1)
    uplink.stop(timeout_s=5)
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as after_stop:
        (stopped,) = after_stop.wait_for(1)
    assert (online.payload, online.retain) == (b"online", True)
    assert (stopped.payload, stopped.retain) == (b"stopped", True)
    assert recorder.history == [
        UplinkState.CONNECTING,
        UplinkState.CONNECTED,
        UplinkState.STOPPING,
        UplinkState.STOPPED,
    ]


def test_broker_publishes_the_offline_will_when_the_agent_process_is_killed(
    mosquitto: MosquittoBroker, tmp_path: Path, topics: Topics
) -> None:
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as subscriber:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.uplink.agent_child",
                "uplink",
                str(tmp_path / "child-outbox.db"),
                mosquitto.host,
                str(mosquitto.port),
                "lane-agent-child",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "connected\n"
            subscriber.wait_until(
                lambda received: [m.payload for m in received] == [b"online"], 5, "online"
            )
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        messages = subscriber.wait_for(2)
    assert [m.payload for m in messages] == [b"online", b"offline"]
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as late_subscriber:
        (retained,) = late_subscriber.wait_for(1)
    assert (retained.payload, retained.retain) == (b"offline", True)


def test_a_crossing_appended_while_a_lower_priority_backlog_drains_overtakes_the_rest_of_it(
    tmp_path: Path, mosquitto: MosquittoBroker, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """The backlog is read in batches, each continuing where the last ended; a crossing appended
    meanwhile sits before that point and must not wait for the scan to finish."""
    backlog = 6000
    with Outbox(tmp_path / "backlog.db", synchronous="NORMAL") as outbox:  # quick to fill
        append_backlog(outbox, topics, backlog, "health", PRIORITY_HEALTH)
        uplink, _ = make_uplink(mosquitto.host, mosquitto.port, outbox=outbox)
        with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
            uplink.start()
            subscriber.wait_for(600, timeout_s=20)  # past the first batch read from the outbox
            outbox.append(topic=topics.crossing, build_payload=crossing_payload)
            uplink.notify()
            messages = subscriber.wait_for(backlog + 1, timeout_s=30)
            uplink.stop(timeout_s=5)
    streams = [json.loads(message.payload).get("stream", "crossing") for message in messages]
    assert streams.count("crossing") == 1
    # It goes out after the rows already read or handed to paho (a few hundred), not last.
    assert streams.index("crossing") < backlog - 1000


def test_rows_whose_marking_fails_stay_pending_raise_the_fault_and_are_marked_once_it_works(
    tmp_path: Path, mosquitto: MosquittoBroker, topics: Topics, make_uplink: UplinkFactory
) -> None:
    path = tmp_path / "locked.db"
    with Outbox(path, busy_timeout_s=0.1) as outbox:
        board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
        uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, outbox=outbox, status=board)
        other = sqlite3.connect(path, isolation_level=None)  # an operator's shell, say
        with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
            uplink.start()
            recorder.wait_for(UplinkState.CONNECTED)
            append_crossings(outbox, topics, 5)
            other.execute("BEGIN IMMEDIATE")  # holds the write lock: marking cannot commit
            uplink.notify()
            subscriber.wait_for(5)
            wait_until(
                lambda: FAULT_OUTBOX_ERROR in board.active_faults(), 5, "the outbox_error fault"
            )
            assert outbox.stats().depth == 5  # broker has them, the outbox still says unsent
            other.execute("ROLLBACK")
            wait_until(lambda: outbox.stats().depth == 0, 10, "every row marked sent")
            wait_until(lambda: not board.active_faults(), 5, "the fault cleared")
            messages = subscriber.barrier()
        other.close()
        uplink.stop(timeout_s=2)
    # Unmarked rows go out again after the storage retry: duplicates, never a gap.
    assert set(seqs(messages)) == {1, 2, 3, 4, 5}
    assert uplink.stats().delivered >= 5


def test_stop_delivers_rows_still_pending_before_disconnecting(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    uplink, _ = make_uplink(mosquitto.host, mosquitto.port)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        append_crossings(outbox, topics, 300)
        uplink.notify()
        uplink.stop(timeout_s=10)
        assert outbox.stats().depth == 0
        assert seqs(subscriber.wait_for(300)) == list(range(1, 301))
    assert uplink.state is UplinkState.STOPPED


def test_stop_while_the_broker_is_unreachable_returns_and_keeps_the_rows(
    outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    uplink, recorder = make_uplink(LOOPBACK, free_port())  # nobody listens there
    append_crossings(outbox, topics, 3)
    uplink.start()
    recorder.wait_for(UplinkState.DISCONNECTED)
    uplink.stop(timeout_s=1)
    assert uplink.state is UplinkState.STOPPED
    assert outbox.stats().depth == 3


def test_stop_on_a_silent_connection_gives_up_in_time_and_keeps_unacknowledged_rows(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    with TcpProxy(0, mosquitto.host, mosquitto.port) as proxy:
        uplink, recorder = make_uplink(proxy.host, proxy.port)
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        proxy.cut()
        append_crossings(outbox, topics, 5)
        uplink.notify()
        wait_until(lambda: uplink.stats().in_flight == 5, 5, "five rows in flight")
        uplink.stop(timeout_s=0.5)
    assert uplink.state is UplinkState.STOPPED
    assert outbox.stats().depth == 5


def test_a_refused_publish_keeps_the_row_counts_it_and_delivers_it_once_the_acl_allows_it(
    tmp_path: Path,
    outbox: Outbox,
    topics: Topics,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    acl = tmp_path / "acl"
    lane_rules = f"user lane-3\ntopic write {topics.availability}\n"
    central_rules = "user central\ntopic read lane-agent/v1/#\ntopic readwrite lane-agent-tests/#\n"
    acl.write_text(lane_rules + central_rules)
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config=f"acl_file {acl}")
    with (
        broker,
        Subscriber(broker.host, broker.port, topics.crossing, username="central") as subscriber,
    ):
        uplink, recorder = make_uplink(broker.host, broker.port, username="lane-3")
        rows = append_crossings(outbox, topics, 3)
        with caplog.at_level(logging.WARNING, logger="agent.uplink.publisher"):
            uplink.start()
            wait_until(lambda: uplink.stats().refused >= 3, 10, "three refusals")
        assert outbox.stats().depth == 3
        assert uplink.stats().last_refusal == "Not authorized"
        assert subscriber.barrier() == []
        refusals = [r for r in caplog.records if "refused outbox row" in r.getMessage()]
        assert refusals
        assert not any(row.payload.decode() in r.getMessage() for r in refusals for row in rows)

        acl.write_text(lane_rules + f"topic write {topics.crossing}\n" + central_rules)
        mark = recorder.mark()
        broker.restart()
        recorder.wait_for(UplinkState.CONNECTED, since=mark)
        # A held row does not block the rows behind it, so the order may differ; none is missing.
        subscriber.wait_until(lambda received: set(seqs(received)) == {1, 2, 3}, 10, "seq 1, 2, 3")
        wait_until(lambda: outbox.stats().depth == 0, 10, "the rows marked sent")


def test_a_silent_half_open_connection_is_dropped_and_rows_flow_again_after_it_heals(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    with (
        TcpProxy(0, mosquitto.host, mosquitto.port) as proxy,
        Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber,
    ):
        uplink, recorder = make_uplink(proxy.host, proxy.port, keepalive_s=1)
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        mark = recorder.mark()
        proxy.cut()
        recorder.wait_for(UplinkState.DISCONNECTED, since=mark)
        append_crossings(outbox, topics, 5)
        uplink.notify()
        mark = recorder.mark()
        proxy.resume()
        recorder.wait_for(UplinkState.CONNECTED, since=mark)
        assert seqs(subscriber.wait_for(5)) == [1, 2, 3, 4, 5]


def test_rows_in_flight_never_exceed_the_brokers_receive_maximum(
    tmp_path: Path, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config="max_inflight_messages 3")
    with broker, Subscriber(broker.host, broker.port, topics.crossing) as subscriber:
        uplink, recorder = make_uplink(broker.host, broker.port, max_inflight=20)
        assert uplink.stats().in_flight_limit == 20
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        append_crossings(outbox, topics, 50)
        uplink.notify()
        assert seqs(subscriber.wait_for(50)) == list(range(1, 51))
    assert uplink.stats().in_flight_limit == 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"host": ""},
        {"port": 0},
        {"client_id": ""},
        {"keepalive_s": 0},
        {"max_inflight": 0},
        {"reconnect_min_s": 0},
        {"reconnect_min_s": 5, "reconnect_max_s": 1},
        {"session_expiry_s": -1},
        {"poll_interval_s": 0},
    ],
)
def test_settings_that_cannot_work_are_rejected_at_construction(
    outbox: Outbox, topics: Topics, overrides: dict[str, object]
) -> None:
    settings: dict[str, object] = {"host": "127.0.0.1", "port": 1884, "client_id": "c", **overrides}
    with pytest.raises(ValueError, match=next(iter(overrides))):
        MqttUplink(outbox, topics, **settings)  # type: ignore[arg-type]


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    min_s=st.floats(min_value=0.001, max_value=10),
    spread=st.floats(min_value=1, max_value=1000),
    seed=st.integers(),
)
def test_backoff_delay_always_stays_within_min_and_max(
    attempt: int, min_s: float, spread: float, seed: int
) -> None:
    max_s = min_s * spread
    assert min_s <= backoff_delay(attempt, min_s, max_s, random.Random(seed)) <= max_s


def test_backoff_delays_grow_with_attempts_and_are_jittered() -> None:
    rng = random.Random(7)
    early = [backoff_delay(0, 1.0, 60.0, rng) for _ in range(200)]
    late = [backoff_delay(10, 1.0, 60.0, rng) for _ in range(200)]
    assert max(early) <= 2.0
    assert len(set(early)) > 100  # lanes do not retry in lock-step
    assert sum(late) / len(late) > 2 * sum(early) / len(early)


def test_the_uplink_delivers_when_its_sockets_are_numbered_above_1024(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """select() cannot wait on descriptor 1024 or above; an agent holding many files gets those."""
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port)
    # The subscriber runs paho's own loop, which uses select(): its socket comes first, low.
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2048 <= hard or hard == resource.RLIM_INFINITY:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), hard))
        fillers: list[int] = []
        try:
            while not fillers or fillers[-1] < 1100:
                fillers.append(os.open(os.devnull, os.O_RDONLY))
            uplink.start()
            append_crossings(outbox, topics, 50)
            uplink.notify()
            assert seqs(subscriber.wait_for(50)) == list(range(1, 51))
            wait_until(lambda: outbox.stats().depth == 0, 10, "every row marked sent")
        finally:
            for fd in fillers:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert UplinkState.FAILED not in recorder.history


def test_an_error_on_the_publisher_thread_reports_failed_and_the_broker_publishes_offline(
    mosquitto: MosquittoBroker,
    outbox: Outbox,
    topics: Topics,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FAILED reaches on_state_change (the service restarts on it); the connection is dropped, so
    the retained availability does not claim 'online' for an uplink that publishes nothing."""

    def broken(_row: OutboxRow) -> None:
        raise RuntimeError("a bug in the acknowledgement hook")

    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, on_acknowledged=broken)
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as subscriber:
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        with caplog.at_level(logging.ERROR, logger="agent.uplink.publisher"):
            append_crossings(outbox, topics, 1)
            uplink.notify()
            recorder.wait_for(UplinkState.FAILED)
        subscriber.wait_until(
            lambda received: [m.payload for m in received][-1:] == [b"offline"], 10, "offline"
        )
    assert recorder.history[-1] is UplinkState.FAILED
    assert any("publisher thread failed" in record.getMessage() for record in caplog.records)
    assert outbox.stats().depth == 1  # never marked sent: it goes out after the restart


def test_a_burst_of_crossings_during_a_backlog_sends_no_row_twice(
    tmp_path: Path, mosquitto: MosquittoBroker, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """More crossings than one read batch, appended while health rows are in flight: the scan that
    reads them continues into the health rows, and must skip those in flight or being marked."""
    backlog, burst = 6000, 700
    with Outbox(tmp_path / "burst.db", synchronous="NORMAL") as outbox:
        append_backlog(outbox, topics, backlog, "health", PRIORITY_HEALTH)
        uplink, _ = make_uplink(mosquitto.host, mosquitto.port, outbox=outbox)
        with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
            uplink.start()
            subscriber.wait_for(1000, timeout_s=20)
            append_crossings(outbox, topics, burst)  # no notify yet: the scan goes on meanwhile
            uplink.notify()
            subscriber.wait_for(backlog + burst, timeout_s=30)
            wait_until(lambda: outbox.stats().depth == 0, 10, "every row marked sent")
            messages = subscriber.barrier()
            uplink.stop(timeout_s=5)
    keys = [
        (json.loads(message.payload).get("stream", "crossing"), json.loads(message.payload)["seq"])
        for message in messages
    ]
    assert len(set(keys)) == backlog + burst
    duplicates = len(keys) - len(set(keys))
    assert duplicates == 0


def test_each_crossing_appended_during_an_image_backlog_goes_out_within_one_handoff(
    tmp_path: Path, mosquitto: MosquittoBroker, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """A notify puts the new crossing ahead of the lower-priority rows read ahead, so it waits only
    for what paho already holds (max_inflight x 10 rows), not for a whole read batch as well; and
    the rows read ahead are not read again."""
    backlog, crossings, handoff = 8000, 6, 20 * 10
    with Outbox(tmp_path / "images.db", synchronous="NORMAL") as outbox:
        append_backlog(outbox, topics, backlog, "image", PRIORITY_IMAGE)
        uplink, _ = make_uplink(mosquitto.host, mosquitto.port, outbox=outbox, max_inflight=20)
        published_at_notify: list[int] = []
        with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
            uplink.start()
            for number in range(crossings):
                subscriber.wait_for(500 + 900 * number, timeout_s=20)
                outbox.append(topic=topics.crossing, build_payload=crossing_payload)
                published_at_notify.append(uplink.stats().published)
                uplink.notify()
            messages = subscriber.wait_for(backlog + crossings, timeout_s=30)
            uplink.stop(timeout_s=5)
    # A wake reads the new crossing only, not the images read ahead again (up to 512 rows each).
    assert uplink.stats().rows_read <= backlog + crossings + 100
    streams = [json.loads(message.payload).get("stream", "crossing") for message in messages]
    positions = [index for index, stream in enumerate(streams) if stream == "crossing"]
    assert len(positions) == crossings
    # Rows handed to paho between reading the counter and the wake-up: one top-up at most.
    waits = [
        position - published
        for position, published in zip(positions, published_at_notify, strict=True)
    ]
    assert max(waits) <= handoff + 100, waits


def test_status_messages_stay_within_a_receive_maximum_smaller_than_pahos_window(
    tmp_path: Path, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """On the first connection paho's window is larger than the broker allows, so rows, status and
    availability share the broker's slots here: status waits for a PUBACK rather than overflow."""
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config="max_inflight_messages 3")
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
    with broker, TcpProxy(0, broker.host, broker.port) as proxy:
        uplink, recorder = make_uplink(
            proxy.host, proxy.port, max_inflight=20, status=board, status_interval_s=0.05
        )
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        wait_until(lambda: uplink.stats().status_published >= 3, 5, "status published")
        proxy.cut()  # nothing is acknowledged from now on
        before = uplink.stats().status_published
        time.sleep(1.0)  # twenty status intervals
        after = uplink.stats().status_published
    # Up to three messages unacknowledged on the wire, whatever they are.
    assert after - before <= 3


def test_pahos_window_grows_back_when_the_broker_allows_more_again(
    tmp_path: Path, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """A broker that allowed 3 in flight shrinks the window of the next client; once a broker
    allows 20 again, the client after that gets 20 again (seen as PUBLISHes on a silent link)."""
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config="max_inflight_messages 3")
    with broker, TcpProxy(0, broker.host, broker.port) as proxy:
        uplink, recorder = make_uplink(proxy.host, proxy.port, max_inflight=20)
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        for allowed in (20, 20):  # the first reconnect learns 20, the second uses it
            broker.extra_config = f"max_inflight_messages {allowed}"
            mark = recorder.mark()
            broker.restart()
            recorder.wait_for(UplinkState.CONNECTED, since=mark)
        assert uplink.stats().in_flight_limit == 20
        proxy.cut()
        dropped_before = proxy.dropped_bytes
        append_crossings(outbox, topics, 40)
        uplink.notify()
        wait_until(lambda: uplink.stats().in_flight == 40, 5, "forty rows handed to paho")
        one_publish = 2 + 2 + len(topics.crossing) + 2 + 1 + len(crossing_payload(40))
        wait_until(
            lambda: proxy.dropped_bytes - dropped_before >= 15 * one_publish,
            5,
            "more than three PUBLISHes on the wire",
        )


def test_stop_returns_within_its_budget_while_the_marker_waits_for_a_locked_outbox(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    topics: Topics,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The marker waits out SQLite's busy timeout (an operator's shell holds the write lock): stop
    gives up on it within stop()'s join, so the caller never closes the outbox under a live thread.
    """
    path = tmp_path / "locked.db"
    with Outbox(path, busy_timeout_s=8.0) as outbox:
        uplink, recorder = make_uplink(
            mosquitto.host, mosquitto.port, outbox=outbox, poll_interval_s=60
        )
        other = sqlite3.connect(path, isolation_level=None)
        try:
            with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
                uplink.start()
                recorder.wait_for(UplinkState.CONNECTED)
                append_crossings(outbox, topics, 5)
                other.execute("BEGIN IMMEDIATE")
                uplink.notify()
                subscriber.wait_for(5)  # acknowledged; the marker now waits for the lock
                with caplog.at_level(logging.WARNING, logger="agent.uplink.publisher"):
                    uplink.stop(timeout_s=0.5)
            assert uplink.state is UplinkState.STOPPED
            assert not any("still running" in record.getMessage() for record in caplog.records)
        finally:
            other.execute("ROLLBACK")
            other.close()
