"""Live crossing events through the uplink: not stored, dropped (counted) while the uplink is
down, never in the way of the outbox's crossings; the retained current vehicle always the
latest, cleared when the lane is empty, re-published after every reconnect."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.state.outbox import Outbox
from agent.status import StatusBoard
from agent.uplink.live_feed import LiveFeed
from agent.uplink.publisher import UplinkState
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.uplink.conftest import UplinkFactory, append_crossings, seqs

TOPICS = Topics("lane-agent/v1", "port-7", "lane-3")


def make_feed(**overrides: Any) -> LiveFeed:
    options: dict[str, Any] = {
        "message_expiry_s": 30,
        "current_expiry_s": 900,
        "clock": time.time,
        **overrides,
    }
    return LiveFeed(TOPICS, **options)


# --- the feed alone -------------------------------------------------------------------------


def test_a_live_event_offered_while_the_uplink_is_down_is_dropped_and_counted() -> None:
    feed = make_feed()
    assert feed.offer(b"1") is False
    assert feed.counters.dropped_offline == 1
    assert [m.topic for m in feed.take(10)] == [TOPICS.current]  # only the retained slot


def test_the_first_thing_published_is_the_retained_slot_then_live_events_in_order() -> None:
    feed = make_feed()
    feed.set_online(True)
    for payload in (b"1", b"2", b"3"):
        assert feed.offer(payload)
    taken = feed.take(10)
    assert [(m.topic, m.payload, m.retain) for m in taken] == [
        (TOPICS.current, b"", True),  # an empty lane clears what an earlier run left retained
        (TOPICS.live, b"1", False),
        (TOPICS.live, b"2", False),
        (TOPICS.live, b"3", False),
    ]
    assert [m.expiry_s for m in taken] == [900, 30, 30, 30]
    assert feed.take(10) == []


def test_when_more_wait_than_the_feed_holds_the_oldest_are_dropped() -> None:
    feed = make_feed(max_pending=3)
    feed.set_online(True)
    feed.take(1)
    for index in range(5):
        feed.offer(str(index).encode())
    assert [m.payload for m in feed.take(10)] == [b"2", b"3", b"4"]
    assert feed.counters.dropped_overflow == 2


def test_the_retained_slot_keeps_only_the_latest_value_and_publishes_a_change_once() -> None:
    feed = make_feed()
    feed.set_online(True)
    feed.take(10)
    feed.set_current(b"vehicle A rev 1")
    feed.set_current(b"vehicle A rev 2")
    assert [m.payload for m in feed.take(10)] == [b"vehicle A rev 2"]
    feed.set_current(b"vehicle A rev 2")
    assert feed.take(10) == []
    feed.set_current(None)
    assert [(m.payload, m.retain) for m in feed.take(10)] == [(b"", True)]


def test_after_a_reconnect_the_vehicle_at_the_booth_goes_out_again_on_both_topics() -> None:
    feed = make_feed()
    feed.set_online(True)
    feed.take(10)
    feed.offer(b"rev 3")
    feed.set_current(b"rev 3")
    feed.set_online(False)  # what waited is dropped
    assert feed.counters.dropped_offline == 1
    feed.offer(b"rev 4")  # dropped at once
    feed.set_current(b"rev 4")
    feed.set_online(True)
    assert [(m.topic, m.payload) for m in feed.take(10)] == [
        (TOPICS.current, b"rev 4"),
        (TOPICS.live, b"rev 4"),
    ]
    assert feed.counters.dropped_offline == 2


# --- through the uplink on a real broker ------------------------------------------------------


class RawSubscriber:
    """A plain paho subscriber that keeps each message's retain flag and expiry property."""

    def __init__(self, broker: MosquittoBroker, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes, bool, int | None]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic_filter, qos=1)
        self.client.loop_start()
        assert subscribed.wait(5), "no SUBACK"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        expiry = getattr(message.properties, "MessageExpiryInterval", None)
        with self._lock:
            self.messages.append(
                (message.topic, bytes(message.payload), bool(message.retain), expiry)
            )

    def received(self) -> list[tuple[str, bytes, bool, int | None]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def subscribers(mosquitto: MosquittoBroker) -> Iterator[Any]:
    made: list[RawSubscriber] = []

    def subscribe(topic_filter: str) -> RawSubscriber:
        subscriber = RawSubscriber(mosquitto, topic_filter)
        made.append(subscriber)
        return subscriber

    yield subscribe
    for subscriber in made:
        subscriber.close()


@pytest.mark.broker
def test_live_events_are_published_at_qos_1_with_an_expiry_and_the_current_vehicle_retained(
    mosquitto: MosquittoBroker, make_uplink: UplinkFactory, subscribers: Any
) -> None:
    feed = make_feed()
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, topics=TOPICS, live=feed)
    live = subscribers(TOPICS.live)
    uplink.start()
    recorder.wait_for(UplinkState.CONNECTED)
    wait_until(lambda: feed.counters.current_published == 1, 5, "the empty lane published")
    feed.offer(b'{"revision":1}')
    feed.set_current(b'{"revision":1}')
    wait_until(lambda: len(live.received()) == 1, 5, "the live event")
    [(topic, payload, retained, expiry)] = live.received()
    assert (topic, payload, retained) == (TOPICS.live, b'{"revision":1}', False)
    assert expiry is not None
    assert 0 < expiry <= 30
    wait_until(lambda: feed.counters.current_published == 2, 5, "the current vehicle")
    late = subscribers(TOPICS.current)  # a booth screen that starts now
    wait_until(lambda: len(late.received()) == 1, 5, "the retained current vehicle")
    [(topic, payload, retained, expiry)] = late.received()
    assert (topic, payload, retained) == (TOPICS.current, b'{"revision":1}', True)
    assert expiry is not None
    assert 0 < expiry <= 900
    feed.set_current(None)  # the lane is empty
    wait_until(lambda: feed.counters.current_published == 3, 5, "the lane cleared")
    wait_until(lambda: feed.counters.delivered == 1, 5, "the PUBACK counted")
    later = subscribers(TOPICS.current)
    time.sleep(0.3)
    assert later.received() == [], "an empty lane leaves nothing retained"
    assert feed.status()["vehicle_shown"] is False


