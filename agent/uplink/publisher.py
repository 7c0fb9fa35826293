"""MQTT v5 uplink: publishes outbox rows in order at QoS 1, marks them sent only on a good PUBACK.

Threads: paho runs the socket in its own thread (``loop_start``); this module runs one publisher
thread that owns all uplink state. paho callbacks only put an event on the publisher's queue: they
never block, lock, publish or touch SQLite, because paho calls them with its internal locks held.

Delivery is at least once. Up to ``max_inflight`` rows (never more than the broker's Receive
Maximum) are published and awaiting PUBACK, in outbox order. A row is marked sent only when its
PUBACK carries a success reason code; a refusal (for example 0x87 not authorised) keeps the row,
logs a warning and retries it with back-off. The hold outlives reconnects, because brokers may close
the connection after a refusal (Mosquitto does). A refused row does not hold back the rows behind
it, so after a refusal the order on the wire can differ from the outbox order; the stream sequence
number in each payload lets central restore it.

Reconnects: every connection uses a fresh paho client. paho keeps a message published while
disconnected queued and sends it after a reconnect, and it re-sends its own in-flight messages too;
a fresh client carries none of that, so exactly one party decides what is re-sent: this module, from
the outbox, after each CONNACK. Everything that was in flight when a connection dropped goes back to
pending and is re-sent, possibly twice on the wire (central drops duplicates by stream sequence
number); nothing is lost. Reconnect delays grow exponentially with random jitter so a fleet of lanes
does not reconnect in lock-step after a broker restart.

The session is kept across reconnects (``clean_start=False`` and a session expiry interval) so that
subscriptions made by later features survive a short outage. The availability topic carries
``online`` (retained, on every connect), ``offline`` (retained last will, published by the broker
when the connection dies) and ``stopped`` (retained, on a clean stop).
"""

from __future__ import annotations

