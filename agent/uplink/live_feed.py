"""Live crossing messages on their way from the engine thread to the MQTT uplink.

Live events serve whoever is watching the lane now (the booth, central's live view); the final
crossing is the record and goes through the outbox. So live events are not stored: the engine
thread hands each to this feed, the publisher thread takes it on its next pass and publishes it
at QoS 1 if the session is up. While it is not, an event is dropped and counted at once (a booth
shown a vehicle minutes late is worse than one shown nothing); the same when the broker is so
slow that more than ``max_pending`` wait (the oldest goes). The publisher gives them at most a
few slots of its send window (``max_in_flight``), so they never hold back the outbox's crossings.

The retained ``current`` topic is a single slot, not a queue: the latest view of the vehicle at
the booth, or empty. It is published whenever it changed, and again after every (re)connect, so
that what the broker retains is never an older vehicle than the one at the booth, also after an
outage or a restart (the first value is "empty": a stale vehicle retained by an agent that died
is cleared as soon as this one connects, unless a restored vehicle replaces it).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.status import iso_time
from agent.wire.topics import Topics

DEFAULT_MAX_PENDING = 64
DEFAULT_MAX_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class LiveMessage:
    """One publish the uplink should make: topic, payload, retained or not, expiry (seconds)."""

    topic: str
    payload: bytes
    retain: bool
    expiry_s: int


@dataclass(slots=True)
class LiveCounters:
    offered: int = 0
    published: int = 0
    delivered: int = 0
    dropped_offline: int = 0
    dropped_overflow: int = 0
    refused: int = 0
    current_published: int = 0
    last_published_at: float | None = None


class LiveFeed:
    """Between the engine thread (:meth:`offer`, :meth:`set_current`) and the publisher thread
    (:meth:`take`, :meth:`set_online`, :meth:`published`, :meth:`acknowledged`)."""

    def __init__(
        self,
        topics: Topics,
        *,
        message_expiry_s: int,
        current_expiry_s: int,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        clock: Callable[[], float],
    ) -> None:
        if message_expiry_s < 1 or current_expiry_s < 1:
            raise ValueError("live message expiries must be at least 1 s")
        if max_pending < 1 or max_in_flight < 1:
            raise ValueError("max_pending and max_in_flight must be at least 1")
        self.topics = topics
        self.message_expiry_s = message_expiry_s
        self.current_expiry_s = current_expiry_s
        self.max_in_flight = max_in_flight
        self._max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: collections.deque[bytes] = collections.deque()
        self._current = b""
        self._current_due = True
        self._online = False
        self._wake: Callable[[], None] | None = None
        self.counters = LiveCounters()

    # Engine thread --------------------------------------------------------------------------

    def offer(self, payload: bytes) -> bool:
        """A live event for the ``live`` topic; False if it was dropped (the uplink is down)."""
        with self._lock:
            self.counters.offered += 1
            if not self._online:
                self.counters.dropped_offline += 1
                return False
            if len(self._pending) >= self._max_pending:
                self._pending.popleft()
                self.counters.dropped_overflow += 1
            self._pending.append(payload)
            wake = self._wake
        if wake is not None:
            wake()
        return True

    def set_current(self, payload: bytes | None) -> None:
        """The vehicle at the booth as retained on ``current`` (None: the lane is empty)."""
        value = payload or b""
        with self._lock:
            if value == self._current:
                return
            self._current = value
            self._current_due = True
            wake = self._wake if self._online else None
        if wake is not None:
            wake()

    # Publisher thread -----------------------------------------------------------------------

    def attach(self, wake: Callable[[], None] | None) -> None:
        """The uplink that publishes this feed: ``wake`` ends its wait (None: detach)."""
        with self._lock:
            self._wake = wake

    def set_online(self, online: bool) -> None:
        """The session came up or went down (what waits is dropped).

        On coming up the vehicle at the booth goes out again, retained on ``current`` and as
        its latest live event (the same revision again if that one did get out before): a booth
        subscribed through an outage, or a restart, is shown the vehicle at once.
        """
        with self._lock:
            was_online, self._online = self._online, online
            if online and not was_online:
                self._current_due = True
                if self._current:
                    self._pending.append(self._current)
            elif not online:
                self.counters.dropped_offline += len(self._pending)
                self._pending.clear()

    def take(self, room: int) -> list[LiveMessage]:
        """Up to ``room`` messages to publish now: the retained slot if due, then live events."""
        taken: list[LiveMessage] = []
        with self._lock:
            if room > 0 and self._current_due:
                self._current_due = False
                taken.append(
                    LiveMessage(self.topics.current, self._current, True, self.current_expiry_s)
                )
            while len(taken) < room and self._pending:
                taken.append(
                    LiveMessage(
                        self.topics.live, self._pending.popleft(), False, self.message_expiry_s
                    )
                )
        return taken

    def waiting(self) -> bool:
        """Something is due to be published."""
        with self._lock:
            return self._current_due or bool(self._pending)

    def published(self, message: LiveMessage) -> None:
        with self._lock:
            if message.retain:
                self.counters.current_published += 1
            else:
                self.counters.published += 1
                self.counters.last_published_at = self._clock()

    def acknowledged(self, message: LiveMessage, *, refused: bool) -> None:
        """The broker's PUBACK: a refused ``current`` is tried again with the next change."""
        with self._lock:
            if refused:
                self.counters.refused += 1
            elif not message.retain:
                self.counters.delivered += 1

    def status(self) -> Mapping[str, Any]:
        """The ``live`` section of the status document."""
        with self._lock:
            c = self.counters
            return {
                "published": c.published,
                "delivered": c.delivered,
                "dropped_offline": c.dropped_offline,
                "dropped_overflow": c.dropped_overflow,
                "refused": c.refused,
                "vehicle_shown": bool(self._current),
                "last_published_at": (
                    None if c.last_published_at is None else iso_time(c.last_published_at)
                ),
            }
