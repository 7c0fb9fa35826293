"""The ingest's paho client (central.mqtt.IngestClient) against a real Mosquitto: it receives what
a lane publishes byte for byte, and ``ack_many`` acknowledges exactly the messages it names."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from central.mqtt import BrokerSettings, IngestClient, fast_path_available, new_client
from tests.support.broker import MosquittoBroker

pytestmark = pytest.mark.broker

TOPIC = "lane-agent/v1/P1/L1/crossing"
Received = tuple[int, int, str, bytes]


class Consumer:
    """An IngestClient with a persistent session; what it receives lands on a queue."""

    def __init__(self, broker: MosquittoBroker, client_id: str = "central-ingest-test") -> None:
        client = new_client(
            BrokerSettings(broker.host, broker.port), client_id, manual_ack=True,
            client_class=IngestClient,
        )  # fmt: skip
        assert isinstance(client, IngestClient)
        self.client = client
        self.received: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self._subscribed = threading.Event()
        client.on_publish_received = lambda *message: self.received.put(message)
        self.connects = 0
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 3600
        properties.ReceiveMaximum = 1000  # as the ingest: many messages awaiting their PUBACK
        client.connect(broker.host, broker.port, clean_start=False, properties=properties)
        client.loop_start()
        assert self._subscribed.wait(5), "no SUBACK"

    def _on_connect(self, client: mqtt.Client, *_args: object) -> None:
        self.connects += 1
        client.subscribe(TOPIC, qos=1)

    def take(self, count: int) -> list[Received]:
        return [self.received.get(timeout=5) for _ in range(count)]

    def sync(self) -> None:
        """Returns once the broker has processed everything sent before (it answers in order)."""
        self._subscribed.clear()
        self.client.subscribe("lane-agent/v1/sync", qos=1)
        assert self._subscribed.wait(5), "no SUBACK"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def new_publisher(broker: MosquittoBroker) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


@pytest.fixture
def publisher(mosquitto: MosquittoBroker) -> Iterator[mqtt.Client]:
    client = new_publisher(mosquitto)
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: mqtt.Client, payload: bytes, qos: int = 1, **properties: object) -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in properties.items():
        setattr(props, name, value)
    client.publish(TOPIC, payload, qos=qos, properties=props).wait_for_publish(5)


def test_the_paho_internals_the_fast_path_uses_are_there() -> None:
    """Fails on a paho release that moved them: the ingest would run, slower, on stock paho."""
    assert fast_path_available()


def test_every_message_arrives_byte_for_byte_whatever_its_size_properties_and_qos(
    mosquitto: MosquittoBroker, publisher: mqtt.Client
) -> None:
    consumer = Consumer(mosquitto)
    large = bytes(range(256)) * 1000  # 256 kB: several reads of the 64 KiB buffer
    publish(publisher, b"plain")
    publish(publisher, b"", qos=1)
    publish(publisher, large)
    publish(
        publisher, b"with properties", UserProperty=[("k", "v" * 300)], MessageExpiryInterval=60,
        ContentType="application/json", PayloadFormatIndicator=1,
    )  # fmt: skip
    publish(publisher, b"at most once", qos=0)
    burst = [f"burst {n:04d}".encode() * 20 for n in range(500)]  # many packets in one read
    for payload in burst:
        publisher.publish(TOPIC, payload, qos=1)
    received = consumer.take(5 + len(burst))
    assert [(qos, topic, payload) for _mid, qos, topic, payload in received] == [
        (1, TOPIC, b"plain"),
        (1, TOPIC, b""),
        (1, TOPIC, large),
        (1, TOPIC, b"with properties"),
        (0, TOPIC, b"at most once"),
        *((1, TOPIC, payload) for payload in burst),
    ]
    assert len({mid for mid, qos, *_ in received if qos == 1}) == 4 + len(burst)
    consumer.client.ack_many(mid for mid, qos, *_ in received if qos == 1)
    consumer.close()


def test_ack_many_acknowledges_exactly_the_messages_it_names(
    mosquitto: MosquittoBroker, publisher: mqtt.Client
) -> None:
    consumer = Consumer(mosquitto)
    for n in range(10):
        publish(publisher, f"event {n}".encode())
    received = consumer.take(10)
    consumer.client.ack_many(mid for mid, *_ in received[:6])
    consumer.sync()
    consumer.close()
    again = Consumer(mosquitto)  # the same session: the broker re-sends what was not acknowledged
    resent = again.take(4)
    assert [payload for *_, payload in resent] == [f"event {n}".encode() for n in range(6, 10)]
    again.client.ack_many(mid for mid, *_ in resent)
    again.sync()
    again.close()
    third = Consumer(mosquitto)
    with pytest.raises(queue.Empty):
        third.received.get(timeout=0.5)
    third.close()


def test_after_the_broker_restarts_the_client_reconnects_and_receives_again(
    mosquitto: MosquittoBroker, publisher: mqtt.Client
) -> None:
    consumer = Consumer(mosquitto)
    publish(publisher, b"before")
    (before,) = consumer.take(1)
    consumer.client.ack_many([before[0]])
    mosquitto.kill()  # mid-stream: whatever the client had read of the connection is void
    mosquitto.start()
    deadline = time.monotonic() + 10
    while consumer.connects < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert consumer.connects == 2
    consumer.sync()
    again = new_publisher(mosquitto)
    try:
        publish(again, b"after")
        (after,) = consumer.take(1)
    finally:
        again.disconnect()
        again.loop_stop()
    assert (after[2], after[3]) == (TOPIC, b"after")
    consumer.close()
