"""MQTT v5 uplink: publishes outbox rows in order at QoS 1, marks them sent only on a good PUBACK.

Threads: one publisher thread owns all uplink state and drives paho's network loop itself
(``loop_read``/``loop_write``/``loop_misc`` when ``poll`` says the socket is ready) instead of
paho's own thread (``loop_start``); a second, small thread marks acknowledged rows sent. Measured
against raw paho (BENCHMARKS.md, bench/bench_uplink.py), the per-message cost on top of paho's own
was what set the outbox's rate: an event object and a queue hand-off per PUBACK between paho's
thread and this one, an SQL exclusion list on every read, a statement per row to mark, and an
fsync that, on the thread driving the socket, stalls the whole pipeline. So: one thread for socket
and state (PUBACKs are plain tuples on a deque; the PUBLISHes a batch of PUBACKs releases go out in
one burst), reads that continue a scan with an index seek, and marks as one statement on the marker
thread, where SQLite and the fsync run without the GIL. Other threads reach the publisher through a
queue and a wake-up socket (``notify``, ``stop``, status changes, the marker). paho callbacks only
record what happened: they never block, publish or touch SQLite, because paho calls them in the
middle of reading a packet, with its internal locks held.

Delivery is at least once. Up to ``max_inflight`` rows (never more than the broker's Receive
Maximum) are on the wire awaiting PUBACK, in outbox order; a few windows more are handed to paho,
which queues them and sends each the moment a slot frees. Pending rows are read from SQLite in
batches. Acknowledged rows are marked sent by the marker thread, one batch at a time, in one
transaction each: at once on live traffic; while a backlog drains, every 1024 rows or 100 ms, and
whatever was acknowledged while the previous batch was being written (a crash in between only
causes duplicates). Before re-queueing rows after a reconnect, and at stop, the publisher waits
for the marker, so a late mark never hides a row from the re-queue. A row is marked sent only when
its PUBACK carries a success reason code; a refusal (for example 0x87 not authorised) keeps the
row, logs a warning, raises the ``publish_refused`` fault and retries with back-off. The hold
outlives reconnects, because brokers may close the connection after a refusal (Mosquitto does);
the refused topic is then probed with one row at a time, so a refused topic does not turn into a
reconnect storm. Rows on other topics go ahead, so after a refusal the order on the wire can differ
from the outbox order; the stream sequence number in each payload lets central restore it.

Reconnects: every connection uses a fresh paho client. paho keeps a message published while
disconnected queued and sends it after a reconnect, and it re-sends its own in-flight messages too;
a fresh client carries none of that, so exactly one party decides what is re-sent: this module, from
the outbox, after each CONNACK. Everything that was in flight when a connection dropped goes back to
pending and is re-sent, possibly twice on the wire (central drops duplicates by stream sequence
number); nothing is lost. Reconnect delays grow exponentially with random jitter so a fleet of lanes
does not reconnect in lock-step after a broker restart.

End-to-end confirmation: after each CONNACK the uplink subscribes to the lane's acknowledgement
topic, where central ingest keeps a retained watermark per stream (the highest sequence number up
to which it has stored every event, see docs/delivery.md). Each watermark deletes the confirmed rows
from the outbox. Rows the broker acknowledged but ingest has not confirmed are made pending again
after every reconnect, because a broker that crashed may have lost them; a stream that no ingest has
ever confirmed is exempt (it keeps the retention window instead).

Status: with a :class:`~agent.status.StatusBoard`, the uplink contributes its ``uplink`` section,
raises and clears its faults (``publish_refused``, ``outbox_error``, ``ack_watermark_ahead``) and
publishes the board's document, retained, on the status topic: at once when something changed (at
most every ``_STATUS_MIN_GAP_S``), and every ``status_interval_s`` regardless.

TLS: with :class:`TlsFiles` every connection verifies the broker against the CA file and presents
the client certificate (mutual TLS); the files are read at each connect, so renewed certificates
are picked up without a restart.

The session is kept across reconnects (``clean_start=False`` and a session expiry interval) so that
subscriptions made by later features survive a short outage. The availability topic carries
``online`` (retained, on every connect), ``offline`` (retained last will, published by the broker
when the connection dies) and ``stopped`` (retained, on a clean stop).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import json
import logging
import queue
import random
import select
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.state.outbox import PRIORITY_CROSSING, Outbox, OutboxError, OutboxRow
from agent.status import StatusBoard, iso_time
from agent.uplink.live_feed import LiveFeed, LiveMessage
from agent.wire.topics import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    AVAILABILITY_STOPPED,
    Topics,
)

log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 24 * 3600
"""Keep the broker session for a day: long enough for any outage a lane rides out on its outbox."""

# MQTT v5 3.1.2.11.2: a four byte integer; the largest value means "never expires".
_MAX_SESSION_EXPIRY_S = 0xFFFFFFFF
_FAILURE_THRESHOLD = 0x80  # MQTT v5 2.4: reason codes below 0x80 mean success
_DISCONNECT_GRACE_S = 1.0  # after the stop deadline, for the DISCONNECT to reach the broker
_SETTLE_AT_STOP_S = 2.0  # then, for the last mark to commit; unmarked rows are sent again
# stop() waits this long beyond its timeout for the thread: the two steps above, plus a margin for
# a busy machine. The thread keeps within the first two (see _thread_deadline).
_STOP_JOIN_GRACE_S = _DISCONNECT_GRACE_S + _SETTLE_AT_STOP_S + 2.0
_MARKER_CLOSE_S = 5.0  # after a failure (no stop deadline), for the marker's batch in hand
_GIVE_UP_REFUSALS = 62  # back-off step for a row paho cannot send at all: the maximum delay
_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
_STABLE_CONNECTION_S = 30.0  # a connection that lasted this long resets the reconnect back-off
_PRUNE_INTERVAL_S = 600.0  # sent rows are kept for hours; pruning every ten minutes is plenty
_STORAGE_RETRY_S = 1.0  # pause after an outbox error before touching SQLite again
_HANDOFF_FACTOR = 10  # rows handed to paho per in-flight slot: paho pipelines them itself
_TOP_UP_FRACTION = 0.5  # hand paho more rows once fewer than this share of the handoff is left
_MISC_INTERVAL_S = 1.0  # paho's keepalive housekeeping (loop_misc), as often as loop_forever
_PREFETCH_ROWS = 512  # pending rows read from SQLite at once, then published from memory
_WAKE_CROSSING_ROWS = 64  # new crossings a wake puts ahead of the read-ahead; more: scan afresh
_MARK_BATCH = 1024  # acknowledged rows marked sent in one transaction (one fsync)...
_MARK_DELAY_S = 0.1  # ...or after this long: a crash in between only causes duplicates
_STATUS_MIN_GAP_S = 0.5  # status changes closer together than this are published as one
_MAX_ACK_PAYLOAD = 4096  # a watermark document is tens of bytes; anything huge is not one

_POLL_READ = select.POLLIN | select.POLLPRI
_POLL_WRITE = select.POLLOUT
# An error or hang-up shows as readable, as select() reports it: loop_read() then meets it.
_POLL_READABLE = _POLL_READ | select.POLLERR | select.POLLHUP | select.POLLNVAL

FAULT_PUBLISH_REFUSED = "publish_refused"
FAULT_OUTBOX_ERROR = "outbox_error"
FAULT_ACK_AHEAD = "ack_watermark_ahead"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Mutual TLS: the CA that signed the broker's certificate, and this lane's certificate and key.

    The certificate's subject (CN) is the lane's identity on the broker (see config/mosquitto/).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path


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


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (from 0): exponential, jittered, within [min_s, max_s].

    The jitter is drawn from the whole window ``[min_s, min_s * 2**(attempt+1)]`` so that even the
    first retries of many lanes spread out instead of landing together.
    """
    ceiling = min(max_s, min_s * 2.0 ** min(attempt + 1, 62))
    return rng.uniform(min_s, ceiling)


