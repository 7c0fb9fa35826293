"""The send window: which outbox rows are handed to paho, and what happens to each on its PUBACK.

Delivery is at least once. Up to ``max_inflight`` messages (never more than the broker's Receive
Maximum) are on the wire awaiting PUBACK, in outbox order; a few windows more are handed to paho,
which queues them and sends each the moment a slot frees (``_HANDOFF_FACTOR``). Outbox rows share
the window with the uplink's own messages (availability and status, :mod:`agent.uplink.control`)
and the live crossing events (:mod:`agent.uplink.live_sending`): :class:`SendWindow` keeps what is
in flight of all three, by paho message id.

Pending rows are read from the outbox in batches (``_PREFETCH_ROWS``) and published from memory; a
read continues the previous one with an index seek (``after``) instead of a list of exclusions,
and a wake-up after an append reads only the new crossings and puts them ahead of the rows read
ahead (images, health), rather than behind all of them.

A row is marked sent (:mod:`agent.uplink.marker`) only when its PUBACK carries a success reason
code. A refusal (for example 0x87 not authorised) keeps the row, logs a warning, raises the
``publish_refused`` fault and retries with back-off. The hold outlives reconnects, because brokers
may close the connection after a refusal (Mosquitto does); the refused topic is then probed with
one row at a time, so a refused topic does not turn into a reconnect storm. Rows on other topics
go ahead, so after a refusal the order on the wire can differ from the outbox order; the stream
sequence number in each payload lets central restore it.

paho keeps at most its window on the wire and queues the rest of what it is handed; it cannot
change the window on a live connection, so a broker allowing fewer than paho's window gets one
message (row, status or availability) per slot on that connection (see
:meth:`SendWindow.room_for_control`), and the next client gets the broker's window: smaller, or
larger again once a broker allows more.
"""

from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt import FAILURE_THRESHOLD, backoff_delay
from agent.status import StatusBoard
from agent.uplink.live_feed import LiveMessage
from agent.uplink.marker import Marking
from agent.uplink.stats import FAULT_PUBLISH_REFUSED, Counters
from agent.uplink.store import PendingRow, RowStore

log = logging.getLogger(__name__)

_GIVE_UP_REFUSALS = 62  # back-off step for a row paho cannot send at all: the maximum delay
_HANDOFF_FACTOR = 10  # rows handed to paho per in-flight slot: paho pipelines them itself
_TOP_UP_FRACTION = 0.5  # hand paho more rows once fewer than this share of the handoff is left
_PREFETCH_ROWS = 512  # pending rows read from SQLite at once, then published from memory
_WAKE_CROSSING_ROWS = 64  # new crossings a wake puts ahead of the read-ahead; more: scan afresh


@dataclass(slots=True)
class _Hold:
    """A refused row waits until ``until`` (monotonic); ``refusals`` lengthens its next back-off."""

    until: float
    refusals: int
    waiting: bool = True


