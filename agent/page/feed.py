"""Between the engine thread and the page's clients: what happens on the lane, never blocking.

The engine thread calls :meth:`PageFeed.live`, :meth:`PageFeed.crossing` and
:meth:`PageFeed.read`; each builds the page's view of the event once (:mod:`agent.page.views`,
card numbers masked), keeps what a client connecting later needs (the vehicle at the booth, the
last crossings and reads), counts it for the metrics and appends it to every connected client's
queue. It never waits on a client: each queue is bounded, and a client too slow to take its
messages loses the oldest, which are counted (per client, and in total for ``/metrics``). A
client is woken only when its queue goes from empty to not empty, so a burst of reads costs the
engine thread an append per client, not a wake-up per read.

The server thread (:mod:`agent.page.server`) subscribes a client with the function that wakes
it, takes its messages in batches and sends them as Server-Sent Events.

The status document and the camera snapshot are not pushed through here: the server asks the
providers given at construction when it needs them (``status()`` is the lane's
:meth:`~agent.status.StatusBoard.snapshot`, safe from any thread).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.page.views import crossing_view, live_view, read_view

logger = logging.getLogger(__name__)

DEFAULT_RECENT_CROSSINGS = 20
DEFAULT_RECENT_READS = 40
DEFAULT_CLIENT_QUEUE = 256
DEFAULT_MAX_CLIENTS = 8
PLATE_CROPS_KEPT = 8
"""Plate crops kept for ``/plate/<crossing_id>.jpg``: the vehicle at the booth and the last few."""

StatusProvider = Callable[[], Mapping[str, Any]]
SnapshotProvider = Callable[[], bytes | None]


@dataclass(frozen=True, slots=True)
class PageMessage:
    """One event for the page: ``kind`` is the SSE event name, ``data`` its JSON-ready body."""

    kind: str
    data: Mapping[str, Any]


@dataclass(slots=True)
class FeedCounters:
    """What the feed has seen since start (``/metrics``); a copy is handed out."""

    live_events: int = 0
    crossings: int = 0
    reads: int = 0
    by_recommendation: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    cards_by_association: dict[str, int] = field(default_factory=dict)
    cards_by_result: dict[str, int] = field(default_factory=dict)
    plates_by_match: dict[str, int] = field(default_factory=dict)
    reads_by_antenna: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    """Messages dropped because a client was too slow to take them."""
    refused_clients: int = 0
    """Clients turned away because ``max_clients`` were connected."""


class Subscription:
    """One connected client's queue (engine thread appends, server thread takes)."""

    def __init__(self, feed: PageFeed, wake: Callable[[], None], size: int) -> None:
        self._feed = feed
        self._wake = wake
        self._queue: collections.deque[PageMessage] = collections.deque()
        self._size = size
        self._dropped = 0
        self._woken = False
        self._status_due = False
        self.closed = False
        """The feed is closing: the client's stream should end."""
        self.dropped_total = 0

    def _offer(self, message: PageMessage) -> tuple[bool, Callable[[], None] | None]:
        """Append under the feed's lock; says whether one was dropped and what to wake."""
        dropped = False
        if len(self._queue) >= self._size:
            self._queue.popleft()
            self._dropped += 1
            self.dropped_total += 1
            dropped = True
        self._queue.append(message)
        if self._woken:
            return dropped, None
        self._woken = True
        return dropped, self._wake

    def _poke(self) -> Callable[[], None] | None:
        if self._woken:
            return None
        self._woken = True
        return self._wake

    def take(self) -> tuple[list[PageMessage], int, bool]:
        """The messages waiting, how many were dropped since the last take, and whether a
        status push is due (the status board changed)."""
        with self._feed._lock:
            messages = list(self._queue)
            self._queue.clear()
            dropped, self._dropped = self._dropped, 0
            status_due, self._status_due = self._status_due, False
            self._woken = False
        return messages, dropped, status_due