# Events handed from paho's thread (and from API calls) to the publisher thread.
@dataclass(frozen=True, slots=True)
class _Connected:
    generation: int
    reason: ReasonCode
    session_present: bool
    receive_maximum: int | None


@dataclass(frozen=True, slots=True)
class _Disconnected:
    generation: int
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class _Wake:
    pass


@dataclass(frozen=True, slots=True)
class _AckReceived:
    generation: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class _StatusChanged:
    pass


@dataclass(frozen=True, slots=True)
class _StopRequested:
    deadline: float


@dataclass(frozen=True, slots=True)
class _Marked:
    """The marker thread finished a batch: marked sent, or not (``error``) and still pending."""

    batch: int
    count: int
    error: Exception | None


_Event = (
    _Connected | _Disconnected | _Wake | _AckReceived | _StatusChanged | _StopRequested | _Marked
)


class _Marker:
    """Marks acknowledged rows sent on a thread of its own, one batch at a time.

    A mark is one UPDATE and one fsync (``synchronous=FULL``): milliseconds, many more when the
    disk is busy. Done on the publisher thread, which also drives the socket, that stalls the
    whole pipeline; here SQLite runs without the GIL on the other core while the publisher keeps
    reading PUBACKs and writing PUBLISHes. The publisher hands over the next batch only once the
    last one is reported (``report``), so rows are marked in the order they were acknowledged.
    """

    def __init__(self, outbox: Outbox, report: Callable[[_Marked], None]) -> None:
        self._outbox = outbox
        self._report = report
        self._batches: queue.SimpleQueue[tuple[int, list[int]] | None] = queue.SimpleQueue()
        self._idle = threading.Event()
        self._idle.set()
        self.result: _Marked | None = None
        """The outcome of the last batch; read it only after wait_idle() returned True."""
        self._thread = threading.Thread(target=self._run, name="mqtt-uplink-mark", daemon=True)
        self._thread.start()

    def submit(self, batch: int, row_ids: list[int]) -> None:
        self._idle.clear()
        self._batches.put((batch, row_ids))

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block until the batch handed over last is in the outbox (or failed); False on timeout."""
        return self._idle.wait(timeout_s)

    def close(self, timeout_s: float) -> None:
        """Finish the batch in hand, then end the thread."""
        self._batches.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while (work := self._batches.get()) is not None:
            batch, row_ids = work
            error: Exception | None = None
            try:
                self._outbox.mark_sent_many(row_ids)
            except Exception as failure:  # reported; the publisher decides, as for its own calls
                error = failure
            self.result = result = _Marked(batch, len(row_ids), error)
            self._idle.set()
            self._report(result)


class _StopPhase(enum.Enum):
    FLUSHING = enum.auto()
    SAYING_STOPPED = enum.auto()
    DISCONNECTING = enum.auto()


@dataclass(slots=True)
class _Hold:
    """A refused row waits until ``until`` (monotonic); ``refusals`` lengthens its next back-off."""

    until: float
    refusals: int
    waiting: bool = True


@dataclass(slots=True)
class _Counters:
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


_paho_log = logging.getLogger(f"{__name__}.paho")


def _log_paho_message(_client: mqtt.Client, _userdata: Any, level: int, message: str) -> None:
    """Pass paho's own log lines on at DEBUG.

    paho reports every socket error at ERROR (and "not connected" after each clean DISCONNECT); this
    module already reports the same events once, at the right level, so paho's copies are kept for
    debugging only. They carry topics and sizes, never payloads.
    """
    _paho_log.debug("paho [%s] %s", level, message)


class MqttUplink:
    """Drains an :class:`Outbox` to an MQTT v5 broker: start(), notify() after appends, stop()."""

    def __init__(
        self,
        outbox: Outbox,
        topics: Topics,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive_s: int = 30,
        max_inflight: int = 20,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S,
        username: str | None = None,
        password: str | None = None,
        poll_interval_s: float = 5.0,
        tls: TlsFiles | None = None,
        status: StatusBoard | None = None,
        status_interval_s: float = 30.0,
        on_state_change: Callable[[UplinkState], None] | None = None,
        on_acknowledged: Callable[[OutboxRow], None] | None = None,
        live: LiveFeed | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``reconnect_min_s``/``reconnect_max_s`` bound reconnect delays and refused-row retries.

        ``keepalive_s`` bounds how long a silent (half-open) connection, or a CONNECT that gets
        no CONNACK, goes unnoticed. ``poll_interval_s`` bounds how long a row waits if a
        ``notify()`` was missed. ``on_state_change`` is called from the publisher thread and must
        return quickly, as must ``on_acknowledged`` (called there for each row the broker accepted,
        as its PUBACK is processed). ``status`` (with ``status_interval_s``) turns on the status
        topic (:meth:`detach_status` gives it up, for an uplink rebuilt on the same board).
        ``live`` publishes the lane's live crossing events (:mod:`agent.uplink.live_feed`) on this
        session, after the outbox's rows and within a few slots of the window.
        """
        if not host:
            raise ValueError("host must not be empty")
        if not 0 < port < 65536:
            raise ValueError(f"port must be 1..65535, not {port!r}")
        if not client_id:
            raise ValueError("client_id must not be empty: the broker keeps the session under it")
        if not 1 <= keepalive_s <= 65535:
            raise ValueError(f"keepalive_s must be 1..65535, not {keepalive_s!r}")
        if not 1 <= max_inflight <= 65535:
            raise ValueError(f"max_inflight must be 1..65535, not {max_inflight!r}")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(
                "need 0 < reconnect_min_s <= reconnect_max_s, "
                f"got {reconnect_min_s!r} and {reconnect_max_s!r}"
            )
        if not 0 <= session_expiry_s <= _MAX_SESSION_EXPIRY_S:
            raise ValueError(
                f"session_expiry_s must be 0..{_MAX_SESSION_EXPIRY_S}, not {session_expiry_s!r}"
            )
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, not {poll_interval_s!r}")
        if status_interval_s <= 0:
            raise ValueError(f"status_interval_s must be > 0, not {status_interval_s!r}")
        self._outbox = outbox
        self._topics = topics
        self._host = host
        self._port = port
        self._client_id = client_id
        self._keepalive_s = keepalive_s
        self._max_inflight = max_inflight
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._session_expiry_s = session_expiry_s
        self._username = username
        self._password = password
        self._poll_interval_s = poll_interval_s
        self._tls = tls
        self._status = status
        self._status_interval_s = status_interval_s
        self._on_state_change = on_state_change
        self._on_acknowledged = on_acknowledged
        self._live = live
        self._rng = rng if rng is not None else random.Random()

        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        # Other threads write a byte here after queueing an event, to end the publisher's wait.
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._state = UplinkState.NOT_STARTED
        self._stats_lock = threading.Lock()
        self._counters = _Counters(in_flight_limit=max_inflight)

        # Everything below belongs to the publisher thread once start() ran.
        self._client: mqtt.Client | None = None
        self._generation = 0  # events from an older client than the current one are ignored
        self._session_up = False  # CONNACK with success received on the current client
        self._connect_failures = 0  # attempts since the last connection that stayed up
        self._connected_at = 0.0
        self._next_connect_at = 0.0
        self._inflight_cap = max_inflight
        self._paho_window = max_inflight  # paho's max_inflight_messages for the next client
        self._live_window = max_inflight  # ...and for the current one
        self._handoff = max_inflight  # rows handed to paho at most, set at each CONNACK
        self._in_flight: dict[int, OutboxRow] = {}  # by paho mid, in publish order
        self._control_in_flight: dict[int, tuple[str, bytes]] = {}  # availability, status
        self._live_in_flight: dict[int, LiveMessage] = {}  # live crossing events, by paho mid
        self._holds: dict[int, _Hold] = {}  # by outbox row id
        # A refusal usually means the topic is refused (ACL), and Mosquitto closes the connection
        # after each refusal: the topic waits out a back-off, then one row probes it.
        self._topic_holds: dict[str, _Hold] = {}
        self._acked: list[int] = []  # row ids acknowledged but not yet handed to the marker
        self._acked_since = 0.0  # monotonic time of the oldest entry in _acked
        self._marker: _Marker | None = None  # runs while the publisher thread does
        self._marking: list[int] = []  # row ids the marker is marking sent right now
        self._marking_batch = 0  # numbers the batches, so that each outcome is applied once
        self._queue: collections.deque[OutboxRow] = collections.deque()  # prefetched pending rows
        self._outbox_may_have_more = True
        # (priority, id) of the last row read while a scan of the outbox continues batch by batch;
        # None: the next read starts from the top again (see _rescan).
        self._scan_after: tuple[int, int] | None = None
        # PUBACKs as paho reports them: (generation, mid, reason). One per message, so a plain
        # tuple on a deque rather than an event object on the queue.
        self._pubacks: collections.deque[tuple[int, int, ReasonCode]] = collections.deque()
        self._published_uncounted = 0  # added to the counters once per pass, not per row
        self._next_poll_at = 0.0
        self._next_prune_at = 0.0
        self._next_misc_at = 0.0
        self._storage_retry_at = 0.0
        self._stop_deadline: float | None = None
        self._flush_until = 0.0
        self._stop_phase = _StopPhase.FLUSHING
        self._stopped_published = False
        self._stopped_acknowledged = False
        self._status_due = False
        self._next_status_at = 0.0
        self._last_status_at = 0.0
        if status is not None:
            status.contribute("uplink", self._status_section)
            status.on_change(self._status_changed)

    # Public API, called from other threads --------------------------------------------------------

    @property
    def state(self) -> UplinkState:
        return self._state

    def start(self) -> None:
        """Start the publisher thread; it connects at once."""
        if self._thread is not None:
            raise RuntimeError("MqttUplink.start() called twice")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        if self._live is not None:
            self._live.attach(self._wake)
        self._thread = threading.Thread(target=self._run, name="mqtt-uplink", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New rows were appended: publish them now, not at the next poll. Safe from any thread."""
        self._events.put(_Wake())
        self._wake()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s``, publish ``stopped``, disconnect cleanly.

        Rows not acknowledged by then stay in the outbox for the next run. If ``stopped`` could not
        be delivered, the DISCONNECT asks the broker to publish the ``offline`` will instead, so the
        retained availability never claims ``online`` for a stopped agent. Returns when the
        publisher thread has ended (at once when called from ``on_state_change``, which runs on that
        thread).
        """
        thread = self._thread
        if thread is None:
            self._set_state(UplinkState.STOPPED)
            return
        self._events.put(_StopRequested(deadline=time.monotonic() + timeout_s))
        self._wake()
        if thread is threading.current_thread():
            return  # from on_state_change: the thread stops once the callback returns
        thread.join(timeout_s + _STOP_JOIN_GRACE_S)
        if thread.is_alive():
            log.error("uplink publisher thread still running %.1f s after stop()", timeout_s)

    def detach_status(self) -> None:
        """Give up the ``uplink`` status section and change listener, for a replacement uplink."""
        if self._status is not None:
            self._status.withdraw("uplink", self._status_changed)

    def stats(self) -> UplinkStats:
        """A snapshot of the counters and gauges."""
        with self._stats_lock:
            counters = self._counters
            return UplinkStats(
                state=self._state,
                in_flight=counters.in_flight,
                in_flight_limit=counters.in_flight_limit,
                held_back=counters.held_back,
                published=counters.published,
                delivered=counters.delivered,
                refused=counters.refused,
                connects=counters.connects,
                connection_losses=counters.connection_losses,
                last_refusal=counters.last_refusal,
                acks=counters.acks,
                confirmed=counters.confirmed,
                requeued=counters.requeued,
                status_published=counters.status_published,
                rows_read=counters.rows_read,
            )

    def _wake(self) -> None:
        """End the publisher thread's wait so it handles the event just queued."""
        wake_w = self._wake_w
        if wake_w is None:
            return  # not started: the event waits in the queue
        # OSError: full (a wake-up is pending anyway) or closed (the thread has ended).
        with contextlib.suppress(OSError):
            wake_w.send(b"\0")

    def _marked(self, result: _Marked) -> None:
        """Called on the marker thread."""
        self._events.put(result)
        self._wake()

    def _status_changed(self) -> None:
        self._events.put(_StatusChanged())
        self._wake()

    def _status_section(self) -> Mapping[str, Any]:
        """The ``uplink`` section of the status document (called from whichever thread builds it)."""
        with self._stats_lock:
            counters = self._counters
            since = counters.connected_since
            return {
                "state": self._state.value,
                "broker": f"{self._host}:{self._port}",
                "connected_since": None if since is None else iso_time(since),
                "last_connect_failure": counters.last_connect_failure,
                "in_flight": counters.in_flight,
                "held_back": counters.held_back,
                "published": counters.published,
                "delivered": counters.delivered,
                "refused": counters.refused,
                "last_refusal": counters.last_refusal,
                "connects": counters.connects,
                "connection_losses": counters.connection_losses,
                "acks": counters.acks,
                "confirmed": counters.confirmed,
                "requeued": counters.requeued,
            }

    # Publisher thread: main loop ------------------------------------------------------------------

    def _run(self) -> None:
        self._marker = _Marker(self._outbox, self._marked)
        try:
            self._serve()
        except Exception:
            log.exception("uplink publisher thread failed; nothing is published until a restart")
            # FAILED first: the service restarts the agent on it, and nothing below may prevent that.
            self._set_state(UplinkState.FAILED)
            try:
                self._abandon_client()
            except Exception:  # the thread ends anyway; the broker publishes the will on its own
                log.exception("dropping the MQTT client after the failure failed too")
        finally:
            if self._live is not None:
                self._live.set_online(False)
                self._live.attach(None)
            deadline = self._thread_deadline()
            self._marker.close(
                _MARKER_CLOSE_S if deadline is None else max(0.0, deadline - time.monotonic())
            )
            wake_r, wake_w, self._wake_w = self._wake_r, self._wake_w, None
            for end in (wake_r, wake_w):
                if end is not None:
                    end.close()

    def _serve(self) -> None:
        now = time.monotonic()
        self._next_connect_at = now
        self._next_poll_at = now + self._poll_interval_s
        self._next_prune_at = now + _PRUNE_INTERVAL_S  # the outbox prunes when it opens
        while True:
            events = self._wait_for_events()
            # PUBACKs first: paho read them before any disconnect that came with them.
            self._take_pubacks()
            for event in events:
                self._handle(event)
            now = time.monotonic()
            draining = bool(self._queue) or len(self._in_flight) > self._handoff * _TOP_UP_FRACTION
            if (
                not draining  # live traffic: mark at once, a crash then repeats almost nothing
                or len(self._acked) >= _MARK_BATCH
                or now - self._acked_since >= _MARK_DELAY_S
                or self._stop_deadline is not None
                or self._client is None
            ):
                self._mark_acknowledged()
            if now >= self._next_poll_at:
                self._next_poll_at = now + self._poll_interval_s
                self._rescan()
            if now >= self._next_prune_at:
                self._next_prune_at = now + _PRUNE_INTERVAL_S
                self._prune()
            self._release_holds(now)
            # Status first: while rows are being refused, the alarm must still get out.
            self._publish_status(now)
            self._publish_pending(now)
            self._publish_live()
            self._update_gauges()
            if self._stop_deadline is not None:
                # After publishing, so that "nothing left to flush" is known without waiting for an
                # event.
                if self._advance_stop(now):
                    return
            elif self._client is None and now >= self._next_connect_at:
                self._connect()

    def _wait_for_events(self) -> list[_Event]:
        """Wait for the broker's socket, a wake-up or a timer; run paho's network step; return
        every event queued by then (paho's callbacks queue theirs during the step)."""
        now = time.monotonic()
        timers = [self._next_poll_at]
        if self._stop_deadline is not None:
            stop_steps = (
                self._flush_until,
                self._stop_deadline,
                self._stop_deadline + _DISCONNECT_GRACE_S,
            )
            timers.extend(step for step in stop_steps if step > now)
        elif self._client is None:
            timers.append(self._next_connect_at)
        timers.extend(hold.until for hold in self._holds.values() if hold.waiting)
        timers.extend(hold.until for hold in self._topic_holds.values() if hold.waiting)
        if (
            self._status is not None
            and self._session_up
            and self._stop_deadline is None
            and self._control_room()  # else the PUBACK that frees a slot wakes this thread
        ):
            timers.append(self._status_publish_at())
        if self._storage_retry_at > now:
            timers.append(self._storage_retry_at)
        if self._acked and not self._marking:  # else the marker's report wakes this thread
            timers.append(self._acked_since + _MARK_DELAY_S)
        client = self._client
        if client is not None and client.want_write() and client.socket() is not None:
            client.loop_write()  # what this pass queued: PUBLISHes, SUBSCRIBE, DISCONNECT
        sock = None if client is None else client.socket()
        if sock is not None:
            timers.append(self._next_misc_at)
        timeout = max(0.0, min(timers) - now)
        # TLS may hold decrypted bytes that poll() cannot see; events may be queued already.
        if self._pubacks or not self._events.empty() or (sock is not None and _tls_pending(sock)):
            timeout = 0.0
        assert self._wake_r is not None
        # poll, not select: select() cannot wait on a descriptor numbered 1024 or above, which a
        # process holding many files (camera, serial, SQLite, sockets) may well be handed.
        poller = select.poll()
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, _POLL_READ)
        sock_fd = -1
        if sock is not None:
            assert client is not None
            sock_fd = sock.fileno()
            # A full socket buffer: also wait until it drains.
            poller.register(
                sock_fd, _POLL_READ | _POLL_WRITE if client.want_write() else _POLL_READ
            )
        readable = writable = False
        for fd, mask in poller.poll(timeout * 1000.0):
            if fd == wake_fd:
                _drain(self._wake_r)
            elif fd == sock_fd:
                readable = bool(mask & _POLL_READABLE)
                writable = bool(mask & _POLL_WRITE)
        if client is not None and sock is not None:
            self._network_step(client, sock, readable, writable)
        events: list[_Event] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _network_step(self, client: mqtt.Client, sock: Any, readable: bool, writable: bool) -> None:
        """What paho's own loop does each pass: read, write what is left, keepalive housekeeping.

        Errors need no handling here: paho closes the socket and calls ``on_disconnect``, which
        queues the event that releases the client.
        """
        if readable or _tls_pending(sock):
            client.loop_read()
        # The PUBLISHes that paho released from its queue as PUBACKs came in, in one burst.
        if (readable or writable) and client.want_write() and client.socket() is not None:
            client.loop_write()
        now = time.monotonic()
        if now >= self._next_misc_at and client.socket() is not None:
            self._next_misc_at = now + _MISC_INTERVAL_S
            client.loop_misc()  # sends PINGREQ; gives up on a silent link or a missing CONNACK

    def _take_pubacks(self) -> None:
        pubacks = self._pubacks
        generation = self._generation
        while pubacks:
            puback_generation, mid, reason = pubacks.popleft()
            if puback_generation == generation:  # else from a client already replaced
                self._on_published(mid, reason)

    def _handle(self, event: _Event) -> None:
        match event:
            case _Connected(generation, reason, session_present, receive_maximum) if (
                generation == self._generation
            ):
                self._on_connected(reason, session_present, receive_maximum)
            case _Disconnected(generation, reason) if generation == self._generation:
                self._on_disconnected(reason)
            case _Wake():
                if self._queue and self._queue[0].priority > PRIORITY_CROSSING:
                    # A crossing may just have been appended: it goes before the images or health
                    # rows read ahead, not behind all of them.
                    self._take_new_crossings()
                else:
                    self._rescan()
            case _StatusChanged():
                self._status_due = True
            case _Marked() as result if self._marking and result.batch == self._marking_batch:
                self._on_marked(result)
            case _AckReceived(generation, payload) if generation == self._generation:
                self._on_ack(payload)
            case _StopRequested(deadline) if self._stop_deadline is None:
                now = time.monotonic()
                self._stop_deadline = deadline
                # Keep a quarter of the time, at most a second, for 'stopped' and the DISCONNECT.
                self._flush_until = deadline - min(1.0, max(0.0, deadline - now) / 4)
                self._set_state(UplinkState.STOPPING)
            case _:
                return  # from a client already replaced, or a second stop request: ignored

    def _set_state(self, state: UplinkState) -> None:
        if state is self._state:
            return
        with self._stats_lock:
            self._state = state
        if self._on_state_change is not None:
            try:
                self._on_state_change(state)
            except Exception:
                log.exception("on_state_change callback failed for %s", state.value)

    def _update_gauges(self) -> None:
        """Gauges and the publish count, once per pass of the publisher loop."""
        held = sum(1 for hold in self._holds.values() if hold.waiting)
        published, self._published_uncounted = self._published_uncounted, 0
        with self._stats_lock:
            self._counters.published += published
            self._counters.in_flight = len(self._in_flight)
            self._counters.in_flight_limit = self._inflight_cap
            self._counters.held_back = held

    # Publisher thread: connection -----------------------------------------------------------------

    def _connect(self) -> None:
        self._generation += 1
        # paho leaves Properties.__init__ untyped.
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        self._set_state(UplinkState.CONNECTING)
        log.debug("connecting to %s:%d as %s", self._host, self._port, self._client_id)
        try:
            client = self._new_client(self._generation)
        except (OSError, ValueError) as error:
            # Missing or unreadable CA, certificate or key: retried, since files may be renewed.
            self._schedule_reconnect(f"TLS files unusable: {error}")
            return
        try:
            client.connect(
                self._host,
                self._port,
                keepalive=_paho_keepalive(self._keepalive_s),
                clean_start=False,
                properties=properties,
            )
        except ssl.SSLCertVerificationError as error:
            self._schedule_reconnect(f"TLS: broker certificate rejected: {error.verify_message}")
            return
        except ssl.SSLError as error:
            self._schedule_reconnect(f"TLS handshake failed: {error.reason or error}")
            return
        except ConnectionRefusedError:
            self._schedule_reconnect("connection refused (is the broker running?)")
            return
        except OSError as error:
            self._schedule_reconnect(f"connecting failed: {error}")
            return
        self._client = client
        self._next_misc_at = time.monotonic() + _MISC_INTERVAL_S

    def _new_client(self, generation: int) -> mqtt.Client:
        events = self._events
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,  # reconnecting is ours: with jitter and a fresh client
        )
        if _paho_log.isEnabledFor(logging.DEBUG):  # paho formats a line per packet when asked
            client.on_log = _log_paho_message
        client.max_inflight_messages_set(self._paho_window)
        self._live_window = self._paho_window
        client.will_set(self._topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True)
        if self._tls is not None:
            client.tls_set(
                ca_certs=str(self._tls.ca_file),
                certfile=str(self._tls.cert_file),
                keyfile=str(self._tls.key_file),
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        # With this set, paho queues packets instead of writing each at once, and the publisher
        # loop writes them: the PUBLISHes released by a batch of PUBACKs reach the broker as one
        # burst rather than one wake-up of the broker per message.
        client.on_socket_register_write = _write_later

        # paho calls these from inside loop_read() and friends, with its locks held: they only
        # record what happened, for the publisher to act on once paho has returned.
        pubacks = self._pubacks

        def on_connect(
            _client: mqtt.Client,
            _userdata: Any,
            flags: mqtt.ConnectFlags,
            reason: ReasonCode,
            properties: Properties | None,
        ) -> None:
            receive_maximum = getattr(properties, "ReceiveMaximum", None)
            events.put(_Connected(generation, reason, flags.session_present, receive_maximum))

        def on_disconnect(
            _client: mqtt.Client,
            _userdata: Any,
            _flags: mqtt.DisconnectFlags,
            reason: ReasonCode,
            _properties: Properties | None,
        ) -> None:
            events.put(_Disconnected(generation, reason))

        def on_publish(
            _client: mqtt.Client,
            _userdata: Any,
            mid: int,
            reason: ReasonCode,
            _properties: Properties,
        ) -> None:
            pubacks.append((generation, mid, reason))

        def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
            events.put(_AckReceived(generation, bytes(message.payload)))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        return client

    def _on_connected(
        self, reason: ReasonCode, session_present: bool, receive_maximum: int | None
    ) -> None:
        if reason.value >= _FAILURE_THRESHOLD:
            # paho closes the socket and reports a disconnect next; that schedules the retry.
            log.warning(
                "broker %s:%d refused the connection as %s: %s%s",
                self._host,
                self._port,
                self._client_id,
                reason,
                _refusal_hint(reason),
            )
            with self._stats_lock:
                self._counters.last_connect_failure = f"CONNACK: {reason}"
            return
        self._session_up = True
        self._connected_at = time.monotonic()
        # paho ignores the broker's Receive Maximum; MQTT lets a broker disconnect (0x93) past it.
        self._inflight_cap = min(self._max_inflight, receive_maximum or self._max_inflight)
        # paho keeps at most its window on the wire and queues the rest of what it is handed; it
        # cannot change the window on a live connection, so a broker allowing fewer than paho's
        # window gets one message (row, status or availability) per slot now, and the next client
        # gets the broker's window: smaller, or larger again once a broker allows more.
        self._paho_window = self._inflight_cap
        if self._inflight_cap < self._live_window:
            self._handoff = self._inflight_cap
        else:
            self._handoff = self._inflight_cap * _HANDOFF_FACTOR
        with self._stats_lock:
            self._counters.connects += 1
            self._counters.connected_since = time.time()
        assert self._client is not None
        # The retained watermark arrives right after the SUBACK; re-sending starts at once anyway,
        # and a watermark arriving later removes rows before they go out again.
        self._client.subscribe(self._topics.ack, qos=1)
        self._settle_marks()
        try:
            requeued = self._outbox.requeue_unconfirmed()
        except (OutboxError, sqlite3.Error) as error:
            self._storage_failed("re-queueing unconfirmed rows", error)
        else:
            if requeued:
                self._drop_prefetched()  # re-read in outbox order, the re-queued rows first
                log.info("%d rows sent but not confirmed by ingest go out again", requeued)
                with self._stats_lock:
                    self._counters.requeued += requeued
        self._status_due = True
        log.info(
            "connected to %s:%d as %s (session present: %s, up to %d in flight)",
            self._host,
            self._port,
            self._client_id,
            session_present,
            self._inflight_cap,
        )
        # Refused rows keep their hold across reconnects: brokers (Mosquitto among them) close the
        # connection right after refusing, and retrying at once would turn one refused row into a
        # reconnect storm.
        self._rescan()
        if self._stop_deadline is None:
            self._set_state(UplinkState.CONNECTED)
            self._publish_control(AVAILABILITY_ONLINE)
        if self._live is not None:
            self._live.set_online(True)

    def _on_disconnected(self, reason: ReasonCode) -> None:
        was_up = self._session_up
        returned = len(self._in_flight)
        self._release_client()
        with self._stats_lock:
            self._counters.connected_since = None
        if self._stop_deadline is not None:
            log.info("disconnected from %s:%d (%s)", self._host, self._port, reason)
            return
        if was_up and time.monotonic() - self._connected_at >= _STABLE_CONNECTION_S:
            self._connect_failures = 0  # a short-lived connection keeps the back-off growing
        if was_up:
            with self._stats_lock:
                self._counters.connection_losses += 1
            self._schedule_reconnect(
                f"connection lost ({reason}); {returned} unacknowledged rows go back to pending"
            )
        else:
            self._schedule_reconnect(f"connection attempt failed ({reason})")

    def _schedule_reconnect(self, why: str) -> None:
        delay = backoff_delay(
            self._connect_failures, self._reconnect_min_s, self._reconnect_max_s, self._rng
        )
        self._connect_failures += 1
        self._next_connect_at = time.monotonic() + delay
        with self._stats_lock:
            self._counters.last_connect_failure = why
        log.warning(
            "uplink to %s:%d: %s; attempt %d in %.1f s",
            self._host,
            self._port,
            why,
            self._connect_failures + 1,
            delay,
        )
        self._set_state(UplinkState.DISCONNECTED)

    def _release_client(self) -> None:
        """Forget a client whose connection has ended; its in-flight rows return to pending."""
        client, self._client = self._client, None
        self._generation += 1
        self._session_up = False
        self._in_flight.clear()
        self._control_in_flight.clear()
        self._forget_live()
        self._drop_prefetched()
        if client is not None:
            _close_socket(client)  # paho has closed it after reporting the disconnect; to be sure

    def _abandon_client(self) -> None:
        """Drop the client without waiting for paho's thread: when time is up, or on failure."""
        client, self._client = self._client, None
        self._generation += 1
        self._session_up = False
        self._in_flight.clear()
        self._control_in_flight.clear()
        self._forget_live()
        self._drop_prefetched()
        if client is not None:
            client.disconnect(_WITH_WILL)
            if client.socket() is not None:
                client.loop_write()  # sent if the socket takes it; paho then closes it
            # Nobody drives this client's loop any more: a DISCONNECT still queued is dropped with
            # the socket, and the broker publishes the will for a connection closed without one.
            _close_socket(client)

    # Publisher thread: publishing -----------------------------------------------------------------

    def _control_room(self) -> bool:
        """Whether a control message may go out now without exceeding the broker's Receive Maximum.

        Where paho's window is within it, paho holds back what does not fit itself; where it is
        not (the first connection to a broker that allows fewer), every message counts here.
        """
        if self._live_window <= self._inflight_cap:
            return True
        in_flight = len(self._in_flight) + len(self._control_in_flight) + len(self._live_in_flight)
        return in_flight < self._inflight_cap

    def _publish_live(self) -> None:
        """Publish waiting live crossing events, within their share of the window.

        After the outbox's rows in each pass, and never more than ``max_in_flight`` of them
        awaiting PUBACK (nor past a broker's Receive Maximum): a live event can take a slot a
        crossing could have used only while fewer than that are out, and never waits for one.
        """
        live = self._live
        client = self._client
        if live is None or client is None or not self._session_up:
            return
        if self._stop_deadline is not None and self._stop_phase is not _StopPhase.FLUSHING:
            return
        # Half the window at most, so that a lane configured for one message in flight still
        # sends its crossings one after the other.
        limit = min(live.max_in_flight, max(1, self._inflight_cap // 2))
        while len(self._live_in_flight) < limit and self._control_room():
            room = limit - len(self._live_in_flight)
            messages = live.take(1 if self._live_window > self._inflight_cap else room)
            if not messages:
                return
            for message in messages:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.MessageExpiryInterval = message.expiry_s
                info = client.publish(
                    message.topic,
                    message.payload,
                    qos=1,
                    retain=message.retain,
                    properties=properties,
                )
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    log.warning(
                        "paho did not take a live event on %s: %s",
                        message.topic,
                        mqtt.error_string(info.rc),
                    )
                    live.acknowledged(message, refused=True)
                    continue
                self._live_in_flight[info.mid] = message
                live.published(message)

    def _forget_live(self) -> None:
        """The session ended: live events in flight are not sent again, waiting ones dropped."""
        self._live_in_flight.clear()
        if self._live is not None:
            self._live.set_online(False)

    def _publish_control(self, payload: bytes, topic: str | None = None) -> None:
        """Publish a retained control message (availability by default, or the status).

        Callers check _control_room() first, except for 'online' right after the CONNACK, when
        nothing is in flight yet on the fresh client.
        """
        assert self._client is not None
        topic = topic or self._topics.availability
        info = self._client.publish(topic, payload, qos=1, retain=True)
        self._control_in_flight[info.mid] = (topic, payload)

    def _status_publish_at(self) -> float:
        """When the next status document is due (monotonic)."""
        if self._status_due:
            return min(self._next_status_at, self._last_status_at + _STATUS_MIN_GAP_S)
        return self._next_status_at

    def _publish_status(self, now: float) -> None:
        if self._status is None or self._client is None or not self._session_up:
            return
        if self._stop_deadline is not None or now < self._status_publish_at():
            return
        if not self._control_room():
            return  # still due: a PUBACK frees a slot and wakes the loop
        self._status_due = False
        self._last_status_at = now
        self._next_status_at = now + self._status_interval_s
        self._update_gauges()  # the document shows the gauges as of now
        self._publish_control(self._status.encode(), self._topics.status)
        with self._stats_lock:
            self._counters.status_published += 1

    def _on_ack(self, payload: bytes) -> None:
        """Apply central ingest's retained watermark document (see docs/delivery.md)."""
        watermarks = _parse_watermarks(payload)
        if watermarks is None:
            log.warning(
                "ignored a malformed acknowledgement on %s (%d bytes)",
                self._topics.ack,
                len(payload),
            )
            return
        for stream, acked_seq in watermarks.items():
            try:
                result = self._outbox.confirm(stream, acked_seq)
            except (OutboxError, sqlite3.Error) as error:
                # The watermark comes again on the next reconnect; until then rows are kept.
                self._storage_failed("applying the acknowledgement watermark", error)
                return
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
            with self._stats_lock:
                self._counters.acks += 1
                self._counters.confirmed += result.removed
            if result.removed:
                self._drop_prefetched()  # do not publish rows central already has
                log.debug(
                    "ingest confirmed stream %s up to seq %d: %d rows removed",
                    stream,
                    acked_seq,
                    result.removed,
                )
                self._status_due = True

    def _publish_pending(self, now: float) -> None:
        client = self._client
        if client is None or not self._session_up:
            return
        if not self._outbox_may_have_more and not self._queue:
            return
        if self._stop_deadline is not None and self._stop_phase is not _StopPhase.FLUSHING:
            return
        if now < self._storage_retry_at:
            return
        # Handing paho a few windows' worth lets it send the next row the moment a PUBACK frees a
        # slot, while it is still reading PUBACKs, without coming back here for each one.
        handed = len(self._in_flight) + len(self._control_in_flight)
        if handed > self._handoff * _TOP_UP_FRACTION:
            return  # top up in batches, not one row per PUBACK
        room = self._handoff - handed
        if room <= 0:
            return
        if not self._holds and not self._topic_holds:
            self._publish_prefetched(client, room)
            return
        # Rows are being refused: no prefetching, holds are checked on every read.
        self._drop_prefetched()
        excluded = self._busy_ids()
        excluded.extend(row_id for row_id, hold in self._holds.items() if hold.waiting)
        held_topics = {topic for topic, hold in self._topic_holds.items() if hold.waiting}
        probing = set(self._topic_holds) - held_topics
        if probing:
            if any(row.topic in probing for row in self._in_flight.values()):
                held_topics |= probing  # one probe at a time
            else:
                room = 1
        try:
            rows = self._outbox.pending(room, exclude_ids=excluded, exclude_topics=held_topics)
        except (OutboxError, sqlite3.Error) as error:
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
                except (OutboxError, sqlite3.Error) as error:
                    self._storage_failed("reading pending rows", error)
                    return
                self._count_read(len(rows))
                if len(rows) < _PREFETCH_ROWS:
                    self._outbox_may_have_more = False
                    self._scan_after = None
                else:
                    self._scan_after = (rows[-1].priority, rows[-1].id)
                if continuing and (self._in_flight or self._acked or self._marking):
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
        busy = [row.id for row in self._in_flight.values()]
        busy.extend(self._acked)
        busy.extend(self._marking)
        return busy

    def _publish_row(self, client: mqtt.Client, row: OutboxRow) -> None:
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
        self._in_flight[info.mid] = row
        self._published_uncounted += 1

    def _on_published(self, mid: int, reason: ReasonCode) -> None:
        row = self._in_flight.pop(mid, None)
        if row is None:
            self._on_control_published(mid, reason)
            return
        if reason.value < _FAILURE_THRESHOLD:
            if not self._acked:
                self._acked_since = time.monotonic()
            self._acked.append(row.id)
            if self._on_acknowledged is not None:
                self._on_acknowledged(row)
            released = self._holds.pop(row.id, None) is not None
            released |= self._topic_holds.pop(row.topic, None) is not None
            if released and not self._holds and not self._topic_holds and self._status is not None:
                self._status.clear_fault(FAULT_PUBLISH_REFUSED)
            return
        self._count_refusal(reason)
        self._drop_prefetched()  # prefetched rows may be on the refused topic
        if self._status is not None:
            self._status.raise_fault(
                FAULT_PUBLISH_REFUSED,
                f"broker refused publishing on {row.topic}: {reason}; rows kept and retried",
            )
        previous = self._holds.get(row.id)
        hold = self._hold(row.id, refusals=0 if previous is None else previous.refusals + 1)
        topic_hold = self._topic_holds.get(row.topic)
        refusals = 0 if topic_hold is None else topic_hold.refusals + 1
        delay = backoff_delay(refusals, self._reconnect_min_s, self._reconnect_max_s, self._rng)
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

    def _on_control_published(self, mid: int, reason: ReasonCode) -> None:
        sent = self._control_in_flight.pop(mid, None)
        if sent is None:
            self._on_live_published(mid, reason)
            return
        topic, payload = sent
        if reason.value >= _FAILURE_THRESHOLD:
            self._count_refusal(reason)
            log.warning("broker refused a retained message on %s: %s", topic, reason)
        elif topic == self._topics.availability and payload == AVAILABILITY_STOPPED:
            self._stopped_acknowledged = True

    def _on_live_published(self, mid: int, reason: ReasonCode) -> None:
        message = self._live_in_flight.pop(mid, None)
        if message is None or self._live is None:
            return
        refused = reason.value >= _FAILURE_THRESHOLD
        if refused:
            self._count_refusal(reason)
            # The topic only: the payload carries card numbers and plates.
            log.warning("broker refused a live crossing event on %s: %s", message.topic, reason)
        self._live.acknowledged(message, refused=refused)

    def _count_refusal(self, reason: ReasonCode) -> None:
        with self._stats_lock:
            self._counters.refused += 1
            self._counters.last_refusal = str(reason)

    def _hold(self, row_id: int, *, refusals: int) -> _Hold:
        delay = backoff_delay(refusals, self._reconnect_min_s, self._reconnect_max_s, self._rng)
        hold = _Hold(until=time.monotonic() + delay, refusals=refusals)
        self._holds[row_id] = hold
        return hold

    def _rescan(self) -> None:
        """Rows may have become pending anywhere in the outbox: the next read starts at the top."""
        self._outbox_may_have_more = True
        self._scan_after = None

    def _take_new_crossings(self) -> None:
        """Put crossings appended since the read-ahead at the front of the queue.

        Only crossing rows are read (not the images or health rows already queued, payloads and
        all); a burst too large for one read drops the read-ahead and scans afresh instead.
        """
        busy = self._busy_ids()
        busy.extend(row.id for row in self._queue)
        try:
            rows = self._outbox.pending_of_priority(
                PRIORITY_CROSSING, _WAKE_CROSSING_ROWS, exclude_ids=busy
            )
        except (OutboxError, sqlite3.Error) as error:
            self._storage_failed("reading new crossings", error)
            return
        self._count_read(len(rows))
        if len(rows) >= _WAKE_CROSSING_ROWS:
            self._drop_prefetched()
            return
        self._queue.extendleft(reversed(rows))

    def _count_read(self, rows: int) -> None:
        with self._stats_lock:
            self._counters.rows_read += rows

    def _drop_prefetched(self) -> None:
        """Forget rows read but not yet handed to paho; a fresh scan reads them again, in order."""
        self._queue.clear()
        self._rescan()  # at once: they may be the only pending rows, and no poll is due for a while

    def _release_holds(self, now: float) -> None:
        """Let rows whose back-off ended go out again; the refusal count stays for the next one."""
        for hold in [*self._holds.values(), *self._topic_holds.values()]:
            if hold.waiting and hold.until <= now:
                hold.waiting = False
                self._rescan()

    def _mark_acknowledged(self) -> None:
        """Hand the acknowledged rows to the marker thread, unless it is still on the last batch
        (they go with the next one: while a backlog drains, each fsync covers more rows)."""
        if not self._acked or self._marking:
            return
        assert self._marker is not None
        self._marking, self._acked = self._acked, []
        self._marking_batch += 1
        self._marker.submit(self._marking_batch, self._marking)

    def _on_marked(self, result: _Marked) -> None:
        self._marking = []
        error = result.error
        if error is not None:
            if not isinstance(error, OutboxError | sqlite3.Error):
                raise error  # a bug, not a storage problem: fail as if it happened here
            # The rows stay unsent in the outbox and go out again later: a duplicate, never a loss.
            self._storage_failed("marking acknowledged rows sent", error)
            return
        with self._stats_lock:
            self._counters.delivered += result.count
        if self._status is not None and FAULT_OUTBOX_ERROR in self._status.active_faults():
            self._status.clear_fault(FAULT_OUTBOX_ERROR)

    def _settle_marks(self, timeout_s: float | None = None) -> bool:
        """Make the outbox show every acknowledged row as sent before going on.

        Before re-queueing after a reconnect, so that a mark landing late cannot hide a row the
        re-queue should have sent again; and at stop, within ``timeout_s`` in all. Waits for the
        marker's batch, then has it mark what is left: on the marker, a write that waits for a
        lock (SQLite's busy timeout) cannot hold this thread past ``timeout_s``. False when the
        marker is still at it.
        """
        assert self._marker is not None
        until = None if timeout_s is None else time.monotonic() + timeout_s
        for _ in range(2):  # the batch in hand, then the rows acknowledged since
            if not self._marking:
                self._mark_acknowledged()
            if not self._marking:
                return True
            left = None if until is None else max(0.0, until - time.monotonic())
            if not self._marker.wait_idle(left):
                log.warning("outbox still busy marking rows sent; they may be sent again")
                return False
            assert self._marker.result is not None
            self._on_marked(self._marker.result)  # its event, still queued, is then ignored
        return not self._acked and not self._marking

    def _storage_failed(self, doing: str, error: Exception) -> None:
        log.error("outbox error while %s: %s; retrying in %.1f s", doing, error, _STORAGE_RETRY_S)
        if self._status is not None:
            self._status.raise_fault(FAULT_OUTBOX_ERROR, f"outbox error while {doing}: {error}")
        self._storage_retry_at = time.monotonic() + _STORAGE_RETRY_S
        self._rescan()

    def _prune(self) -> None:
        try:
            pruned = self._outbox.prune_sent()
        except (OutboxError, sqlite3.Error) as error:
            self._storage_failed("pruning sent rows", error)
            return
        if pruned:
            log.debug("pruned %d sent rows from the outbox", pruned)

    # Publisher thread: stopping -------------------------------------------------------------------

    def _advance_stop(self, now: float) -> bool:
        """Advance a clean stop: flush, say 'stopped', disconnect. True once the thread can end."""
        assert self._stop_deadline is not None
        deadline = self._stop_deadline
        client = self._client
        if client is None:  # not connected, or the DISCONNECT went through
            self._finish_stop()
            return True
        if self._stop_phase is _StopPhase.FLUSHING:
            drained = not (
                self._in_flight
                or self._live_in_flight
                or (self._live is not None and self._live.waiting())
                or self._acked
                or self._marking
                or self._queue
                or self._outbox_may_have_more
            )
            if now >= self._flush_until or (self._session_up and drained):
                self._stop_phase = _StopPhase.SAYING_STOPPED
        if self._stop_phase is _StopPhase.SAYING_STOPPED:
            if self._session_up and not self._stopped_published and self._control_room():
                self._publish_control(AVAILABILITY_STOPPED)
                self._stopped_published = True
            if self._stopped_acknowledged or not self._session_up or now >= deadline:
                self._stop_phase = _StopPhase.DISCONNECTING
                # A normal DISCONNECT discards the will; without 'stopped' delivered, ask for the
                # will instead.
                client.disconnect(None if self._stopped_acknowledged else _WITH_WILL)
        if self._stop_phase is _StopPhase.DISCONNECTING and now >= deadline + _DISCONNECT_GRACE_S:
            log.warning("no clean disconnect from %s:%d in time", self._host, self._port)
            self._abandon_client()
            self._finish_stop()
            return True
        return False

    def _thread_deadline(self) -> float | None:
        """When the publisher thread must have ended once a stop was requested (monotonic).

        stop() joins for its timeout plus _STOP_JOIN_GRACE_S, and the caller closes the outbox
        next: the thread gives up on the marker by then rather than outlive the join.
        """
        if self._stop_deadline is None:
            return None
        return self._stop_deadline + _DISCONNECT_GRACE_S + _SETTLE_AT_STOP_S

    def _finish_stop(self) -> None:
        deadline = self._thread_deadline()
        assert deadline is not None
        settled = self._settle_marks(min(_SETTLE_AT_STOP_S, max(0.0, deadline - time.monotonic())))
        self._in_flight.clear()
        self._update_gauges()
        if not settled:
            # The marker holds the outbox (waiting for SQLite's lock): reading it would wait too.
            log.info("uplink stopped; rows stay in the outbox for the next run")
            self._set_state(UplinkState.STOPPED)
            return
        try:
            left = self._outbox.stats().depth
        except (OutboxError, sqlite3.Error) as error:
            log.info("uplink stopped (outbox unreadable: %s)", error)
        else:
            log.info("uplink stopped; %d rows stay in the outbox for the next run", left)
        self._set_state(UplinkState.STOPPED)


def _write_later(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """paho's 'socket wants writing' hook: nothing to do, the publisher loop checks want_write()."""


def _tls_pending(sock: Any) -> bool:
    """True when a TLS socket holds decrypted bytes already read from the kernel."""
    pending = getattr(sock, "pending", None)
    return pending is not None and bool(pending())


def _drain(sock: socket.socket) -> None:
    """Empty the wake-up socket: one pass of the publisher loop handles every event queued so far."""
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        return


def _close_socket(client: mqtt.Client) -> None:
    """Close a discarded client's socket if paho has not (it does on every disconnect it sees)."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _refusal_hint(reason: ReasonCode) -> str:
    """What an operator should check for the common CONNACK refusals."""
    hints = {
        0x85: "client identifier not valid",
        0x86: "check the username/password",
        0x87: "check that the broker's ACL lets this lane's certificate identity connect",
        0x88: "the broker is not accepting connections (starting up or overloaded)",
        0x8A: "this lane is banned on the broker",
        0x9F: "connection rate exceeded: back-off continues",
    }
    hint = hints.get(reason.value)
    return f" ({hint})" if hint else ""


def _parse_watermarks(payload: bytes) -> dict[str, int] | None:
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


def _paho_keepalive(keepalive_s: int) -> int:
    """The MQTT keepalive to negotiate so a silent link is noticed within ``keepalive_s``.

    paho sends PINGREQ once nothing arrived for one keepalive and gives up one keepalive after
    that, checking about once a second: a dead link shows after 2 x keepalive + 1 s at worst.
    Negotiating half the configured value keeps detection within 1.5 x ``keepalive_s`` (for 5 s and
    up) at the cost of a ping every ``keepalive_s / 2`` on an idle lane: a few bytes.
    """
    return max(1, keepalive_s // 2)
