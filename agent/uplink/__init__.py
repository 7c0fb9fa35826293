"""Uplink to central ops: the lane's MQTT v5 session.

:class:`MqttUplink` publishes the pending rows of the lane's durable outbox at QoS 1, marks them
sent on a successful PUBACK and applies central's acknowledgement watermarks; it also publishes
the lane's availability, its status and its live crossing events. Topic strings come from
``agent.wire.topics`` only; what every MQTT client of the agent shares (building a client, TLS,
reason codes, back-off) is in :mod:`agent.mqtt`.

Where to find each part:

* :mod:`~agent.uplink.publisher`: :class:`MqttUplink` itself, the API the service calls (start,
  notify, stop, stats) and the publisher thread's loop, which drives everything below;
* :mod:`~agent.uplink.connection`: the connection, a fresh paho client each time, its callbacks,
  the reconnect back-off and what is re-sent after a reconnect;
* :mod:`~agent.uplink.window`: the send window: which outbox rows are handed to paho, in what
  order, how many, and the holds on rows and topics the broker refused;
* :mod:`~agent.uplink.marker`: marking acknowledged rows sent, in batches, on a thread of its own;
* :mod:`~agent.uplink.confirmation`: central ingest's acknowledgement watermarks, and re-queueing
  what ingest has not confirmed after a reconnect;
* :mod:`~agent.uplink.control`: availability (``online``, the ``offline`` will, ``stopped``) and
  the status document;
* :mod:`~agent.uplink.live_feed` and :mod:`~agent.uplink.live_sending`: live crossing events, from
  the engine thread to the session;
* :mod:`~agent.uplink.stopping`: a clean stop, step by step;
* :mod:`~agent.uplink.events` and :mod:`~agent.uplink.stats`: what other threads hand the
  publisher, and what the uplink reports (state, counters, faults).
"""

from agent.mqtt import TlsFiles
from agent.uplink.publisher import MqttUplink
from agent.uplink.stats import (
    FAULT_ACK_AHEAD,
    FAULT_OUTBOX_ERROR,
    FAULT_PUBLISH_REFUSED,
    UplinkState,
    UplinkStats,
)
from agent.wire.topics import (
    DEFAULT_PREFIX,
    InvalidTopicPartError,
    Topics,
    all_crossings_filter,
    shared_subscription,
)

__all__ = [
    "DEFAULT_PREFIX",
    "FAULT_ACK_AHEAD",
    "FAULT_OUTBOX_ERROR",
    "FAULT_PUBLISH_REFUSED",
    "InvalidTopicPartError",
    "MqttUplink",
    "TlsFiles",
    "Topics",
    "UplinkState",
    "UplinkStats",
    "all_crossings_filter",
    "shared_subscription",
]
