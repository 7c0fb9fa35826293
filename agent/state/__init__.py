"""The lane's durable state: one SQLite file holding the outbox (every crossing, committed before
anyone hears of it), the input journal (every controller input, journalled before it is
acknowledged) and the engine's checkpoints, with the migrations of files written by earlier
versions. See docs/delivery.md."""

from agent.state.outbox import (
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
)
from agent.state.recovery import QuarantinedOutbox, open_outbox

__all__ = [
    "PRIORITY_CROSSING",
    "PRIORITY_HEALTH",
    "PRIORITY_IMAGE",
    "Outbox",
    "OutboxClosedError",
    "OutboxCorruptError",
    "OutboxError",
    "OutboxFullError",
    "OutboxRow",
    "OutboxRowNotFoundError",
    "OutboxSchemaError",
    "OutboxStats",
    "QuarantinedOutbox",
    "open_outbox",
]
