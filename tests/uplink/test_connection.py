"""The uplink's connection on a real Mosquitto: outages, reconnects and what is re-sent, silent
links, unusable TLS files."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.state.outbox import Outbox
from agent.uplink import TlsFiles, UplinkState
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.support.proxy import TcpProxy
from tests.uplink.conftest import UplinkFactory, append_crossings, seqs

pytestmark = pytest.mark.broker


def first_occurrences(numbers: list[int]) -> list[int]:
    """The order in which distinct values first arrived (re-sends after a reconnect repeat some)."""
    return list(dict.fromkeys(numbers))


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


def test_a_tls_file_that_cannot_be_read_is_logged_and_retried_not_fatal(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = tmp_path / "nope.pem"
    uplink, recorder = make_uplink(
        mosquitto.host, mosquitto.port, tls=TlsFiles(missing, missing, missing)
    )
    with caplog.at_level(logging.WARNING, logger="agent.uplink"):
        uplink.start()
        recorder.wait_for(UplinkState.DISCONNECTED)
        wait_until(lambda: "TLS files unusable" in caplog.text, 5, "the log line")
    assert uplink.state in (UplinkState.DISCONNECTED, UplinkState.CONNECTING)
