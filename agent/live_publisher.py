"""The engine thread's side of live crossings: from the lane's open crossing to the live feed.

The service asks for a :meth:`LiveCrossingPublisher.refresh` whenever the open crossing may have
changed (after inputs, and as lane time passes: a card's association depends on how long the
vehicle has been there), and hands over every crossing it closes before storing it
(:meth:`LiveCrossingPublisher.closed`), so that the booth hears *closed* before the final crossing
that follows. :class:`~agent.lane.live.LiveCrossings` decides whether anything an officer acts on
changed; only then is an event built and offered to the :class:`~agent.uplink.live_feed.LiveFeed`,
which the uplink publishes, and to the lane page (:class:`LiveListener`, with the plate crop), if
either is on. A refresh costs one provisional judgement of the open crossing and
its cache lookups, so the service spaces them by what they cost (``LIVE_SHARE``): a burst of
reads is judged once, not once per read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.lane.engine import LaneEngine
from agent.lane.live import LiveCrossings, LiveUpdate
from agent.lane.policy import Decision
from agent.uplink.live_feed import LiveFeed
from agent.wire.crossing_event import CacheInfo, LaneIdentity, encode, plate_image
from agent.wire.live_event import build_live_event


class LiveListener(Protocol):
    """Another audience of live events in the agent (the lane page's feed); must not block."""

    def live(self, event: Mapping[str, Any] | None, *, plate_crop: bytes | None = None) -> None:
        """The vehicle at the booth as a live event, or None: the lane is empty."""


class LiveCrossingPublisher:
    """Live events of one lane (engine thread only)."""

    def __init__(
        self,
        feed: LiveFeed | None,
        lane: LaneIdentity,
        cache_info: Callable[[], CacheInfo],
        *,
        clock: Callable[[], float],
        page: LiveListener | None = None,
    ) -> None:
        """``feed``: the MQTT live feed (None: live.enabled is off); ``page``: the lane page."""
        self._feed = feed
        self._page = page
        self._lane = lane
        self._cache_info = cache_info
        self._clock = clock
        self._crossings = LiveCrossings()
        self.events = 0
        """Live events built since start (published or dropped by the feed)."""

    def resume(self, number: int) -> None:
        """Crossing ``number`` was restored from the journal at start."""
        self._crossings.resume(number)

    def refresh(self, engine: LaneEngine, at: float, wall: Callable[[float], float]) -> None:
        """Publish the open crossing as of lane time ``at`` if it changed (or clear the lane)."""
        current = engine.current(at)
        if current is None:
            self._crossings.empty()
            if self._feed is not None:
                self._feed.set_current(None)
            if self._page is not None:
                self._page.live(None)
            return
        number, decision = current
        update = self._crossings.view(
            number, decision, at, departing=engine.correlator.departure_pending
        )
        if update is not None:
            payload = self._encode(update, wall)
            if self._feed is not None:
                self._feed.offer(payload)
                self._feed.set_current(payload)

    def closed(self, number: int, decision: Decision, wall: Callable[[float], float]) -> None:
        """Crossing ``number`` closed: its closed event (the next refresh updates ``current``)."""
        for update in self._crossings.closed(number, decision):
            payload = self._encode(update, wall)
            if self._feed is not None:
                self._feed.offer(payload)

    def _encode(self, update: LiveUpdate, wall: Callable[[float], float]) -> bytes:
        self.events += 1
        event = build_live_event(
            update,
            lane=self._lane,
            cache=self._cache_info(),
            published_at=self._clock(),
            wall=wall,
        )
        if self._page is not None:
            self._page.live(event, plate_crop=plate_image(update.decision))
        return encode(event)
