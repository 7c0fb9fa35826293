"""End-to-end confirmation and the status topic, on a real Mosquitto."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.state.outbox import Outbox
from agent.status import StatusBoard
from agent.uplink.publisher import UplinkState
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.uplink.conftest import UplinkFactory, append_crossings, seqs

pytestmark = pytest.mark.broker


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
    with caplog.at_level(logging.WARNING, logger="agent.uplink.publisher"):
        uplink.start()
        wait_until(lambda: outbox.stats().depth == 0, 5, "rows sent")
        publish_watermark(mosquitto, topics.ack, b'{"acked_seq": {"crossing": "three"}}')
        wait_until(lambda: "malformed acknowledgement" in caplog.text, 5, "the warning")
        publish_watermark(mosquitto, topics.ack, ack(50))
        wait_until(lambda: "ack_watermark_ahead" in board.active_faults(), 5, "the fault")
    assert outbox.stats().total_rows == 3
    assert outbox.stats().acked_seq == {}


def test_status_is_retained_and_shows_the_uplink_and_faults_and_follows_changes(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
    board.contribute("outbox", lambda: {"depth": outbox.stats().depth})
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, status=board)
    uplink.start()
    recorder.wait_for(UplinkState.CONNECTED)
    wait_until(lambda: uplink.stats().status_published >= 1, 5, "a first status")
    # A subscriber that comes later still gets the latest document: it is retained.
    with Subscriber(mosquitto.host, mosquitto.port, topics.status) as subscriber:
        first = json.loads(subscriber.wait_for(1)[0].payload)
        assert first["uplink"]["state"] == "connected"
        assert first["faults"] == []
        assert subscriber.messages[0].retain
        board.raise_fault("outbox_full", "crossings cannot be stored (cap)")
        messages = subscriber.wait_until(
            lambda received: any(b"outbox_full" in m.payload for m in received), 5, "the fault"
        )
    latest = json.loads(messages[-1].payload)
    assert latest["last_fault"]["code"] == "outbox_full"
    assert latest["outbox"] == {"depth": 0}


def test_a_tls_file_that_cannot_be_read_is_logged_and_retried_not_fatal(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent.uplink.publisher import TlsFiles

    missing = tmp_path / "nope.pem"
    uplink, recorder = make_uplink(
        mosquitto.host, mosquitto.port, tls=TlsFiles(missing, missing, missing)
    )
    with caplog.at_level(logging.WARNING, logger="agent.uplink.publisher"):
        uplink.start()
        recorder.wait_for(UplinkState.DISCONNECTED)
        wait_until(lambda: "TLS files unusable" in caplog.text, 5, "the log line")
    assert uplink.state in (UplinkState.DISCONNECTED, UplinkState.CONNECTING)
