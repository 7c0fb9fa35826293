"""Uplink to central ops: the lane's MQTT v5 session.

:class:`MqttUplink` publishes the pending rows of the lane's durable outbox (``agent.state``) at
QoS 1, marks them sent on a successful PUBACK and applies central's acknowledgement watermarks;
it also publishes the lane's status and its live crossing events (``live_feed``). Topic strings
come from ``agent.wire.topics`` only.
"""

from agent.uplink.publisher import MqttUplink, TlsFiles, UplinkState, UplinkStats
from agent.wire.topics import (
    DEFAULT_PREFIX,
    InvalidTopicPartError,
    Topics,
    all_crossings_filter,
    shared_subscription,
)

__all__ = [
    "DEFAULT_PREFIX",
    "InvalidTopicPartError",
    "MqttUplink",
    "TlsFiles",
    "Topics",
    "UplinkState",
    "UplinkStats",
    "all_crossings_filter",
    "shared_subscription",
]
