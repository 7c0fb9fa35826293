"""The send window on a real Mosquitto: priority over a backlog, the handoff to paho, the broker's
Receive Maximum, and rows the broker refuses."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from agent.state.outbox import PRIORITY_HEALTH, PRIORITY_IMAGE, Outbox
from agent.status import StatusBoard
from agent.uplink import FAULT_PUBLISH_REFUSED, UplinkState
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.support.proxy import TcpProxy
from tests.uplink.conftest import UplinkFactory, append_crossings, crossing_payload, seqs

pytestmark = pytest.mark.broker


def append_backlog(outbox: Outbox, topics: Topics, count: int, stream: str, priority: int) -> None:
    """``count`` rows of a lower-priority ``stream``, each payload naming its seq and stream."""
    for _ in range(count):
        outbox.append(
            topic=topics.crossing,
            build_payload=lambda seq: json.dumps({"seq": seq, "stream": stream}).encode(),
            stream=stream,
            priority=priority,
        )


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


def test_a_refused_publish_keeps_the_row_counts_it_and_delivers_it_once_the_acl_allows_it(
    tmp_path: Path,
    outbox: Outbox,
    topics: Topics,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    acl = tmp_path / "acl"
    lane_rules = f"user lane-3\ntopic write {topics.availability}\ntopic write {topics.status}\n"
    central_rules = "user central\ntopic read lane-agent/v1/#\ntopic readwrite lane-agent-tests/#\n"
    acl.write_text(lane_rules + central_rules)
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config=f"acl_file {acl}")
    with (
        broker,
        Subscriber(broker.host, broker.port, topics.crossing, username="central") as subscriber,
    ):
        board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
        uplink, recorder = make_uplink(broker.host, broker.port, username="lane-3", status=board)
        rows = append_crossings(outbox, topics, 3)
        with caplog.at_level(logging.WARNING, logger="agent.uplink"):
            uplink.start()
            # Mosquitto 2.0 answers a denied publish with PUBACK 0x87 or, at times, by closing
            # the connection (eclipse-mosquitto#2579): either way the row stays and the lane
            # raises publish_refused.
            wait_until(
                lambda: FAULT_PUBLISH_REFUSED in board.active_faults(), 10, "publish_refused"
            )
        assert outbox.stats().depth == 3
        assert subscriber.barrier() == []
        fault = board.active_faults()[FAULT_PUBLISH_REFUSED]
        said = [fault.message]
        if "closed the connection" in fault.message:
            assert uplink.stats().connection_losses >= 3
        else:
            assert uplink.stats().last_refusal == "Not authorized"
            said += [
                r.getMessage() for r in caplog.records if "refused outbox row" in r.getMessage()
            ]
            assert len(said) > 1
        assert not any(row.payload.decode() in message for message in said for row in rows)

        acl.write_text(lane_rules + f"topic write {topics.crossing}\n" + central_rules)
        mark = recorder.mark()
        broker.restart()
        recorder.wait_for(UplinkState.CONNECTED, since=mark)
        # A held row does not block the rows behind it, so the order may differ; none is missing.
        subscriber.wait_until(lambda received: set(seqs(received)) == {1, 2, 3}, 10, "seq 1, 2, 3")
        wait_until(lambda: outbox.stats().depth == 0, 10, "the rows marked sent")
        wait_until(
            lambda: FAULT_PUBLISH_REFUSED not in board.active_faults(), 10, "the alarm cleared"
        )
