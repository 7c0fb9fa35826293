"""MQTT v5 clients for central: one place for the broker address, TLS and mutual TLS.

With the shipped broker config (config/mosquitto/) every client presents a certificate signed by
the lane CA, and its CN is its identity: ``central-ingest-N`` for ingest worker N,
``central-cache`` for the bundle publisher (see the ACL). The broker forces the client id to that
identity, so two workers need two certificates.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket


class TlsFilesError(ValueError):
    """A TLS option names a file that cannot be used (the message names it)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Verify the broker with ``ca_file``; with ``cert_file``/``key_file``, present a client
    certificate (mutual TLS, what the shipped broker config requires)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def check(self) -> None:
        """Fail early, naming the file, rather than at the first connect."""
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsFilesError("a client certificate needs both --tls-cert and --tls-key")
        for label, path in (
            ("CA", self.ca_file),
            ("certificate", self.cert_file),
            ("key", self.key_file),
        ):
            if path is not None and not path.is_file():
                raise TlsFilesError(f"TLS {label} file {path} does not exist or is not a file")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsSettings | None = None
    username: str | None = None
    keepalive_s: int = 30

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls else "")


def new_client(
    broker: BrokerSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    client_class: type[mqtt.Client] = mqtt.Client,
) -> mqtt.Client:
    """An MQTT v5 paho client for ``broker`` (not connected); TLS set up when configured."""
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username)
    if broker.tls is not None:
        broker.tls.check()
        client.tls_set(
            ca_certs=str(broker.tls.ca_file),
            certfile=None if broker.tls.cert_file is None else str(broker.tls.cert_file),
            keyfile=None if broker.tls.key_file is None else str(broker.tls.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client


PublishReceived = Callable[[int, int, str, bytes], None]
"""Called on paho's network thread for each PUBLISH: (message id, QoS, topic, payload)."""

_PUBACK = struct.Struct("!BBH")
_TOPIC_LENGTH = struct.Struct("!H")
_READ_SIZE = 65536
_PAHO_HOOKS = ("_sock_recv", "_sock_close", "_handle_publish", "_packet_queue", "_in_packet")


def fast_path_available() -> bool:
    """Whether this paho has the internals :class:`IngestClient` relies on (paho 2.1/2.2 do)."""
    probe = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    return all(hasattr(probe, name) for name in _PAHO_HOOKS)


class IngestClient(mqtt.Client):
    """paho for a consumer of many small QoS 1 messages, without three per-message costs.

    Profiling an ingest worker showed half its CPU in paho's receive path. Stock paho reads each
    packet with three or four ``recv`` calls (command byte, length bytes, body), decodes every
    PUBLISH into a ``Properties`` object and an ``MQTTMessage``, runs the subscription matcher
    and logs it, and sends each PUBACK with a ``send`` of its own. This subclass:

    * reads the socket in 64 KiB chunks and hands paho's packet reader slices of that buffer
      (``loop_read`` goes on while the buffer holds data, since ``select`` cannot see it);
    * decodes a QoS 0/1 PUBLISH itself — topic, message id, payload; the MQTT v5 properties are
      skipped (this client announces no Topic Alias Maximum, so the broker sends full topics) —
      and passes it to ``on_publish_received``; QoS 2 goes through stock paho;
    * acknowledges many messages with one write (:meth:`ack_many`), same PUBACK packets.

    Everything else (connect, subscribe, keepalive, reconnect, TLS, outgoing publishes) is
    stock paho. These are paho internals: :func:`fast_path_available` checks they are there,
    and the ingest falls back to the stock client when they are not.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_publish_received: PublishReceived | None = None
        self._read_buffer = b""
        self._read_at = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buffer, at = self._read_buffer, self._read_at
        if at >= len(buffer):
            buffer = super()._sock_recv(_READ_SIZE)  # BlockingIOError when nothing is there
            if not buffer:
                return buffer  # the broker closed the connection
            at = 0
        end = at + bufsize
        self._read_buffer, self._read_at = buffer, min(end, len(buffer))
        return buffer[at:end]

    def _sock_close(self) -> None:
        self._read_buffer, self._read_at = b"", 0  # bytes of a closed connection mean nothing
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        result = super().loop_read(max_packets)
        while (
            result == MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._sock is not None
            and self._read_at < len(self._read_buffer)
        ):
            result = super().loop_read(max_packets)
        return result

    def _handle_publish(self) -> MQTTErrorCode:
        command = self._in_packet["command"]
        qos = (command & 0x06) >> 1
        receiver = self.on_publish_received
        if receiver is None or qos == 2 or self._protocol != MQTTProtocolVersion.MQTTv5:
            return super()._handle_publish()
        packet = self._in_packet["packet"]
        try:
            (topic_length,) = _TOPIC_LENGTH.unpack_from(packet, 0)
            at = 2 + topic_length
            topic = bytes(packet[2:at]).decode("utf-8", errors="replace")
            mid = 0
            if qos:
                (mid,) = _TOPIC_LENGTH.unpack_from(packet, at)
                at += 2
            properties_length, at = _read_varint(packet, at)
            at += properties_length
            if at > len(packet):
                raise MalformedPacket("PUBLISH properties run past the packet")
        except (struct.error, IndexError) as error:
            raise MalformedPacket(f"PUBLISH too short: {error}") from error
        receiver(mid, qos, topic, bytes(packet[at:]))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK (success) for each QoS 1 message id, written to the socket together."""
        packets = b"".join([_PUBACK.pack(0x40, 2, mid) for mid in mids])
        if packets:
            self._packet_queue(0x40, packets, 0, 0)


def _read_varint(packet: bytes | bytearray, at: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``at``: (value, position after it)."""
    value, shift = 0, 0
    for _ in range(4):
        byte = packet[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    raise MalformedPacket("variable byte integer longer than 4 bytes")
