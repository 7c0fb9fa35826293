"""Uplink to central ops: a durable SQLite outbox drained over MQTT v5.

Every message is committed to the :class:`Outbox` first; :class:`MqttUplink` publishes pending rows
at QoS 1 and marks them sent on a successful PUBACK. :class:`Topics` is the only place topic names
are built.
"""

from agent.uplink.outbox import (
    Outbox,
    OutboxClosedError,
    OutboxError,
    OutboxRow,
    OutboxRowNotFoundError,
    OutboxSchemaError,
    OutboxStats,
)
from agent.uplink.publisher import MqttUplink, UplinkState, UplinkStats
from agent.uplink.topics import (
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
    "Outbox",
    "OutboxClosedError",
    "OutboxError",
    "OutboxRow",
    "OutboxRowNotFoundError",
    "OutboxSchemaError",
    "OutboxStats",
    "Topics",
    "UplinkState",
    "UplinkStats",
    "all_crossings_filter",
    "shared_subscription",
]
