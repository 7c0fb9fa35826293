"""A paho client the project's way, and a connection whose session the broker keeps.

Every client is MQTT v5 with paho's callback API 2. The session is kept across reconnects
(``clean_start=False`` with a session expiry interval): MQTT v5's defaults expire it the moment the
connection drops, and with it the subscriptions and the QoS 1 messages the broker queued for the
client (FACTS.md). Only sessions that connected with ``clean_start=False`` are persisted by
Mosquitto either.

paho's callbacks run inside its network loop with its locks held: callers give them no more work
than handing an event to their own queue (FACTS.md: blocking, waiting or publishing from a
callback is a long-standing source of deadlocks).
"""

from __future__ import annotations

from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt.tls import TlsFiles

MAX_SESSION_EXPIRY_S = 0xFFFFFFFF
"""MQTT v5 3.1.2.11.2: a four byte integer; the largest value means "never expires"."""

DISCONNECT_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
"""A DISCONNECT that asks the broker to publish the will anyway (a normal one discards it)."""


@dataclass(frozen=True, slots=True)
class Will:
    """The message the broker publishes for the client when its connection dies without a
    DISCONNECT (or with :data:`DISCONNECT_WITH_WILL`)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def new_client(
    client_id: str,
    *,
    tls: TlsFiles | None = None,
    username: str | None = None,
    password: str | None = None,
    will: Will | None = None,
    manual_ack: bool = False,
    reconnect_on_failure: bool = True,
) -> mqtt.Client:
    """An MQTT v5 paho client with the given identity, will and TLS; not connected yet.

    ``tls`` reads its files now (:meth:`TlsFiles.apply`: ``OSError`` when they are unusable).
    ``manual_ack`` leaves acknowledging received messages to the caller (after it has acted on
    them); ``reconnect_on_failure=False`` is for callers that reconnect themselves, with a fresh
    client each time.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=reconnect_on_failure,
        manual_ack=manual_ack,
    )
    if will is not None:
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
    if tls is not None:
        tls.apply(client)
    if username is not None:
        client.username_pw_set(username, password)
    return client


def session_properties(session_expiry_s: int) -> Properties:
    """CONNECT properties asking the broker to keep the session ``session_expiry_s`` after the
    connection ends."""
    if not 0 <= session_expiry_s <= MAX_SESSION_EXPIRY_S:
        raise ValueError(
            f"session_expiry_s must be 0..{MAX_SESSION_EXPIRY_S}, not {session_expiry_s!r}"
        )
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
    properties.SessionExpiryInterval = session_expiry_s
    return properties


def connect_keeping_session(
    client: mqtt.Client,
    host: str,
    port: int,
    *,
    keepalive: int,
    session_expiry_s: int,
    background: bool = False,
) -> None:
    """Connect with ``clean_start=False`` and a session expiry, so the broker keeps the session.

    ``background=False`` opens the socket and sends CONNECT now (``OSError``/``ssl.SSLError`` on
    failure; the CONNACK arrives through the network loop); ``background=True`` leaves that to
    paho's own loop thread (``loop_start``), which also reconnects. ``keepalive`` is what is
    negotiated with the broker (see :func:`paho_keepalive`).
    """
    properties = session_properties(session_expiry_s)
    if background:
        client.connect_async(
            host, port, keepalive=keepalive, clean_start=False, properties=properties
        )
    else:
        client.connect(host, port, keepalive=keepalive, clean_start=False, properties=properties)


def paho_keepalive(keepalive_s: int) -> int:
    """The MQTT keepalive to negotiate so a silent link is noticed within ``keepalive_s``.

    paho sends PINGREQ once nothing arrived for one keepalive and gives up one keepalive after
    that, checking about once a second: a dead link shows after 2 x keepalive + 1 s at worst.
    Negotiating half the configured value keeps detection within 1.5 x ``keepalive_s`` (for 5 s and
    up) at the cost of a ping every ``keepalive_s / 2`` on an idle lane: a few bytes.
    """
    return max(1, keepalive_s // 2)
