"""Clients built the project's way, and sessions the broker keeps across reconnects."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt import (
    MAX_SESSION_EXPIRY_S,
    Will,
    connect_keeping_session,
    new_client,
    paho_keepalive,
)
from agent.mqtt.client import session_properties
from tests.support.broker import MosquittoBroker


def test_a_client_speaks_mqtt_v5_with_the_will_and_credentials_given() -> None:
    client = new_client(
        "lane-agent-port-7-lane-3",
        username="lane-3",
        password="secret",  # noqa: S106  # a made-up credential, never sent anywhere
        will=Will("lane-agent/v1/port-7/lane-3/availability", b"offline"),
    )
    assert client.protocol == MQTTProtocolVersion.MQTTv5
    assert (client.username, client.password) == ("lane-3", "secret")
    assert client.will_topic == "lane-agent/v1/port-7/lane-3/availability"
    assert client.will_payload == b"offline"


def test_a_client_without_a_will_or_credentials_sets_none() -> None:
    client = new_client("plain")
    assert not client.will_topic  # paho's "no will"
    assert client.username is None


@pytest.mark.parametrize(
    ("configured", "negotiated"), [(1, 1), (2, 1), (5, 2), (30, 15), (65535, 32767)]
)
def test_half_the_configured_keepalive_is_negotiated_so_a_dead_link_shows_in_time(
    configured: int, negotiated: int
) -> None:
    assert paho_keepalive(configured) == negotiated


@pytest.mark.parametrize("expiry", [-1, MAX_SESSION_EXPIRY_S + 1])
def test_a_session_expiry_mqtt_cannot_carry_is_rejected(expiry: int) -> None:
    with pytest.raises(ValueError, match="session_expiry_s"):
        session_properties(expiry)


class Session:
    """One connection of a client id that keeps its session; records the CONNACK and messages."""

    def __init__(self, broker: MosquittoBroker, client_id: str, expiry_s: int) -> None:
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.messages: list[bytes] = []
        self.received = threading.Event()
        self.client = new_client(client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        connect_keeping_session(
            self.client, broker.host, broker.port, keepalive=30, session_expiry_s=expiry_s
        )
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        _reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self.session_present = flags.session_present
        self.connected.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.append(bytes(message.payload))
        self.received.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish_once(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    client = new_client("publisher")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.broker
def test_a_kept_session_gets_what_was_published_while_the_client_was_away(
    mosquitto: MosquittoBroker,
) -> None:
    first = Session(mosquitto, "keeper", expiry_s=60)
    first.client.subscribe("lane-agent-tests/kept", qos=1)
    first.client.publish("lane-agent-tests/kept", b"ready", qos=1).wait_for_publish(5)
    assert first.received.wait(5), "the subscription never delivered"
    first.close()
    publish_once(mosquitto, "lane-agent-tests/kept", b"while away")
    second = Session(mosquitto, "keeper", expiry_s=60)
    try:
        assert second.session_present is True
        assert second.received.wait(5), "the queued message never arrived"
        assert second.messages == [b"while away"]
    finally:
        second.close()


@pytest.mark.broker
def test_a_session_expiry_of_zero_lets_the_broker_forget_the_client_at_disconnect(
    mosquitto: MosquittoBroker,
) -> None:
    first = Session(mosquitto, "forgotten", expiry_s=0)
    first.close()
    second = Session(mosquitto, "forgotten", expiry_s=0)
    try:
        assert second.session_present is False
    finally:
        second.close()
