"""MQTT v5 uplink: publishes outbox rows in order at QoS 1, marks them sent only on a good PUBACK.

:class:`MqttUplink` is the part the service sees (start, notify, stop, stats) and the publisher
thread's loop; the rest of the story is told where it happens (see :mod:`agent.uplink`).

Threads: one publisher thread owns all uplink state and drives paho's network loop itself
(``loop_read``/``loop_write``/``loop_misc`` when ``poll`` says the socket is ready) instead of
paho's own thread (``loop_start``); a second, small thread marks acknowledged rows sent
(:mod:`agent.uplink.marker`). Measured against raw paho (BENCHMARKS.md, bench/bench_uplink.py),
the per-message cost on top of paho's own was what set the outbox's rate: an event object and a
queue hand-off per PUBACK between paho's thread and this one, an SQL exclusion list on every read,
a statement per row to mark, and an fsync that, on the thread driving the socket, stalls the whole
pipeline. So: one thread for socket and state (PUBACKs are plain tuples on a deque; the PUBLISHes
a batch of PUBACKs releases go out in one burst), reads that continue a scan with an index seek,
and marks as one statement on the marker thread, where SQLite and the fsync run without the GIL.
Other threads reach the publisher through a queue and a wake-up socket (``notify``, ``stop``,
status changes, the marker). paho callbacks only record what happened
(:mod:`agent.uplink.connection`).

Each pass of the loop: wait for the socket, a wake-up or a timer; run paho's network step; apply
the PUBACKs, then the events; hand acknowledged rows to the marker; publish the status, then the
outbox's rows, then live events; connect if it is time. Stopping is a few more steps of the same
loop: flush what can be flushed within the time given, publish ``stopped``, disconnect.
"""

from __future__ import annotations

import collections
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt import MAX_SESSION_EXPIRY_S, ReconnectBackoff, TlsFiles
from agent.status import StatusBoard
from agent.uplink.confirmation import Confirmations
from agent.uplink.connection import Puback, UplinkConnection, tls_pending
from agent.uplink.control import ControlMessages
from agent.uplink.events import (
    AckReceived,
    Connected,
    Disconnected,
    Event,
    Marked,
    StatusChanged,
    StopRequested,
    Wake,
    Waker,
)
from agent.uplink.live_feed import LiveFeed
from agent.uplink.live_sending import LiveSending
from agent.uplink.marker import Marking
from agent.uplink.stats import (
    FAULT_OUTBOX_ERROR,
    FAULT_PUBLISH_REFUSED,
    Counters,
    UplinkState,
    UplinkStats,
)
from agent.uplink.stopping import SETTLE_AT_STOP_S, STOP_JOIN_GRACE_S, Stopping
from agent.uplink.store import DEFAULT_URGENT_PRIORITY, PendingRow, RowStore
from agent.uplink.window import SendWindow
from agent.wire.topics import AVAILABILITY_ONLINE, Topics

__all__ = [
    "DEFAULT_SESSION_EXPIRY_S",
    "MqttUplink",
    "TlsFiles",
    "UplinkState",
    "UplinkStats",
]

log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 24 * 3600
_SILENT_REFUSAL_SESSIONS = 3
"""Sessions in a row closed by the broker with rows in flight and none acknowledged: an alarm."""
"""Keep the broker session for a day: long enough for any outage a lane rides out on its outbox."""

_MARKER_CLOSE_S = 5.0  # after a failure (no stop deadline), for the marker's batch in hand
_STABLE_CONNECTION_S = 30.0  # a connection that lasted this long resets the reconnect back-off
_PRUNE_INTERVAL_S = 600.0  # sent rows are kept for hours; pruning every ten minutes is plenty
_STORAGE_RETRY_S = 1.0  # pause after an outbox error before touching SQLite again


