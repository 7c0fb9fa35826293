"""The shared test infrastructure behaves as other suites assume: broker, subscriber, TCP proxy."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from tests.support.broker import LOOPBACK, MosquittoBroker, Subscriber, wait_until
from tests.support.proxy import TcpProxy

pytestmark = pytest.mark.broker


def publish_once(
    broker: MosquittoBroker, topic: str, payload: bytes, *, retain: bool = False
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_broker_listens_on_loopback_on_a_free_port_and_logs(mosquitto: MosquittoBroker) -> None:
    assert mosquitto.host == LOOPBACK
    assert mosquitto.port != 1883
    with socket.create_connection((mosquitto.host, mosquitto.port), 2):
        pass
    assert "running" in mosquitto.log_text()


def test_subscriber_collects_in_order_and_barrier_shows_nothing_else_arrived(
    mosquitto: MosquittoBroker,
) -> None:
    with Subscriber(mosquitto.host, mosquitto.port, "t/#") as subscriber:
        for number in range(5):
            publish_once(mosquitto, f"t/{number}", b"%d" % number)
        messages = subscriber.barrier()
    assert [(m.topic, m.payload, m.qos) for m in messages] == [
        (f"t/{n}", b"%d" % n, 1) for n in range(5)
    ]


def test_restarted_broker_keeps_port_retained_messages_and_subscriber_sessions(
    mosquitto: MosquittoBroker,
) -> None:
    port = mosquitto.port
    publish_once(mosquitto, "kept/retained", b"r", retain=True)
    with Subscriber(mosquitto.host, mosquitto.port, "kept/#") as subscriber:
        subscriber.wait_for(1)
        mosquitto.restart()
        assert mosquitto.port == port
        publish_once(mosquitto, "kept/after-restart", b"a")
        messages = subscriber.wait_for(2)
    assert [m.payload for m in messages] == [b"r", b"a"]
    assert messages[0].retain


def test_missing_mosquitto_fails_the_test_instead_of_skipping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.dev.broker.find_mosquitto", lambda: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install mosquitto"):
        MosquittoBroker(tmp_path)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A loopback server that echoes every byte back on each connection."""
    listener = socket.create_server((LOOPBACK, 0))
    connections: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connections.append(connection)
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    def echo(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(4096):
                connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()
    listener.close()
    for connection in connections:
        # shutdown, not close: recv() in the echo thread returns b"", then the thread closes.
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RDWR)


def receive_exactly(sock: socket.socket, count: int) -> bytes:
    received = b""
    while len(received) < count:
        chunk = sock.recv(count - len(received))
        assert chunk, "connection closed"
        received += chunk
    return received


def test_proxy_forwards_drops_silently_while_cut_and_forwards_again_after_resume(
    echo_server: tuple[str, int],
) -> None:
    with (
        TcpProxy(0, *echo_server) as proxy,
        socket.create_connection((proxy.host, proxy.port), 5) as sock,
    ):
        sock.settimeout(5)
        sock.sendall(b"before")
        assert receive_exactly(sock, 6) == b"before"

        proxy.cut()
        sock.sendall(b"lost")
        wait_until(lambda: proxy.dropped_bytes >= 4, 5, "the proxy to read and discard the bytes")
        assert proxy.dropped_bytes == 4
        assert proxy.connection_count == 1  # half-open: nothing was closed

        proxy.resume()
        sock.sendall(b"after")
        assert receive_exactly(sock, 5) == b"after"


def test_closing_the_proxy_closes_client_connections(echo_server: tuple[str, int]) -> None:
    proxy = TcpProxy(0, *echo_server)
    with socket.create_connection((proxy.host, proxy.port), 5) as sock:
        sock.settimeout(5)
        sock.sendall(b"x")
        assert receive_exactly(sock, 1) == b"x"
        proxy.close()
        assert sock.recv(1) == b""
