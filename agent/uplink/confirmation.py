"""End-to-end confirmation: central ingest's acknowledgement watermarks, and what they release.

A PUBACK only says the broker has a row. After each CONNACK the uplink subscribes to the lane's
acknowledgement topic, where central ingest keeps a retained watermark per stream: the highest
sequence number up to which it has stored every event (docs/delivery.md)::

    {"acked_seq": {"crossing": 42, "health": 7}}

Each watermark deletes the confirmed rows from the outbox. Rows the broker acknowledged but
ingest has not confirmed are made pending again after every reconnect, because a broker that
crashed may have lost them; a stream that no ingest has ever confirmed is exempt (it keeps the
retention window instead). A watermark beyond the last sequence number this outbox handed out
belongs to another numbering (an outbox replaced after damage, or ingest's state mixed up): it is
not applied, and the ``ack_watermark_ahead`` fault is raised until a sane one arrives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import paho.mqtt.client as mqtt

from agent.status import StatusBoard
from agent.uplink.stats import FAULT_ACK_AHEAD, Counters
from agent.uplink.store import RowStore

log = logging.getLogger(__name__)

_MAX_ACK_PAYLOAD = 4096  # a watermark document is tens of bytes; anything huge is not one


def parse_watermarks(payload: bytes) -> dict[str, int] | None:
    """``{"acked_seq": {"crossing": 42, ...}}`` → ``{"crossing": 42}``; None if not that shape."""
    if len(payload) > _MAX_ACK_PAYLOAD:
        return None
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    acked = document.get("acked_seq")
    if not isinstance(acked, dict) or not acked:
        return None
    watermarks: dict[str, int] = {}
    for stream, seq in acked.items():
        if not isinstance(stream, str) or not stream:
            return None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            return None
        watermarks[stream] = seq
    return watermarks


class Confirmations:
    """Applies watermarks to the outbox and re-queues what ingest has not confirmed."""

    def __init__(
        self,
        outbox: RowStore,
        ack_topic: str,
        counters: Counters,
        *,
        status: StatusBoard | None,
        storage_errors: tuple[type[Exception], ...],
        storage_failed: Callable[[str, Exception], None],
    ) -> None:
        self._outbox = outbox
        self._ack_topic = ack_topic
        self._counters = counters
        self._status = status
        self._storage_errors = storage_errors
        self._storage_failed = storage_failed

    def subscribe(self, client: mqtt.Client) -> None:
        """After a CONNACK: the retained watermark arrives right after the SUBACK."""
        client.subscribe(self._ack_topic, qos=1)

    def requeue(self) -> int:
        """Make rows sent but not confirmed pending again (after a reconnect); how many."""
        try:
            requeued = self._outbox.requeue_unconfirmed()
        except self._storage_errors as error:
            self._storage_failed("re-queueing unconfirmed rows", error)
            return 0
        if requeued:
            log.info("%d rows sent but not confirmed by ingest go out again", requeued)
            with self._counters.lock:
                self._counters.requeued += requeued
        return requeued

    def apply(self, payload: bytes) -> bool:
        """Apply central ingest's retained watermark document; True when rows were removed."""
        watermarks = parse_watermarks(payload)
        if watermarks is None:
            log.warning(
                "ignored a malformed acknowledgement on %s (%d bytes)",
                self._ack_topic,
                len(payload),
            )
            return False
        removed_any = False
        for stream, acked_seq in watermarks.items():
            try:
                result = self._outbox.confirm(stream, acked_seq)
            except self._storage_errors as error:
                # The watermark comes again on the next reconnect; until then rows are kept.
                self._storage_failed("applying the acknowledgement watermark", error)
                return removed_any
            if result.ahead:
                log.error(
                    "ingest confirms stream %s up to seq %d, beyond the last seq this outbox handed "
                    "out: not applied (was the outbox replaced, or ingest's state mixed up?)",
                    stream,
                    acked_seq,
                )
                if self._status is not None:
                    self._status.raise_fault(
                        FAULT_ACK_AHEAD,
                        f"ingest watermark {acked_seq} for {stream} is ahead of this outbox",
                    )
                continue
            if self._status is not None:
                self._status.clear_fault(FAULT_ACK_AHEAD)
            with self._counters.lock:
                self._counters.acks += 1
                self._counters.confirmed += result.removed
            if result.removed:
                removed_any = True
                log.debug(
                    "ingest confirmed stream %s up to seq %d: %d rows removed",
                    stream,
                    acked_seq,
                    result.removed,
                )
        return removed_any