@pytest.mark.broker
def test_while_the_broker_is_down_live_events_are_dropped_and_the_vehicle_comes_back_after(
    mosquitto: MosquittoBroker, make_uplink: UplinkFactory, subscribers: Any
) -> None:
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
    feed = make_feed()
    board.contribute("live", feed.status)
    uplink, recorder = make_uplink(
        mosquitto.host, mosquitto.port, topics=TOPICS, live=feed, status=board
    )
    uplink.start()
    recorder.wait_for(UplinkState.CONNECTED)
    mark = recorder.mark()
    mosquitto.stop()
    recorder.wait_for(UplinkState.DISCONNECTED, since=mark)
    for revision in range(1, 4):
        payload = f'{{"revision":{revision}}}'.encode()
        assert feed.offer(payload) is False
        feed.set_current(payload)
    assert board.snapshot()["live"]["dropped_offline"] == 3
    mark = recorder.mark()
    mosquitto.start()
    recorder.wait_for(UplinkState.CONNECTED, since=mark, timeout_s=15)
    wait_until(lambda: feed.counters.delivered == 1, 10, "the latest view re-published live")
    late = subscribers(TOPICS.current)
    wait_until(lambda: len(late.received()) == 1, 5, "the retained vehicle after the outage")
    assert late.received()[0][1:3] == (b'{"revision":3}', True)


@pytest.mark.broker
def test_a_flood_of_live_events_does_not_hold_back_or_reorder_the_crossings(
    mosquitto: MosquittoBroker,
    outbox: Outbox,
    make_uplink: UplinkFactory,
    subscribers: Any,
) -> None:
    feed = make_feed(max_pending=16)
    uplink, recorder = make_uplink(
        mosquitto.host, mosquitto.port, topics=TOPICS, live=feed, max_inflight=4
    )
    uplink.start()
    recorder.wait_for(UplinkState.CONNECTED)
    with Subscriber(mosquitto.host, mosquitto.port, TOPICS.crossing) as crossings:
        for index in range(300):
            feed.offer(b"live %d" % index)
            if index % 3 == 0:
                append_crossings(outbox, TOPICS, 1)
                uplink.notify()
        crossings.wait_for(100, timeout_s=20)
        messages = crossings.barrier()
    assert seqs(messages) == list(range(1, 101))
    counters = feed.counters
    wait_until(
        lambda: feed.counters.delivered + counters.dropped_overflow == 300, 10, "every offer"
    )
    assert counters.dropped_offline == 0
    assert uplink.stats().delivered == 100
