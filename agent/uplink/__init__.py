"""Uplink to central ops: a durable SQLite outbox drained over MQTT v5.

Every message is committed to the :class:`Outbox` first; :class:`MqttUplink` publishes pending rows
at QoS 1 and marks them sent on a successful PUBACK. :class:`Topics` is the only place topic names
are built.
"""

from agent.uplink.outbox import (
    PRIORITY_CROSSING,
    PRIORITY_HEALTH,
    PRIORITY_IMAGE,
    Outbox,
    OutboxClosedError,
    OutboxCorruptError,
    OutboxError,
    OutboxFullError,
    OutboxRow,
    OutboxRowNotFoundError,
    OutboxSchemaError,
    OutboxStats,
    open_outbox,
)
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
    "PRIORITY_CROSSING",
    "PRIORITY_HEALTH",
    "PRIORITY_IMAGE",
    "InvalidTopicPartError",
    "MqttUplink",
    "Outbox",
    "OutboxClosedError",
    "OutboxCorruptError",
    "OutboxError",
    "OutboxFullError",
    "OutboxRow",
    "OutboxRowNotFoundError",
    "OutboxSchemaError",
    "OutboxStats",
    "TlsFiles",
    "Topics",
    "UplinkState",
    "UplinkStats",
    "all_crossings_filter",
    "open_outbox",
    "shared_subscription",
]
