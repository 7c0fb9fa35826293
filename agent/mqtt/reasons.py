"""What the broker's reason codes mean to the agent (MQTT v5, CONNACK and PUBACK).

MQTT v5 (2.4) makes every reason code below 0x80 a success. paho reports a PUBACK the broker
refused (0x87 not authorised, say) as published all the same: only the reason code in
``on_publish`` shows the refusal, so callers compare it with :data:`FAILURE_THRESHOLD` themselves.
paho also ignores the Receive Maximum a broker announces in its CONNACK; a client that sends more
in-flight messages than that may be disconnected (0x93), so :func:`receive_maximum` hands it to
the caller to honour.
"""

from __future__ import annotations

from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

FAILURE_THRESHOLD = 0x80
"""MQTT v5 2.4: reason codes below this mean success."""

_CONNACK_HINTS = {
    0x85: "client identifier not valid",
    0x86: "check the username/password",
    0x87: "check that the broker's ACL lets this lane's certificate identity connect",
    0x88: "the broker is not accepting connections (starting up or overloaded)",
    0x8A: "this lane is banned on the broker",
    0x9F: "connection rate exceeded: back-off continues",
}


def succeeded(reason: ReasonCode) -> bool:
    """Whether a CONNACK, PUBACK or SUBACK reason code is a success."""
    return reason.value < FAILURE_THRESHOLD


def refusal_hint(reason: ReasonCode) -> str:
    """What an operator should check for the common CONNACK refusals: `` (hint)`` or ``""``."""
    hint = _CONNACK_HINTS.get(reason.value)
    return f" ({hint})" if hint else ""


def receive_maximum(properties: Properties | None) -> int | None:
    """The Receive Maximum a CONNACK announced; None when the broker left it out (no limit but
    65535, MQTT v5 3.2.2.3.3) or the connection is MQTT 3.1.1."""
    value = getattr(properties, "ReceiveMaximum", None)
    return None if value is None else int(value)