class SendWindow:
    """Outbox rows on their way to the broker, and the window they share with other messages.

    Lives on the publisher thread; the publisher calls :meth:`publish` only while a session is up.
    """

    def __init__(
        self,
        outbox: RowStore,
        marks: Marking,
        counters: Counters,
        *,
        max_inflight: int,
        retry_min_s: float,
        retry_max_s: float,
        rng: random.Random,
        status: StatusBoard | None,
        on_acknowledged: Callable[[PendingRow], None] | None,
        urgent_priority: int,
        storage_errors: tuple[type[Exception], ...],
        storage_failed: Callable[[str, Exception], None],
    ) -> None:
        """``retry_min_s``/``retry_max_s`` bound the back-off of refused rows; rows of
        ``urgent_priority`` appended while others are read ahead go first; ``storage_failed``
        reports an outbox error (one of ``storage_errors``; the publisher pauses reading and raises
        the fault)."""
        self._outbox = outbox
        self._marks = marks
        self._counters = counters
        self._max_inflight = max_inflight
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._rng = rng
        self._status = status
        self._on_acknowledged = on_acknowledged
        self._urgent_priority = urgent_priority
        self._storage_errors = storage_errors
        self._storage_failed = storage_failed
        self.cap = max_inflight
        """Messages allowed on the wire: max_inflight, or the broker's Receive Maximum if lower."""
        self.paho_window = max_inflight  # paho's max_inflight_messages for the next client
        self.client_window = max_inflight  # ...and for the current one
        self.handoff = max_inflight  # rows handed to paho at most, set at each CONNACK
        self.rows: dict[int, PendingRow] = {}  # by paho mid, in publish order
        self.control: dict[int, tuple[str, bytes]] = {}  # availability, status (topic, payload)
        self.live: dict[int, LiveMessage] = {}  # live crossing events
        self._holds: dict[int, _Hold] = {}  # by outbox row id
        # A refusal usually means the topic is refused (ACL), and Mosquitto closes the connection
        # after each refusal: the topic waits out a back-off, then one row probes it.
        self._topic_holds: dict[str, _Hold] = {}
        self._queue: collections.deque[PendingRow] = collections.deque()  # prefetched pending rows
        self._outbox_may_have_more = True
        # (priority, id) of the last row read while a scan of the outbox continues batch by batch;
        # None: the next read starts from the top again (see rescan).
        self._scan_after: tuple[int, int] | None = None
        self._published_uncounted = 0  # added to the counters once per pass, not per row

    # Sizes ----------------------------------------------------------------------------------------

    def client_made(self) -> int:
        """A fresh client is being built: the paho window to give it."""
        self.client_window = self.paho_window
        return self.paho_window

    def connected(self, receive_maximum: int | None) -> None:
        """Size the window for the session that just started."""
        # paho ignores the broker's Receive Maximum; MQTT lets a broker disconnect (0x93) past it.
        self.cap = min(self._max_inflight, receive_maximum or self._max_inflight)
        # paho cannot change its window on a live connection: the next client gets this one.
        self.paho_window = self.cap
        if self.cap < self.client_window:
            self.handoff = self.cap
        else:
            self.handoff = self.cap * _HANDOFF_FACTOR

    def room_for_control(self) -> bool:
        """Whether a control message may go out now without exceeding the broker's Receive Maximum.

        Where paho's window is within it, paho holds back what does not fit itself; where it is
        not (the first connection to a broker that allows fewer), every message counts here.
        """
        if self.client_window <= self.cap:
            return True
        return len(self.rows) + len(self.control) + len(self.live) < self.cap

    def session_ended(self) -> None:
        """The connection is gone: what was in flight goes back to pending (rows) or is dropped."""
        self.rows.clear()
        self.control.clear()
        self.live.clear()
        self.drop_prefetched()

    def draining(self) -> bool:
        """A backlog is going out (rows read ahead, or the handoff more than half full)."""
        return bool(self._queue) or len(self.rows) > self.handoff * _TOP_UP_FRACTION

    def flushed(self) -> bool:
        """No row in flight, none read ahead, and none known to be pending."""
        return not (self.rows or self.live or self._queue or self._outbox_may_have_more)

    def hold_deadlines(self) -> Iterator[float]:
        """When refused rows and topics waiting out their back-off may go again (monotonic)."""
        for hold in self._holds.values():
            if hold.waiting:
                yield hold.until
        for hold in self._topic_holds.values():
            if hold.waiting:
                yield hold.until

    def update_gauges(self) -> None:
        """Gauges and the publish count, once per pass of the publisher loop."""
        held = sum(1 for hold in self._holds.values() if hold.waiting)
        published, self._published_uncounted = self._published_uncounted, 0
        with self._counters.lock:
            self._counters.published += published
            self._counters.in_flight = len(self.rows)
            self._counters.in_flight_limit = self.cap
            self._counters.held_back = held

    # Publishing -----------------------------------------------------------------------------------

    def publish(self, client: mqtt.Client) -> None:
        """Hand paho the next pending rows, as far as the handoff has room."""
        if not self._outbox_may_have_more and not self._queue:
            return
        # Handing paho a few windows' worth lets it send the next row the moment a PUBACK frees a
        # slot, while it is still reading PUBACKs, without coming back here for each one.
        handed = len(self.rows) + len(self.control)
        if handed > self.handoff * _TOP_UP_FRACTION:
            return  # top up in batches, not one row per PUBACK
        room = self.handoff - handed
        if room <= 0:
            return
        if not self._holds and not self._topic_holds:
            self._publish_prefetched(client, room)
            return
        # Rows are being refused: no prefetching, holds are checked on every read.
        self.drop_prefetched()
        excluded = self._busy_ids()
        excluded.extend(row_id for row_id, hold in self._holds.items() if hold.waiting)
        held_topics = {topic for topic, hold in self._topic_holds.items() if hold.waiting}
        probing = set(self._topic_holds) - held_topics
        if probing:
            if any(row.topic in probing for row in self.rows.values()):
                held_topics |= probing  # one probe at a time
            else:
                room = 1
        try:
            rows = self._outbox.pending(room, exclude_ids=excluded, exclude_topics=held_topics)
        except self._storage_errors as error:
            self._storage_failed("reading pending rows", error)
            return
        self._count_read(len(rows))
        if len(rows) < room:
            self._outbox_may_have_more = False
        for row in rows:
            self._publish_row(client, row)

    def _publish_prefetched(self, client: mqtt.Client, room: int) -> None:
        """The fast path: read pending rows in batches, publish them from memory."""
        while room > 0:
            if not self._queue:
                if not self._outbox_may_have_more:
                    return
                continuing = self._scan_after is not None
                try:
                    if self._scan_after is not None:
                        # Continuing a scan: an index seek instead of a list of exclusions.
                        rows = self._outbox.pending(_PREFETCH_ROWS, after=self._scan_after)
                    else:
                        rows = self._outbox.pending(_PREFETCH_ROWS, exclude_ids=self._busy_ids())
                except self._storage_errors as error:
                    self._storage_failed("reading pending rows", error)
                    return
                self._count_read(len(rows))
                if len(rows) < _PREFETCH_ROWS:
                    self._outbox_may_have_more = False
                    self._scan_after = None
                else:
                    self._scan_after = (rows[-1].priority, rows[-1].id)
                if continuing and (self.rows or not self._marks.idle()):
                    # Usually every busy row lies before the cursor, but not always: after a failed
                    # mark, or a burst of more urgent appends, a fresh scan can fill a whole batch
                    # with rows ahead of those still in flight, and the scan then reaches them.
                    busy = set(self._busy_ids())
                    rows = [row for row in rows if row.id not in busy]
                if not rows:
                    if self._outbox_may_have_more:
                        continue  # a whole batch of busy rows: read on
                    return
                self._queue.extend(rows)
            self._publish_row(client, self._queue.popleft())
            room -= 1

    def _busy_ids(self) -> list[int]:
        """Rows pending in the outbox that must not be read again: in flight, acknowledged, or
        being marked sent."""
        busy = [row.id for row in self.rows.values()]
        busy.extend(self._marks.acked)
        busy.extend(self._marks.marking)
        return busy

    def _publish_row(self, client: mqtt.Client, row: PendingRow) -> None:
        try:
            info = client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
        except ValueError as error:
            # paho itself rejects it (e.g. larger than MQTT allows): a retry cannot help soon.
            log.error(
                "outbox row %d (stream %s seq %d) cannot be published: %s",
                row.id,
                row.stream,
                row.seq,
                error,
            )
            self._hold(row.id, refusals=_GIVE_UP_REFUSALS)
            return
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("paho did not take outbox row %d: %s", row.id, mqtt.error_string(info.rc))
            self._hold(row.id, refusals=0)
            return
        # MQTT_ERR_NO_CONN: the connection just dropped and the disconnect event is on its way. paho
        # keeps the message queued in this client, but that client is discarded on the event, so it
        # is never sent twice.
        self.rows[info.mid] = row
        self._published_uncounted += 1

    def on_published(self, mid: int, reason: ReasonCode) -> bool:
        """A PUBACK: the row is acknowledged, or refused and held. False: not a row's message id."""
        row = self.rows.pop(mid, None)
        if row is None:
            return False
        if reason.value < FAILURE_THRESHOLD:
            self._marks.acknowledged(row.id)
            if self._on_acknowledged is not None:
                self._on_acknowledged(row)
            released = self._holds.pop(row.id, None) is not None
            released |= self._topic_holds.pop(row.topic, None) is not None
            if released and not self._holds and not self._topic_holds and self._status is not None:
                self._status.clear_fault(FAULT_PUBLISH_REFUSED)
            return True
        self._counters.count_refusal(reason)
        self.drop_prefetched()  # prefetched rows may be on the refused topic
        if self._status is not None:
            self._status.raise_fault(
                FAULT_PUBLISH_REFUSED,
                f"broker refused publishing on {row.topic}: {reason}; rows kept and retried",
            )
        previous = self._holds.get(row.id)
        hold = self._hold(row.id, refusals=0 if previous is None else previous.refusals + 1)
        topic_hold = self._topic_holds.get(row.topic)
        refusals = 0 if topic_hold is None else topic_hold.refusals + 1
        delay = backoff_delay(refusals, self._retry_min_s, self._retry_max_s, self._rng)
        self._topic_holds[row.topic] = _Hold(until=time.monotonic() + delay, refusals=refusals)
        # Topic, ids and reason only: the payload carries card numbers and plates.
        log.warning(
            "broker refused outbox row %d (stream %s seq %d) on %s: %s; kept, retry in %.1f s",
            row.id,
            row.stream,
            row.seq,
            row.topic,
            reason,
            hold.until - time.monotonic(),
        )
        return True

    def _hold(self, row_id: int, *, refusals: int) -> _Hold:
        delay = backoff_delay(refusals, self._retry_min_s, self._retry_max_s, self._rng)
        hold = _Hold(until=time.monotonic() + delay, refusals=refusals)
        self._holds[row_id] = hold
        return hold

    def release_holds(self, now: float) -> None:
        """Let rows whose back-off ended go out again; the refusal count stays for the next one."""
        for hold in [*self._holds.values(), *self._topic_holds.values()]:
            if hold.waiting and hold.until <= now:
                hold.waiting = False
                self.rescan()

    # Reading the outbox ---------------------------------------------------------------------------

    def rescan(self) -> None:
        """Rows may have become pending anywhere in the outbox: the next read starts at the top."""
        self._outbox_may_have_more = True
        self._scan_after = None

    def woken(self) -> None:
        """Rows were appended (``notify``): read them before the next poll."""
        if self._queue and self._queue[0].priority > self._urgent_priority:
            # A crossing may just have been appended: it goes before the images or health rows
            # read ahead, not behind all of them.
            self._take_new_crossings()
        else:
            self.rescan()

    def _take_new_crossings(self) -> None:
        """Put crossings appended since the read-ahead at the front of the queue.

        Only crossing rows are read (not the images or health rows already queued, payloads and
        all); a burst too large for one read drops the read-ahead and scans afresh instead.
        """
        busy = self._busy_ids()
        busy.extend(row.id for row in self._queue)
        try:
            rows = self._outbox.pending_of_priority(
                self._urgent_priority, _WAKE_CROSSING_ROWS, exclude_ids=busy
            )
        except self._storage_errors as error:
            self._storage_failed("reading new crossings", error)
            return
        self._count_read(len(rows))
        if len(rows) >= _WAKE_CROSSING_ROWS:
            self.drop_prefetched()
            return
        self._queue.extendleft(reversed(rows))

    def _count_read(self, rows: int) -> None:
        with self._counters.lock:
            self._counters.rows_read += rows

    def drop_prefetched(self) -> None:
        """Forget rows read but not yet handed to paho; a fresh scan reads them again, in order."""
        self._queue.clear()
        self.rescan()  # at once: they may be the only pending rows, and no poll is due for a while
