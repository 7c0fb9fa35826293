"""What the uplink reports: where it is (:class:`UplinkState`), its counters (:class:`UplinkStats`)
and the faults it raises on the lane's status board.

Every part of the uplink runs on the publisher thread and counts into one :class:`Counters`;
other threads read it through :meth:`MqttUplink.stats` and the status document's ``uplink``
section, under ``Counters.lock``.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from agent.status import iso_time

FAULT_PUBLISH_REFUSED = "publish_refused"
"""The broker refused an outbox row (an ACL, say); rows are kept and retried with back-off."""
FAULT_OUTBOX_ERROR = "outbox_error"
"""Reading or writing the outbox failed; retried every second."""
FAULT_ACK_AHEAD = "ack_watermark_ahead"
"""Ingest confirmed a sequence number this outbox never handed out; the watermark is ignored."""


class UplinkState(enum.Enum):
    """Where the uplink is; reported through ``on_state_change`` from the publisher thread."""

    NOT_STARTED = "not_started"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    """Not connected, waiting for the next attempt."""
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    """The publisher thread died on an unexpected error (logged); the service should restart."""


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """Counters since start(), for health reporting."""

    state: UplinkState
    in_flight: int
    """Outbox rows handed to paho and awaiting PUBACK (paho keeps at most in_flight_limit of
    them on the wire and queues the rest, up to a few windows' worth)."""
    in_flight_limit: int
    """max_inflight, lowered to the broker's Receive Maximum once connected."""
    held_back: int
    """Rows the broker refused, waiting out their back-off."""
    published: int
    """PUBLISH packets sent for outbox rows, re-sends included."""
    delivered: int
    """Rows acknowledged with a success reason code."""
    refused: int
    """PUBACKs with a failure reason code (outbox rows and availability messages)."""
    connects: int
    """Successful CONNACKs."""
    connection_losses: int
    """Established connections that dropped."""
    last_refusal: str | None
    """Name of the last refusal reason code, e.g. 'Not authorized'."""
    acks: int
    """Acknowledgement watermarks applied."""
    confirmed: int
    """Outbox rows removed because central ingest confirmed them."""
    requeued: int
    """Rows made pending again after a reconnect because ingest had not confirmed them."""
    status_published: int
    """Status documents published."""
    rows_read: int = 0
    """Pending rows read from the outbox (payloads included), re-reads included."""


@dataclass(slots=True)
class Counters:
    """The uplink's state, counters and gauges, written on the publisher thread; hold ``lock`` for
    both writing and reading."""

    state: UplinkState = UplinkState.NOT_STARTED
    published: int = 0
    delivered: int = 0
    refused: int = 0
    connects: int = 0
    connection_losses: int = 0
    last_refusal: str | None = None
    acks: int = 0
    confirmed: int = 0
    requeued: int = 0
    status_published: int = 0
    rows_read: int = 0
    connected_since: float | None = None
    last_connect_failure: str | None = None
    in_flight: int = 0
    in_flight_limit: int = 0
    held_back: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count_refusal(self, reason: ReasonCode) -> None:
        """A PUBACK with a failure reason code, for any message the uplink published."""
        with self.lock:
            self.refused += 1
            self.last_refusal = str(reason)

    def snapshot(self) -> UplinkStats:
        """The counters and gauges as :class:`UplinkStats`, from any thread."""
        with self.lock:
            return UplinkStats(
                state=self.state,
                in_flight=self.in_flight,
                in_flight_limit=self.in_flight_limit,
                held_back=self.held_back,
                published=self.published,
                delivered=self.delivered,
                refused=self.refused,
                connects=self.connects,
                connection_losses=self.connection_losses,
                last_refusal=self.last_refusal,
                acks=self.acks,
                confirmed=self.confirmed,
                requeued=self.requeued,
                status_published=self.status_published,
                rows_read=self.rows_read,
            )

    def status_section(self, broker: str) -> Mapping[str, Any]:
        """The ``uplink`` section of the status document, from any thread."""
        with self.lock:
            since = self.connected_since
            return {
                "state": self.state.value,
                "broker": broker,
                "connected_since": None if since is None else iso_time(since),
                "last_connect_failure": self.last_connect_failure,
                "in_flight": self.in_flight,
                "held_back": self.held_back,
                "published": self.published,
                "delivered": self.delivered,
                "refused": self.refused,
                "last_refusal": self.last_refusal,
                "connects": self.connects,
                "connection_losses": self.connection_losses,
                "acks": self.acks,
                "confirmed": self.confirmed,
                "requeued": self.requeued,
            }