import enum
import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.uplink.outbox import Outbox, OutboxError, OutboxRow
from agent.uplink.topics import (
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
_STOP_JOIN_GRACE_S = 5.0  # stop() waits this long beyond its timeout before giving up on the thread
_DISCONNECT_GRACE_S = 1.0  # after the stop deadline, for the DISCONNECT to reach the broker
_GIVE_UP_REFUSALS = 62  # back-off step for a row paho cannot send at all: the maximum delay
_WITH_WILL = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
_STABLE_CONNECTION_S = 30.0  # a connection that lasted this long resets the reconnect back-off
_PRUNE_INTERVAL_S = 600.0  # sent rows are kept for hours; pruning every ten minutes is plenty
_STORAGE_RETRY_S = 1.0  # pause after an outbox error before touching SQLite again


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
    """Outbox rows published and awaiting PUBACK."""
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
class _Published:
    generation: int
    mid: int
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class _Wake:
    pass


@dataclass(frozen=True, slots=True)
class _StopRequested:
    deadline: float


_Event = _Connected | _Disconnected | _Published | _Wake | _StopRequested


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
        on_state_change: Callable[[UplinkState], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``reconnect_min_s``/``reconnect_max_s`` bound reconnect delays and refused-row retries.

        ``keepalive_s`` also bounds how long a silent (half-open) connection, or a CONNECT that gets
        no CONNACK, goes unnoticed. ``poll_interval_s`` bounds how long a row waits if a
        ``notify()`` was missed. ``on_state_change`` is called from the publisher thread and must
        return quickly.
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
        self._on_state_change = on_state_change
        self._rng = rng if rng is not None else random.Random()

        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
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
        self._in_flight: dict[int, OutboxRow] = {}  # by paho mid, in publish order
        self._control_in_flight: dict[int, bytes] = {}  # availability messages by mid
        self._holds: dict[int, _Hold] = {}  # by outbox row id
        self._acked: list[int] = []  # row ids acknowledged but not yet marked sent
        self._outbox_may_have_more = True
        self._next_poll_at = 0.0
        self._next_prune_at = 0.0
        self._storage_retry_at = 0.0
        self._stop_deadline: float | None = None
        self._flush_until = 0.0
        self._stop_phase = _StopPhase.FLUSHING
        self._stopped_published = False
        self._stopped_acknowledged = False

    # Public API, called from other threads --------------------------------------------------------

    @property
    def state(self) -> UplinkState:
        return self._state

    def start(self) -> None:
        """Start the publisher thread; it connects at once."""
        if self._thread is not None:
            raise RuntimeError("MqttUplink.start() called twice")
        self._thread = threading.Thread(target=self._run, name="mqtt-uplink", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New rows were appended: publish them now, not at the next poll. Safe from any thread."""
        self._events.put(_Wake())

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s``, publish ``stopped``, disconnect cleanly.

        Rows not acknowledged by then stay in the outbox for the next run. If ``stopped`` could not
        be delivered, the DISCONNECT asks the broker to publish the ``offline`` will instead, so the
        retained availability never claims ``online`` for a stopped agent. Returns when the
        publisher thread has ended.
        """
        thread = self._thread
        if thread is None:
            self._set_state(UplinkState.STOPPED)
            return
        self._events.put(_StopRequested(deadline=time.monotonic() + timeout_s))
        thread.join(timeout_s + _STOP_JOIN_GRACE_S)
        if thread.is_alive():
            log.error("uplink publisher thread still running %.1f s after stop()", timeout_s)

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
            )

    # Publisher thread: main loop ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:
            log.exception("uplink publisher thread failed")
            self._abandon_client()
            self._set_state(UplinkState.FAILED)

    def _serve(self) -> None:
        now = time.monotonic()
        self._next_connect_at = now
        self._next_poll_at = now + self._poll_interval_s
        self._next_prune_at = now + _PRUNE_INTERVAL_S  # the outbox prunes when it opens
        while True:
            for event in self._wait_for_events():
                self._handle(event)
            self._mark_acknowledged()
            now = time.monotonic()
            if now >= self._next_poll_at:
                self._next_poll_at = now + self._poll_interval_s
                self._outbox_may_have_more = True
            if now >= self._next_prune_at:
                self._next_prune_at = now + _PRUNE_INTERVAL_S
                self._prune()
            self._release_holds(now)
            self._publish_pending(now)
            self._update_gauges()
            if self._stop_deadline is not None:
                # After publishing, so that "nothing left to flush" is known without waiting for an
                # event.
                if self._advance_stop(now):
                    return
            elif self._client is None and now >= self._next_connect_at:
                self._connect()

    def _wait_for_events(self) -> list[_Event]:
        """Block until an event arrives or a timer is due; return all events queued by then."""
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
        if self._storage_retry_at > now:
            timers.append(self._storage_retry_at)
        events: list[_Event] = []
        try:
            events.append(self._events.get(timeout=max(0.0, min(timers) - now)))
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def _handle(self, event: _Event) -> None:
        match event:
            case _Published(generation, mid, reason) if generation == self._generation:
                self._on_published(mid, reason)
            case _Connected(generation, reason, session_present, receive_maximum) if (
                generation == self._generation
            ):
                self._on_connected(reason, session_present, receive_maximum)
            case _Disconnected(generation, reason) if generation == self._generation:
                self._on_disconnected(reason)
            case _Wake():
                self._outbox_may_have_more = True
            case _StopRequested(deadline) if self._stop_deadline is None:
                now = time.monotonic()
                self._stop_deadline = deadline
                # Keep a quarter of the time, at most a second, for 'stopped' and the DISCONNECT.
                self._flush_until = deadline - min(1.0, max(0.0, deadline - now) / 4)
                self._set_state(UplinkState.STOPPING)
            case _:
                pass  # from a client already replaced, or a second stop request

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
        held = sum(1 for hold in self._holds.values() if hold.waiting)
        with self._stats_lock:
            self._counters.in_flight = len(self._in_flight)
            self._counters.in_flight_limit = self._inflight_cap
            self._counters.held_back = held

    # Publisher thread: connection -----------------------------------------------------------------

    def _connect(self) -> None:
        self._generation += 1
        client = self._new_client(self._generation)
        # paho leaves Properties.__init__ untyped.
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self._session_expiry_s
        self._set_state(UplinkState.CONNECTING)
        log.debug("connecting to %s:%d as %s", self._host, self._port, self._client_id)
        try:
            client.connect(
                self._host,
                self._port,
                keepalive=self._keepalive_s,
                clean_start=False,
                properties=properties,
            )
        except OSError as error:
            self._schedule_reconnect(f"connecting failed: {error}")
            return
        self._client = client
        client.loop_start()

    def _new_client(self, generation: int) -> mqtt.Client:
        events = self._events
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,  # reconnecting is ours: with jitter and a fresh client
        )
        client.on_log = _log_paho_message
        client.max_inflight_messages_set(self._max_inflight)
        client.will_set(self._topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)

        # These run on paho's thread with paho's locks held: they only enqueue.
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
            events.put(_Published(generation, mid, reason))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        return client

    def _on_connected(
        self, reason: ReasonCode, session_present: bool, receive_maximum: int | None
    ) -> None:
        if reason.value >= _FAILURE_THRESHOLD:
            # paho closes the socket and reports a disconnect next; that schedules the retry.
            log.warning("broker %s:%d refused the connection: %s", self._host, self._port, reason)
            return
        self._session_up = True
        self._connected_at = time.monotonic()
        # paho ignores the broker's Receive Maximum; MQTT lets a broker disconnect (0x93) past it.
        self._inflight_cap = min(self._max_inflight, receive_maximum or self._max_inflight)
        with self._stats_lock:
            self._counters.connects += 1
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
        self._outbox_may_have_more = True
        if self._stop_deadline is None:
            self._set_state(UplinkState.CONNECTED)
            self._publish_control(AVAILABILITY_ONLINE)

    def _on_disconnected(self, reason: ReasonCode) -> None:
        was_up = self._session_up
        returned = len(self._in_flight)
        self._release_client()
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
        self._outbox_may_have_more = True
        if client is not None:
            # With reconnect_on_failure=False paho's thread ends by itself after a disconnect.
            client.loop_stop()

    def _abandon_client(self) -> None:
        """Drop the client without waiting for paho's thread: when time is up, or on failure."""
        client, self._client = self._client, None
        self._generation += 1
        self._session_up = False
        self._in_flight.clear()
        self._control_in_flight.clear()
        if client is not None:
            client.disconnect(_WITH_WILL)

    # Publisher thread: publishing -----------------------------------------------------------------

    def _publish_control(self, payload: bytes) -> None:
        assert self._client is not None
        info = self._client.publish(self._topics.availability, payload, qos=1, retain=True)
        self._control_in_flight[info.mid] = payload

    def _publish_pending(self, now: float) -> None:
        client = self._client
        if client is None or not self._session_up or not self._outbox_may_have_more:
            return
        if self._stop_deadline is not None and self._stop_phase is not _StopPhase.FLUSHING:
            return
        if now < self._storage_retry_at:
            return
        room = self._inflight_cap - len(self._in_flight) - len(self._control_in_flight)
        if room <= 0:
            return
        excluded = [row.id for row in self._in_flight.values()]
        excluded.extend(row_id for row_id, hold in self._holds.items() if hold.waiting)
        try:
            rows = self._outbox.pending(room, exclude_ids=excluded)
        except (OutboxError, sqlite3.Error) as error:
            self._storage_failed("reading pending rows", error)
            return
        if len(rows) < room:
            self._outbox_may_have_more = False
        for row in rows:
            self._publish_row(client, row)

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
        with self._stats_lock:
            self._counters.published += 1

    def _on_published(self, mid: int, reason: ReasonCode) -> None:
        row = self._in_flight.pop(mid, None)
        if row is None:
            self._on_control_published(mid, reason)
            return
        if reason.value < _FAILURE_THRESHOLD:
            self._acked.append(row.id)
            self._holds.pop(row.id, None)
            return
        self._count_refusal(reason)
        previous = self._holds.get(row.id)
        hold = self._hold(row.id, refusals=0 if previous is None else previous.refusals + 1)
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
        payload = self._control_in_flight.pop(mid, None)
        if payload is None:
            return
        if reason.value >= _FAILURE_THRESHOLD:
            self._count_refusal(reason)
            log.warning(
                "broker refused %r on %s: %s", payload.decode(), self._topics.availability, reason
            )
        elif payload == AVAILABILITY_STOPPED:
            self._stopped_acknowledged = True

    def _count_refusal(self, reason: ReasonCode) -> None:
        with self._stats_lock:
            self._counters.refused += 1
            self._counters.last_refusal = str(reason)

    def _hold(self, row_id: int, *, refusals: int) -> _Hold:
        delay = backoff_delay(refusals, self._reconnect_min_s, self._reconnect_max_s, self._rng)
        hold = _Hold(until=time.monotonic() + delay, refusals=refusals)
        self._holds[row_id] = hold
        return hold

    def _release_holds(self, now: float) -> None:
        """Let rows whose back-off ended go out again; the refusal count stays for the next one."""
        for hold in self._holds.values():
            if hold.waiting and hold.until <= now:
                hold.waiting = False
                self._outbox_may_have_more = True

    def _mark_acknowledged(self) -> None:
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        try:
            self._outbox.mark_sent_many(acked)
        except (OutboxError, sqlite3.Error) as error:
            # The rows stay unsent in the outbox and go out again later: a duplicate, never a loss.
            self._storage_failed("marking acknowledged rows sent", error)
            return
        with self._stats_lock:
            self._counters.delivered += len(acked)

    def _storage_failed(self, doing: str, error: Exception) -> None:
        log.error("outbox error while %s: %s; retrying in %.1f s", doing, error, _STORAGE_RETRY_S)
        self._storage_retry_at = time.monotonic() + _STORAGE_RETRY_S
        self._outbox_may_have_more = True

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
            drained = not (self._in_flight or self._acked or self._outbox_may_have_more)
            if now >= self._flush_until or (self._session_up and drained):
                self._stop_phase = _StopPhase.SAYING_STOPPED
        if self._stop_phase is _StopPhase.SAYING_STOPPED:
            in_flight = len(self._in_flight) + len(self._control_in_flight)
            if self._session_up and not self._stopped_published and in_flight < self._inflight_cap:
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

    def _finish_stop(self) -> None:
        self._in_flight.clear()
        self._update_gauges()
        try:
            left = self._outbox.stats().depth
        except (OutboxError, sqlite3.Error) as error:
            log.info("uplink stopped (outbox unreadable: %s)", error)
        else:
            log.info("uplink stopped; %d rows stay in the outbox for the next run", left)
        self._set_state(UplinkState.STOPPED)