class PageFeed:
    """The lane's events for the page, thread-safe; the engine thread's calls never block."""

    def __init__(
        self,
        *,
        status: StatusProvider,
        snapshot: SnapshotProvider | None = None,
        recent_crossings: int = DEFAULT_RECENT_CROSSINGS,
        recent_reads: int = DEFAULT_RECENT_READS,
        client_queue: int = DEFAULT_CLIENT_QUEUE,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        if recent_crossings < 1 or recent_reads < 1 or client_queue < 1 or max_clients < 1:
            raise ValueError("the page feed's sizes must be at least 1")
        self.status = status
        """The lane's status document (any thread)."""
        self.snapshot = snapshot
        """The camera's newest frame as JPEG with the region of interest drawn (None: no camera)."""
        self._lock = threading.Lock()
        self._client_queue = client_queue
        self.max_clients = max_clients
        self._clients: list[Subscription] = []
        self._current: dict[str, Any] | None = None
        self._crossings: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=recent_crossings
        )
        self._reads: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent_reads)
        self._crops: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._counters = FeedCounters()
        self._closed = False

    # Engine thread ----------------------------------------------------------------------------

    def live(self, event: Mapping[str, Any] | None, *, plate_crop: bytes | None = None) -> None:
        """The vehicle at the booth changed (a live crossing event), or the lane is empty (None)."""
        if event is None:
            with self._lock:
                if self._current is None:
                    return  # already empty: the engine says so after every refresh
                self._current = None
            self._publish(PageMessage("live", {"crossing": None}))
            return
        crossing = str(event.get("crossing_id") or "")
        view = live_view(event, has_crop=bool(plate_crop))
        with self._lock:
            self._current = view
            self._counters.live_events += 1
            if plate_crop:
                self._keep_crop(crossing, plate_crop)
        self._publish(PageMessage("live", {"crossing": view}))

    def crossing(self, event: Mapping[str, Any], *, plate_crop: bytes | None = None) -> None:
        """A crossing was stored (the crossing event central receives)."""
        view = crossing_view(event, has_crop=bool(plate_crop))
        with self._lock:
            self._crossings.appendleft(view)
            if plate_crop:
                self._keep_crop(str(view["crossing_id"] or ""), plate_crop)
            c = self._counters
            c.crossings += 1
            _count(c.by_recommendation, view["recommendation"])
            for reason in view["reasons"]:
                _count(c.by_reason, reason)
            for card in (*view["cards"], *view["set_aside"]):
                _count(c.cards_by_association, card["association"])
            for card in view["cards"]:
                _count(c.cards_by_result, card["result"])
            plate = view["plate"]
            if plate is not None:
                _count(c.plates_by_match, plate["match"])
        self._publish(PageMessage("crossing", view))

    def read(self, summary: Mapping[str, Any]) -> None:
        """A tag read arrived: ``ref``, ``antenna``, ``rssi_dbm``, ``at`` (the agent's clock)."""
        view = read_view(summary)
        with self._lock:
            self._reads.appendleft(view)
            self._counters.reads += 1
            _count(self._counters.reads_by_antenna, view["antenna"])
        self._publish(PageMessage("read", view))

    def status_changed(self) -> None:
        """A fault was raised or cleared (the status board's listener): push the status now."""
        with self._lock:
            wakes = [client._poke() for client in self._clients if not client._status_due]
            for client in self._clients:
                client._status_due = True
        _wake_all(wakes)

    # Server thread ----------------------------------------------------------------------------

    def subscribe(self, wake: Callable[[], None]) -> Subscription | None:
        """A client connected; None when ``max_clients`` are already connected (or closing).

        ``wake`` is called (from the engine thread, so it must not block) when messages are
        waiting after the client took the last ones.
        """
        with self._lock:
            if self._closed or len(self._clients) >= self.max_clients:
                self._counters.refused_clients += 1
                return None
            client = Subscription(self, wake, self._client_queue)
            self._clients.append(client)
            return client

    def unsubscribe(self, client: Subscription) -> None:
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)

    def hello(self) -> dict[str, Any]:
        """What a client that just connected is shown: the booth, the last crossings and reads."""
        with self._lock:
            return {
                "crossing": self._current,
                "crossings": list(self._crossings),
                "reads": list(self._reads),
                "camera": self.snapshot is not None,
            }

    def current(self) -> dict[str, Any] | None:
        """The vehicle at the booth as the page shows it (None: the lane is empty)."""
        with self._lock:
            return self._current

    def recent_crossings(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._crossings)

    def plate_crop(self, crossing_id: str) -> bytes | None:
        """The plate crop of the vehicle at the booth or of a recent crossing."""
        with self._lock:
            return self._crops.get(crossing_id)

    def counters(self) -> FeedCounters:
        """A copy of the counters."""
        with self._lock:
            c = self._counters
            return FeedCounters(
                live_events=c.live_events,
                crossings=c.crossings,
                reads=c.reads,
                by_recommendation=dict(c.by_recommendation),
                by_reason=dict(c.by_reason),
                cards_by_association=dict(c.cards_by_association),
                cards_by_result=dict(c.cards_by_result),
                plates_by_match=dict(c.plates_by_match),
                reads_by_antenna=dict(c.reads_by_antenna),
                dropped=c.dropped,
                refused_clients=c.refused_clients,
            )

    def clients(self) -> int:
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        """The server stops: every client's stream ends, and no new client is taken."""
        with self._lock:
            self._closed = True
            clients = list(self._clients)
            for client in clients:
                client.closed = True
            wakes = [client._poke() for client in clients]
        _wake_all(wakes)

    # ------------------------------------------------------------------------------------------

    def _publish(self, message: PageMessage) -> None:
        with self._lock:
            wakes = []
            for client in self._clients:
                dropped, wake = client._offer(message)
                if dropped:
                    self._counters.dropped += 1
                if wake is not None:
                    wakes.append(wake)
        _wake_all(wakes)

    def _keep_crop(self, crossing_id: str, crop: bytes) -> None:
        self._crops[crossing_id] = crop
        self._crops.move_to_end(crossing_id)
        while len(self._crops) > PLATE_CROPS_KEPT:
            self._crops.popitem(last=False)


def _count(counts: dict[str, int], key: object) -> None:
    name = str(key)
    counts[name] = counts.get(name, 0) + 1


def _wake_all(wakes: Sequence[Callable[[], None] | None]) -> None:
    for wake in wakes:
        if wake is None:
            continue
        try:
            wake()
        except Exception:  # a client whose loop is gone must not hurt the engine thread
            logger.debug("waking a page client failed", exc_info=True)
