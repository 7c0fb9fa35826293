"""End-to-end confirmation on a real Mosquitto: central ingest's watermarks remove rows, and what
ingest has not confirmed goes out again after a reconnect."""

from __future__ import annotations

import json
import logging

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.state.outbox import Outbox
from agent.status import StatusBoard
from agent.uplink import UplinkState
from agent.uplink.confirmation import parse_watermarks
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.uplink.conftest import UplinkFactory, append_crossings, seqs


def publish_watermark(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    """What central ingest does: a retained watermark, QoS 1, acknowledged before returning."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def ack(seq: int) -> bytes:
    return json.dumps({"acked_seq": {"crossing": seq}}).encode()


@pytest.mark.broker
def test_a_watermark_from_ingest_removes_the_confirmed_rows_and_keeps_the_others(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    append_crossings(outbox, topics, 10)
    uplink, _ = make_uplink(mosquitto.host, mosquitto.port)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        subscriber.wait_for(10)
        wait_until(lambda: outbox.stats().depth == 0, 5, "all ten marked sent")
        assert outbox.stats().total_rows == 10  # sent, not yet confirmed: kept
        publish_watermark(mosquitto, topics.ack, ack(7))
        wait_until(lambda: outbox.stats().total_rows == 3, 5, "rows 1..7 removed")
    assert outbox.stats().acked_seq == {"crossing": 7}
    assert uplink.stats().confirmed == 7


@pytest.mark.broker
def test_after_a_reconnect_rows_above_the_watermark_are_sent_again_and_none_below(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    publish_watermark(mosquitto, topics.ack, ack(0))  # ingest exists, has nothing yet
    append_crossings(outbox, topics, 6)
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port)
    with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
        uplink.start()
        subscriber.wait_for(6)
        wait_until(lambda: outbox.stats().depth == 0, 5, "all six marked sent")
        publish_watermark(mosquitto, topics.ack, ack(4))
        wait_until(lambda: outbox.stats().total_rows == 2, 5, "rows 1..4 confirmed")
        mark = recorder.mark()
        mosquitto.restart()  # as if the broker had lost what it acknowledged
        recorder.wait_for(UplinkState.CONNECTED, since=mark)
        received = subscriber.wait_until(
            lambda messages: seqs(messages).count(6) == 2, 10, "seq 5 and 6 a second time"
        )
        received = subscriber.barrier()
    assert set(seqs(received)) == {1, 2, 3, 4, 5, 6}
    # The broker may itself repeat messages to the subscriber across its restart; what the lane
    # sent is counted at the lane: six rows, then rows 5 and 6 once more.
    # The counters are updated by the publisher thread after paho returns, which can be a moment
    # after the subscriber already has the message: wait for them instead of racing.
    wait_until(lambda: uplink.stats().published >= 8, 5, "eight publishes counted")
    stats = uplink.stats()
    assert (stats.requeued, stats.published) == (2, 8)


@pytest.mark.broker
def test_a_malformed_or_ahead_watermark_changes_nothing_and_ahead_raises_a_fault(
    mosquitto: MosquittoBroker,
    outbox: Outbox,
    topics: Topics,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    board = StatusBoard({"lane_id": "lane-3"})
    append_crossings(outbox, topics, 3)
    uplink, _ = make_uplink(mosquitto.host, mosquitto.port, status=board)
    with caplog.at_level(logging.WARNING, logger="agent.uplink"):
        uplink.start()
        wait_until(lambda: outbox.stats().depth == 0, 5, "rows sent")
        publish_watermark(mosquitto, topics.ack, b'{"acked_seq": {"crossing": "three"}}')
        wait_until(lambda: "malformed acknowledgement" in caplog.text, 5, "the warning")
        publish_watermark(mosquitto, topics.ack, ack(50))
        wait_until(lambda: "ack_watermark_ahead" in board.active_faults(), 5, "the fault")
    assert outbox.stats().total_rows == 3
    assert outbox.stats().acked_seq == {}


def test_a_watermark_document_gives_the_acknowledged_seq_of_each_stream() -> None:
    payload = b'{"acked_seq": {"crossing": 42, "health": 0}, "updated_at": "2026-11-28T07:00:00Z"}'
    assert parse_watermarks(payload) == {"crossing": 42, "health": 0}


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b"{}",
        b'{"acked_seq": {}}',
        b'{"acked_seq": [42]}',
        b'{"acked_seq": {"crossing": "42"}}',
        b'{"acked_seq": {"crossing": 4.2}}',
        b'{"acked_seq": {"crossing": -1}}',
        b'{"acked_seq": {"crossing": true}}',
        b'{"acked_seq": {"": 3}}',
        b'{"acked_seq": {"crossing": 1, "health": null}}',
        b'{"acked_seq": {"crossing": 1}, "pad": "' + b"x" * 5000 + b'"}',
    ],
)
def test_anything_else_is_not_a_watermark_and_changes_nothing(payload: bytes) -> None:
    """One bad stream spoils the document: applying the others could hide a mixed-up ingest."""
    assert parse_watermarks(payload) is None
