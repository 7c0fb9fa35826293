"""MqttUplink on a real Mosquitto: ordered at-least-once delivery, stopping, the publisher thread."""

from __future__ import annotations

import logging
import os
import resource

import pytest

from agent.state.outbox import Outbox, OutboxRow
from agent.uplink import MqttUplink, UplinkState
from agent.wire.topics import Topics
from tests.support.broker import LOOPBACK, MosquittoBroker, Subscriber, free_port, wait_until
from tests.support.proxy import TcpProxy
from tests.uplink.conftest import UplinkFactory, append_crossings, seqs

pytestmark = pytest.mark.broker


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
        with caplog.at_level(logging.ERROR, logger="agent.uplink"):
            append_crossings(outbox, topics, 1)
            uplink.notify()
            recorder.wait_for(UplinkState.FAILED)
        subscriber.wait_until(
            lambda received: [m.payload for m in received][-1:] == [b"offline"], 10, "offline"
        )
    assert recorder.history[-1] is UplinkState.FAILED
    assert any("publisher thread failed" in record.getMessage() for record in caplog.records)
    assert outbox.stats().depth == 1  # never marked sent: it goes out after the restart