class MqttUplink:
    """Drains a row store (the lane's outbox, :mod:`agent.uplink.store`) to an MQTT v5 broker:
    start(), notify() after appends, stop()."""

    def __init__(
        self,
        outbox: RowStore,
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
        on_acknowledged: Callable[[PendingRow], None] | None = None,
        live: LiveFeed | None = None,
        rng: random.Random | None = None,
        storage_errors: tuple[type[Exception], ...] = (Exception,),
        urgent_priority: int = DEFAULT_URGENT_PRIORITY,
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

        ``storage_errors`` are what the outbox raises when its storage fails (for the lane's
        outbox: ``OutboxError`` and ``sqlite3.Error``): logged, the ``outbox_error`` fault, a
        retry a second later. Anything else it raises fails the publisher thread (``FAILED``);
        the default treats every ``Exception`` as storage trouble. Rows of ``urgent_priority``
        (the outbox's crossings) appended while others are read ahead go out first.
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
        if not 0 <= session_expiry_s <= MAX_SESSION_EXPIRY_S:
            raise ValueError(
                f"session_expiry_s must be 0..{MAX_SESSION_EXPIRY_S}, not {session_expiry_s!r}"
            )
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, not {poll_interval_s!r}")
        if status_interval_s <= 0:
            raise ValueError(f"status_interval_s must be > 0, not {status_interval_s!r}")
        self._outbox = outbox
        self._storage_errors = storage_errors
        self._poll_interval_s = poll_interval_s
        self._status = status
        self._unacked_drops = 0
        """Sessions in a row that ended with rows in flight and none of them acknowledged."""
        self._delivered_at_connect = 0
        self._delivered_at_fault: int | None = None
        """Rows delivered when the broker's closing refusals were alarmed (None: no alarm)."""
        self._on_state_change = on_state_change
        self._live = live
        rng = rng if rng is not None else random.Random()

        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        # Other threads wake the publisher through it after queueing an event; None: not running.
        self._waker: Waker | None = None
        self._thread: threading.Thread | None = None
        self._counters = Counters(in_flight_limit=max_inflight)

        # Everything below belongs to the publisher thread once start() ran.
        # PUBACKs as paho reports them: one per message, so a plain tuple on a deque rather than
        # an event object on the queue.
        self._pubacks: collections.deque[Puback] = collections.deque()
        self._connection = UplinkConnection(
            host=host,
            port=port,
            client_id=client_id,
            keepalive_s=keepalive_s,
            session_expiry_s=session_expiry_s,
            username=username,
            password=password,
            tls=tls,
            availability_topic=topics.availability,
            backoff=ReconnectBackoff(
                reconnect_min_s, reconnect_max_s, rng, stable_after_s=_STABLE_CONNECTION_S
            ),
            counters=self._counters,
            events=self._events,
            pubacks=self._pubacks,
        )
        self._marks = Marking(
            outbox,
            self._counters,
            status=status,
            report=self._marked,
            storage_errors=storage_errors,
            storage_failed=self._storage_failed,
        )
        self._window = SendWindow(
            outbox,
            self._marks,
            self._counters,
            max_inflight=max_inflight,
            retry_min_s=reconnect_min_s,
            retry_max_s=reconnect_max_s,
            rng=rng,
            status=status,
            on_acknowledged=on_acknowledged,
            urgent_priority=urgent_priority,
            storage_errors=storage_errors,
            storage_failed=self._storage_failed,
        )
        self._confirmations = Confirmations(
            outbox,
            topics.ack,
            self._counters,
            status=status,
            storage_errors=storage_errors,
            storage_failed=self._storage_failed,
        )
        self._control = ControlMessages(
            self._window,
            topics,
            self._counters,
            status=status,
            status_interval_s=status_interval_s,
        )
        self._live_sending = (
            None if live is None else LiveSending(live, self._window, self._counters)
        )
        self._next_poll_at = 0.0
        self._next_prune_at = 0.0
        self._storage_retry_at = 0.0
        self._stopping: Stopping | None = None
        if status is not None:
            status.contribute("uplink", self._status_section)
            status.on_change(self._status_changed)

    # Public API, called from other threads --------------------------------------------------------

    @property
    def state(self) -> UplinkState:
        return self._counters.state

    def start(self) -> None:
        """Start the publisher thread; it connects at once."""
        if self._thread is not None:
            raise RuntimeError("MqttUplink.start() called twice")
        self._waker = Waker()
        if self._live is not None:
            self._live.attach(self._wake)
        self._thread = threading.Thread(target=self._run, name="mqtt-uplink", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New rows were appended: publish them now, not at the next poll. Safe from any thread."""
        self._events.put(Wake())
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
        self._events.put(StopRequested(deadline=time.monotonic() + timeout_s))
        self._wake()
        if thread is threading.current_thread():
            return  # from on_state_change: the thread stops once the callback returns
        thread.join(timeout_s + STOP_JOIN_GRACE_S)
        if thread.is_alive():
            log.error("uplink publisher thread still running %.1f s after stop()", timeout_s)

    def detach_status(self) -> None:
        """Give up the ``uplink`` status section and change listener, for a replacement uplink."""
        if self._status is not None:
            self._status.withdraw("uplink", self._status_changed)

    def stats(self) -> UplinkStats:
        """A snapshot of the counters and gauges."""
        return self._counters.snapshot()

    def _wake(self) -> None:
        """End the publisher thread's wait so it handles the event just queued."""
        waker = self._waker
        if waker is not None:  # else not started (the event waits in the queue) or ended
            waker.wake()

    def _marked(self, result: Marked) -> None:
        """Called on the marker thread."""
        self._events.put(result)
        self._wake()

    def _status_changed(self) -> None:
        self._events.put(StatusChanged())
        self._wake()

    def _status_section(self) -> Mapping[str, Any]:
        """The ``uplink`` section of the status document (called from whichever thread builds it)."""
        return self._counters.status_section(f"{self._connection.host}:{self._connection.port}")

    # Publisher thread: main loop ------------------------------------------------------------------

    def _run(self) -> None:
        self._marks.start()
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
            deadline = None if self._stopping is None else self._stopping.thread_deadline()
            self._marks.close(
                _MARKER_CLOSE_S if deadline is None else max(0.0, deadline - time.monotonic())
            )
            waker, self._waker = self._waker, None
            if waker is not None:
                waker.close()

    def _serve(self) -> None:
        now = time.monotonic()
        self._connection.next_connect_at = now
        self._next_poll_at = now + self._poll_interval_s
        self._next_prune_at = now + _PRUNE_INTERVAL_S  # the outbox prunes when it opens
        while True:
            events = self._wait_for_events()
            # PUBACKs first: paho read them before any disconnect that came with them.
            self._take_pubacks()
            for event in events:
                self._handle(event)
            now = time.monotonic()
            # Live traffic (no backlog draining): mark at once, a crash then repeats almost nothing.
            self._marks.mark_due(
                now,
                at_once=not self._window.draining()
                or self._stopping is not None
                or self._connection.client is None,
            )
            if now >= self._next_poll_at:
                self._next_poll_at = now + self._poll_interval_s
                self._window.rescan()
            if now >= self._next_prune_at:
                self._next_prune_at = now + _PRUNE_INTERVAL_S
                self._prune()
            self._window.release_holds(now)
            self._clear_drop_fault()
            # Status first: while rows are being refused, the alarm must still get out.
            self._publish_status(now)
            self._publish_pending(now)
            self._publish_live()
            self._window.update_gauges()
            if self._stopping is not None:
                # After publishing, so that "nothing left to flush" is known without waiting for an
                # event.
                if self._advance_stop(now):
                    return
            elif self._connection.client is None and now >= self._connection.next_connect_at:
                self._connect()

    def _wait_for_events(self) -> list[Event]:
        """Wait for the broker's socket, a wake-up or a timer; run paho's network step; return
        every event queued by then (paho's callbacks queue theirs during the step)."""
        connection = self._connection
        now = time.monotonic()
        timers = [self._next_poll_at]
        if self._stopping is not None:
            timers.extend(self._stopping.timers(now))
        elif connection.client is None:
            timers.append(connection.next_connect_at)
        timers.extend(self._window.hold_deadlines())
        if connection.session_up and self._stopping is None:
            status_at = self._control.status_publish_at()
            if status_at is not None:
                timers.append(status_at)
        if self._storage_retry_at > now:
            timers.append(self._storage_retry_at)
        mark_at = self._marks.next_due_at()  # else the marker's report wakes this thread
        if mark_at is not None:
            timers.append(mark_at)
        connection.write_pending()  # what this pass queued: PUBLISHes, SUBSCRIBE, DISCONNECT
        client = connection.client
        sock = None if client is None else client.socket()
        if sock is not None:
            timers.append(connection.next_misc_at)
        timeout = max(0.0, min(timers) - now)
        # TLS may hold decrypted bytes that poll() cannot see; events may be queued already.
        if self._pubacks or not self._events.empty() or (sock is not None and tls_pending(sock)):
            timeout = 0.0
        assert self._waker is not None
        want_write = client is not None and client.want_write()
        readable, writable = self._waker.wait(timeout, sock, want_write)
        if sock is not None:
            connection.network_step(sock, readable, writable)
        events: list[Event] = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _take_pubacks(self) -> None:
        pubacks = self._pubacks
        generation = self._connection.generation
        while pubacks:
            puback_generation, mid, reason = pubacks.popleft()
            if puback_generation == generation:  # else from a client already replaced
                self._on_published(mid, reason)

    def _on_published(self, mid: int, reason: ReasonCode) -> None:
        """A PUBACK: for an outbox row (most of them), a control message or a live event."""
        if self._window.on_published(mid, reason) or self._control.on_published(mid, reason):
            return
        if self._live_sending is not None:
            self._live_sending.on_published(mid, reason)

    def _handle(self, event: Event) -> None:
        generation = self._connection.generation
        match event:
            case Connected(event_generation, reason, session_present, receive_maximum) if (
                event_generation == generation
            ):
                self._on_connected(reason, session_present, receive_maximum)
            case Disconnected(event_generation, reason) if event_generation == generation:
                self._on_disconnected(reason)
            case Wake():
                self._window.woken()
            case StatusChanged():
                self._control.status_due = True
            case Marked() as result if self._marks.owns(result):
                self._marks.on_marked(result)
            case AckReceived(event_generation, payload) if event_generation == generation:
                if self._confirmations.apply(payload):
                    self._window.drop_prefetched()  # do not publish rows central already has
                    self._control.status_due = True
            case StopRequested(deadline) if self._stopping is None:
                self._stopping = Stopping(deadline, time.monotonic())
                self._set_state(UplinkState.STOPPING)
            case _:
                return  # from a client already replaced, or a second stop request: ignored

    def _set_state(self, state: UplinkState) -> None:
        if state is self._counters.state:
            return
        with self._counters.lock:
            self._counters.state = state
        if self._on_state_change is not None:
            try:
                self._on_state_change(state)
            except Exception:
                log.exception("on_state_change callback failed for %s", state.value)

    # Publisher thread: connection -----------------------------------------------------------------

    def _connect(self) -> None:
        self._set_state(UplinkState.CONNECTING)
        failure = self._connection.open(self._window.client_made())
        if failure is not None:
            self._schedule_reconnect(failure)

    def _on_connected(
        self, reason: ReasonCode, session_present: bool, receive_maximum: int | None
    ) -> None:
        connection = self._connection
        if not connection.connack(reason):
            return
        self._window.connected(receive_maximum)
        with self._counters.lock:
            self._counters.connects += 1
            self._counters.connected_since = time.time()
        client = connection.client
        assert client is not None
        # The retained watermark arrives right after the SUBACK; re-sending starts at once anyway,
        # and a watermark arriving later removes rows before they go out again.
        self._confirmations.subscribe(client)
        self._marks.settle()
        if self._confirmations.requeue():
            self._window.drop_prefetched()  # re-read in outbox order, the re-queued rows first
        self._control.status_due = True
        log.info(
            "connected to %s:%d as %s (session present: %s, up to %d in flight)",
            connection.host,
            connection.port,
            connection.client_id,
            session_present,
            self._window.cap,
        )
        # Refused rows keep their hold across reconnects: brokers (Mosquitto among them) close the
        # connection right after refusing, and retrying at once would turn one refused row into a
        # reconnect storm.
        self._window.rescan()
        with self._counters.lock:
            self._delivered_at_connect = self._counters.delivered
        if self._stopping is None:
            self._set_state(UplinkState.CONNECTED)
            self._control.publish(client, AVAILABILITY_ONLINE)
        if self._live is not None:
            self._live.set_online(True)

    def _on_disconnected(self, reason: ReasonCode) -> None:
        connection = self._connection
        was_up = connection.session_up
        returned = len(self._window.rows)
        self._release_client()
        with self._counters.lock:
            self._counters.connected_since = None
        if self._stopping is not None:
            log.info("disconnected from %s:%d (%s)", connection.host, connection.port, reason)
            return
        if was_up:
            connection.backoff.lost(time.monotonic())
            with self._counters.lock:
                self._counters.connection_losses += 1
                delivered = self._counters.delivered
            self._note_session_end(returned, delivered)
            self._schedule_reconnect(
                f"connection lost ({reason}); {returned} unacknowledged rows go back to pending"
            )
        else:
            self._schedule_reconnect(f"connection attempt failed ({reason})")

    def _note_session_end(self, in_flight: int, delivered: int) -> None:
        """Alarm when the broker keeps closing the connection on what is published.

        A broker may refuse a publish by closing the connection instead of a PUBACK reason code
        (MQTT 3.1.1 has no other way; Mosquitto 2.0 sometimes does it under v5 as well): the
        lane would reconnect and resend for ever with no alarm.
        """
        if not in_flight or delivered > self._delivered_at_connect:
            self._unacked_drops = 0
            return
        self._unacked_drops += 1
        if self._unacked_drops < _SILENT_REFUSAL_SESSIONS or self._status is None:
            return
        self._delivered_at_fault = delivered
        message = (
            f"the broker closed the connection {self._unacked_drops} times in a row with rows in "
            "flight and none acknowledged: it may be refusing them (check its ACL for this "
            "client); rows kept and retried"
        )
        self._status.raise_fault(FAULT_PUBLISH_REFUSED, message)
        if self._unacked_drops == _SILENT_REFUSAL_SESSIONS:
            log.warning("%s", message)

    def _clear_drop_fault(self) -> None:
        """Rows are acknowledged again: the connection-closing refusal is over."""
        if self._delivered_at_fault is None:
            return
        with self._counters.lock:
            delivered = self._counters.delivered
        if delivered > self._delivered_at_fault:
            self._delivered_at_fault = None
            self._unacked_drops = 0
            if self._status is not None:
                self._status.clear_fault(FAULT_PUBLISH_REFUSED)

    def _schedule_reconnect(self, why: str) -> None:
        self._connection.retry_later(why)
        self._set_state(UplinkState.DISCONNECTED)

    def _session_ended(self) -> None:
        """What was in flight goes back to pending (rows) or is dropped (control, live events)."""
        self._window.session_ended()
        if self._live is not None:
            self._live.set_online(False)

    def _release_client(self) -> None:
        """Forget a client whose connection has ended; its in-flight rows return to pending."""
        self._session_ended()
        self._connection.release()

    def _abandon_client(self) -> None:
        """Drop the client without waiting for paho's thread: when time is up, or on failure."""
        self._session_ended()
        self._connection.abandon()

    # Publisher thread: publishing -----------------------------------------------------------------

    def _sending(self) -> bool:
        """Whether new messages may go out: always, except past the flushing phase of a stop."""
        return self._stopping is None or self._stopping.sending()

    def _publish_status(self, now: float) -> None:
        client = self._connection.client
        if client is None or not self._connection.session_up or self._stopping is not None:
            return
        self._control.publish_status(client, now)

    def _publish_pending(self, now: float) -> None:
        client = self._connection.client
        if client is None or not self._connection.session_up or not self._sending():
            return
        if now < self._storage_retry_at:
            return
        self._window.publish(client)

    def _publish_live(self) -> None:
        client = self._connection.client
        if self._live_sending is None or client is None or not self._connection.session_up:
            return
        if self._sending():
            self._live_sending.publish(client)

    def _storage_failed(self, doing: str, error: Exception) -> None:
        log.error("outbox error while %s: %s; retrying in %.1f s", doing, error, _STORAGE_RETRY_S)
        if self._status is not None:
            self._status.raise_fault(FAULT_OUTBOX_ERROR, f"outbox error while {doing}: {error}")
        self._storage_retry_at = time.monotonic() + _STORAGE_RETRY_S
        self._window.rescan()

    def _prune(self) -> None:
        try:
            pruned = self._outbox.prune_sent()
        except self._storage_errors as error:
            self._storage_failed("pruning sent rows", error)
            return
        if pruned:
            log.debug("pruned %d sent rows from the outbox", pruned)

    # Publisher thread: stopping -------------------------------------------------------------------

    def _advance_stop(self, now: float) -> bool:
        """Advance a clean stop (:mod:`agent.uplink.stopping`). True once the thread can end."""
        assert self._stopping is not None
        connection = self._connection
        client = connection.client
        if client is None:  # not connected, or the DISCONNECT went through
            self._finish_stop(self._stopping)
            return True
        drained = (
            self._window.flushed()
            and not (self._live is not None and self._live.waiting())
            and self._marks.idle()
        )
        if self._stopping.advance(
            now, client, self._control, session_up=connection.session_up, drained=drained
        ):
            log.warning("no clean disconnect from %s:%d in time", connection.host, connection.port)
            self._abandon_client()
            self._finish_stop(self._stopping)
            return True
        return False

    def _finish_stop(self, stopping: Stopping) -> None:
        left_s = max(0.0, stopping.thread_deadline() - time.monotonic())
        settled = self._marks.settle(min(SETTLE_AT_STOP_S, left_s))
        self._window.rows.clear()
        self._window.update_gauges()
        if not settled:
            # The marker holds the outbox (waiting for SQLite's lock): reading it would wait too.
            log.info("uplink stopped; rows stay in the outbox for the next run")
            self._set_state(UplinkState.STOPPED)
            return
        try:
            left = self._outbox.stats().depth
        except self._storage_errors as error:
            log.info("uplink stopped (outbox unreadable: %s)", error)
        else:
            log.info("uplink stopped; %d rows stay in the outbox for the next run", left)
        self._set_state(UplinkState.STOPPED)
