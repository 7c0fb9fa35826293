"""The uplink's own retained messages: availability and the lane's status document.

Availability (``…/availability``, retained) carries ``online`` on every connect, ``offline`` as the
last will, published by the broker when the connection dies without a DISCONNECT, and ``stopped``
on a clean stop. If ``stopped`` could not be delivered, the DISCONNECT asks the broker to publish
the ``offline`` will instead, so the retained availability never claims ``online`` for a stopped
agent.

Status: with a :class:`~agent.status.StatusBoard`, the uplink contributes its ``uplink`` section,
raises and clears its faults (:mod:`agent.uplink.stats`) and publishes the board's document,
retained, on the status topic: at once when something changed (at most every
``_STATUS_MIN_GAP_S``), and every ``status_interval_s`` regardless. While rows are being refused
the status still goes out first, so the alarm gets through.

Both take slots of the send window (:mod:`agent.uplink.window`) like any message.
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt import FAILURE_THRESHOLD
from agent.status import StatusBoard
from agent.uplink.stats import Counters
from agent.uplink.window import SendWindow
from agent.wire.topics import AVAILABILITY_STOPPED, Topics

log = logging.getLogger(__name__)

_STATUS_MIN_GAP_S = 0.5  # status changes closer together than this are published as one


class ControlMessages:
    """Publishes availability and status on the publisher thread, and follows their PUBACKs."""

    def __init__(
        self,
        window: SendWindow,
        topics: Topics,
        counters: Counters,
        *,
        status: StatusBoard | None,
        status_interval_s: float,
    ) -> None:
        self._window = window
        self._topics = topics
        self._counters = counters
        self._status = status
        self._status_interval_s = status_interval_s
        self.status_due = False
        """Something changed: publish the status document once the minimum gap has passed."""
        self._next_status_at = 0.0
        self._last_status_at = 0.0
        self._stopped_published = False
        self.stopped_acknowledged = False
        """The broker acknowledged ``stopped``: a normal DISCONNECT may discard the will."""

    def publish(self, client: mqtt.Client, payload: bytes, topic: str | None = None) -> None:
        """Publish a retained control message (availability by default, or the status).

        Callers check the window's room_for_control() first, except for 'online' right after the
        CONNACK, when nothing is in flight yet on the fresh client.
        """
        topic = topic or self._topics.availability
        info = client.publish(topic, payload, qos=1, retain=True)
        self._window.control[info.mid] = (topic, payload)

    def say_stopped(self, client: mqtt.Client) -> None:
        """Publish the retained ``stopped`` availability once, as soon as the window has room."""
        if not self._stopped_published and self._window.room_for_control():
            self.publish(client, AVAILABILITY_STOPPED)
            self._stopped_published = True

    def status_publish_at(self) -> float | None:
        """When the next status document is due (monotonic); None without a status board or while
        the window has no room (the PUBACK that frees a slot wakes the publisher)."""
        if self._status is None or not self._window.room_for_control():
            return None
        return self._publish_at()

    def _publish_at(self) -> float:
        if self.status_due:
            return min(self._next_status_at, self._last_status_at + _STATUS_MIN_GAP_S)
        return self._next_status_at

    def publish_status(self, client: mqtt.Client, now: float) -> None:
        """Publish the status document if it is due and the window has room."""
        if self._status is None or now < self._publish_at():
            return
        if not self._window.room_for_control():
            return  # still due: a PUBACK frees a slot and wakes the loop
        self.status_due = False
        self._last_status_at = now
        self._next_status_at = now + self._status_interval_s
        self._window.update_gauges()  # the document shows the gauges as of now
        self.publish(client, self._status.encode(), self._topics.status)
        with self._counters.lock:
            self._counters.status_published += 1

    def on_published(self, mid: int, reason: ReasonCode) -> bool:
        """A PUBACK for a control message; False: not one of theirs."""
        sent = self._window.control.pop(mid, None)
        if sent is None:
            return False
        topic, payload = sent
        if reason.value >= FAILURE_THRESHOLD:
            self._counters.count_refusal(reason)
            log.warning("broker refused a retained message on %s: %s", topic, reason)
        elif topic == self._topics.availability and payload == AVAILABILITY_STOPPED:
            self.stopped_acknowledged = True
        return True
