"""An ingest worker: lane messages from the broker into PostgreSQL, acknowledged after commit.

One worker is one MQTT v5 session and one PostgreSQL connection; run several (one process each,
``lane-central ingest``) and they share the lanes through shared subscriptions
(``$share/<group>/{prefix}/+/+/crossing`` and ``…/plate-image``). Status and availability are
subscribed without sharing, because a broker never sends retained messages to a shared
subscription and the board needs the retained ones; every worker writes them, newest wins.

The session is persistent (``clean_start=False``, a session expiry of days) and messages are
acknowledged by hand (paho ``manual_ack``): the PUBACK for a message goes out only after the
transaction that stored it (or quarantined it) committed. A worker that dies before its commit
leaves its messages unacknowledged; the broker sends them again when the worker's session
resumes, and the store takes each event once. Receive Maximum bounds how many unacknowledged
messages the broker hands one worker, which is also the most a worker holds in memory.

The MQTT client is :class:`central.mqtt.IngestClient`: paho with buffered reads, a lean decoder
for incoming PUBLISH packets and one write for a batch's PUBACKs (half the worker's CPU went to
paho's per-message path before); the acknowledgements are the same packets, sent at the same
point, after the commit.

Threads: paho's network thread (``loop_start``) whose callbacks only put events on a queue, and
the writer thread (:meth:`IngestWorker.run`) that owns everything else: it batches messages (up to
``batch_max``, waiting at most ``batch_wait_s`` after the first), stores them, acknowledges
them, and publishes the watermarks. A PostgreSQL outage stops the writer on the batch in hand,
retrying with back-off; the broker stops sending once Receive Maximum messages wait, and the
lanes' outboxes hold the rest.

Acknowledging is tied to the connection a message came on: after a disconnect, message ids of
the old connection mean nothing (the broker re-sends those messages with the same ids), so the
writer skips acknowledgements of an older connection under the same lock that paho's disconnect
callback takes to move to the next one.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.wire.topics import (
    DEFAULT_PREFIX,
    all_availability_filter,
    all_crossings_filter,
    all_plate_images_filter,
    all_statuses_filter,
    shared_subscription,
)
from central import db, migrate, partitions
from central.acks import WatermarkPublisher
from central.messages import (
    STORE_REFUSED,
    Crossing,
    LaneKey,
    LaneStatus,
    MessageReader,
    PlateImage,
    Record,
    Refused,
)
from central.mqtt import BrokerSettings, IngestClient, fast_path_available, new_client
from central.store import BatchResult, IngestStore, WriteMode

log = logging.getLogger(__name__)

_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 10.0
_PARTITION_CHECK_S = 3600.0
_SUMMARY_S = 60.0
_STOP_FLUSH_S = 2.0


@dataclass(frozen=True, slots=True)
class IngestSettings:
    """Everything one worker needs; the CLI builds it from options and environment."""

    dsn: str
    broker: BrokerSettings
    client_id: str = "central-ingest-1"
    group: str = "lane-central"
    prefix: str = DEFAULT_PREFIX
    batch_max: int = 500
    batch_wait_s: float = 0.05
    receive_maximum: int = 2000
    session_expiry_s: int = 7 * 86400
    write_mode: WriteMode = WriteMode.COPY
    ack_interval_s: float = 1.0
    ack_sweep_s: float = 10.0
    reconnect_min_s: float = 0.1  # back before the lanes, whose first retry is 0-1 s
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_max <= 10_000:
            raise ValueError(f"batch_max must be 1..10000, not {self.batch_max}")
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError(f"receive_maximum must be 1..65535, not {self.receive_maximum}")
        if self.batch_wait_s < 0 or self.ack_interval_s < 0 or self.ack_sweep_s <= 0:
            raise ValueError("batch_wait_s and ack_interval_s must be >= 0, ack_sweep_s > 0")


class _Message(NamedTuple):  # a tuple: one is made per message, on paho's thread
    connection: int
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class _Connected:
    connection: int
    session_present: bool


@dataclass(frozen=True, slots=True)
class _Subscribed:
    refused: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Published:
    mid: int
    success: bool


_Event = _Message | _Connected | _Subscribed | _Published


@dataclass
class IngestStats:
    """Counters since start, for the periodic log line, tests and the benchmark."""

    batches: int = 0
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    images: int = 0
    statuses: int = 0
    gaps_opened: int = 0
    gaps_closed: int = 0
    watermarks_published: int = 0
    database_failures: int = 0
    connects: int = 0
    subscriptions: int = 0
    acks_skipped: int = 0


class IngestWorker:
    """One worker: ``run(stop)`` until ``stop`` is set (from a signal handler or another thread)."""

    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.stats = IngestStats()
        self._events: queue.SimpleQueue[_Event] = queue.SimpleQueue()
        self._reader = MessageReader(settings.prefix)
        self._lock = threading.Lock()  # guards _connection_number against acks of an old one
        self._connection_number = 0
        self._connected = False
        self._stopping = False
        self._client = self._new_client()
        self._watermarks = WatermarkPublisher(
            self._publish_retained, settings.prefix, settings.ack_interval_s
        )
        self._store: IngestStore | None = None
        self._refusals: Counter[str] = Counter()
        self._rng = random.Random()

    # --- paho thread: callbacks only queue -----------------------------------------------------

    def _new_client(self) -> mqtt.Client:
        fast = fast_path_available()
        client = new_client(
            self.settings.broker,
            self.settings.client_id,
            manual_ack=True,
            client_class=IngestClient if fast else mqtt.Client,
        )
        if isinstance(client, IngestClient):
            client.on_publish_received = self._on_publish_received
        else:
            log.warning("this paho-mqtt lacks what the fast receive path uses; using stock paho")
        client.reconnect_delay_set(  # paho takes ints in its signature, floats work
            min_delay=self.settings.reconnect_min_s,  # type: ignore[arg-type]
            max_delay=self.settings.reconnect_max_s,  # type: ignore[arg-type]
        )
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        return client

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("broker %s refused the connection: %s", self.settings.broker, reason)
            return
        with self._lock:
            self._connection_number += 1
            self._connected = True
            number = self._connection_number
        self._events.put(_Connected(number, bool(flags.session_present)))

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            self._connected = False
            self._connection_number += 1  # acks of the connection that ended are void
        if not self._stopping:
            log.warning("lost the broker %s (%s); reconnecting", self.settings.broker, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._events.put(
            _Message(
                self._connection_number,
                message.mid,
                message.qos,
                message.topic,
                bytes(message.payload),
            )
        )

    def _on_publish_received(self, mid: int, qos: int, topic: str, payload: bytes) -> None:
        self._events.put(_Message(self._connection_number, mid, qos, topic, payload))

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        self._events.put(_Subscribed(tuple(str(reason) for reason in reasons if reason.is_failure)))

    def _on_publish(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reason: ReasonCode,
        _properties: Properties,
    ) -> None:
        self._events.put(_Published(mid, not reason.is_failure))

    # --- writer thread -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Connect, then store until ``stop`` is set; returns after a clean disconnect.

        Raises :class:`central.db.DatabaseUnavailableError` or :class:`central.migrate.MigrationError`
        when the database cannot be used at start (the caller maps them to exit codes).
        """
        connection = self._open_database(first=True)
        assert connection is not None
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.settings.session_expiry_s
        properties.ReceiveMaximum = self.settings.receive_maximum
        self._client.connect_async(
            self.settings.broker.host, self.settings.broker.port,
            keepalive=self.settings.broker.keepalive_s, clean_start=False, properties=properties,
        )  # fmt: skip
        self._client.loop_start()
        log.info(
            "ingest worker %s: broker %s, group %s, batches of up to %d, %s writes",
            self.settings.client_id, self.settings.broker, self.settings.group,
            self.settings.batch_max, self.settings.write_mode.value,
        )  # fmt: skip
        try:
            self._serve(stop)
        finally:
            self._finish()

    def _serve(self, stop: threading.Event) -> None:
        next_partition_check = time.monotonic() + _PARTITION_CHECK_S
        next_sweep = time.monotonic()
        next_summary = time.monotonic() + _SUMMARY_S
        while not stop.is_set():
            now = time.monotonic()
            wait = 0.25
            due = self._watermarks.next_due_in(now)
            if due is not None:
                wait = min(wait, due)
            batch = self._take(wait)
            if batch and not self._store_batch(batch, stop):
                continue  # stopping with a batch not stored: the broker sends it again
            now = time.monotonic()
            self.stats.watermarks_published += self._watermarks.flush(now)
            if now >= next_sweep:
                self._sweep()
                next_sweep = now + self.settings.ack_sweep_s
            if now >= next_partition_check:
                self._with_database(lambda c: partitions.ensure_crossing_partitions(c))
                next_partition_check = now + _PARTITION_CHECK_S
            if now >= next_summary:
                self._log_summary()
                next_summary = now + _SUMMARY_S

    def _take(self, wait_s: float) -> list[_Message]:
        """Up to batch_max messages: wait ``wait_s`` for the first, then batch_wait_s more."""
        batch: list[_Message] = []
        deadline: float | None = None
        timeout = wait_s
        while len(batch) < self.settings.batch_max:
            try:
                event = (
                    self._events.get(timeout=max(0.0, timeout))
                    if timeout > 0
                    else self._events.get_nowait()
                )
            except queue.Empty:
                break
            if isinstance(event, _Message):
                batch.append(event)
                if deadline is None:
                    deadline = time.monotonic() + self.settings.batch_wait_s
            elif isinstance(event, _Connected):
                self._subscribe(event)
            elif isinstance(event, _Subscribed):
                self.stats.subscriptions += 1
                if event.refused:
                    log.error(
                        "the broker refused subscriptions (%s): check its ACL for %s",
                        ", ".join(event.refused),
                        self.settings.client_id,
                    )
                else:
                    log.info(
                        "subscribed to the lanes under %s (group %s)",
                        self.settings.prefix,
                        self.settings.group,
                    )
            else:
                self._watermarks.acknowledged(event.mid, event.success)
            if deadline is not None:
                timeout = deadline - time.monotonic()
        return batch

    def _subscribe(self, event: _Connected) -> None:
        self.stats.connects += 1
        log.info(
            "connected to %s (session %s)",
            self.settings.broker,
            "resumed" if event.session_present else "new",
        )
        prefix, group = self.settings.prefix, self.settings.group
        shared = SubscribeOptions(qos=1)
        # Retained status and availability once per subscription, not again after a reconnect.
        retained_once = SubscribeOptions(
            qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
        )
        self._client.subscribe(
            [
                (shared_subscription(group, all_crossings_filter(prefix)), shared),
                (shared_subscription(group, all_plate_images_filter(prefix)), shared),
                (all_statuses_filter(prefix), retained_once),
                (all_availability_filter(prefix), retained_once),
            ]
        )

    def _store_batch(self, batch: list[_Message], stop: threading.Event) -> bool:
        """Store, then acknowledge; False when stopping before the batch could be stored."""
        records = [self._reader.read(message.topic, message.payload) for message in batch]
        received_at = datetime.now(UTC)
        delay = _RETRY_MIN_S
        while True:
            try:
                result = self._write(records, received_at)
                break
            except psycopg.OperationalError as error:
                self.stats.database_failures += 1
                log.warning(
                    "storing a batch of %d failed (%s); retrying in %.1f s",
                    len(batch),
                    _describe(error),
                    delay,
                )
                if stop.wait(delay):
                    return False
                delay = min(_RETRY_MAX_S, delay * 2)
        self._acknowledge(batch)
        self._account(len(batch), result)
        self._watermarks.committed(result.watermarks)
        return True

    def _write(self, records: list[Record], received_at: datetime) -> BatchResult:
        store = self._ensure_store()
        try:
            return store.write(records, received_at)
        except psycopg.OperationalError:
            self._drop_broken_connection()
            raise
        except psycopg.Error as error:
            # A message PostgreSQL will not take (it passed every check here): store the others
            # one by one and quarantine that one, so one bad message cannot stall the lanes.
            log.error(
                "a batch was refused by PostgreSQL (%s): storing its messages one by one",
                _describe(error),
            )
            return self._write_one_by_one(store, records, received_at)

    def _write_one_by_one(
        self, store: IngestStore, records: list[Record], received_at: datetime
    ) -> BatchResult:
        total = BatchResult()
        for record in records:
            try:
                result = store.write([record], received_at)
            except psycopg.OperationalError:
                self._drop_broken_connection()
                raise
            except psycopg.Error as error:
                refused = _as_refused(record, error)
                store.quarantine_one(refused, received_at)
                result = BatchResult(quarantined=1)
                result.refusals[refused.reason] += 1
            _merge(total, result)
        return total

    def _acknowledge(self, batch: list[_Message]) -> None:
        with self._lock:
            current = self._connection_number if self._connected else -1
            due = [message for message in batch if message.qos > 0]
            acked = [message for message in due if message.connection == current]
            self.stats.acks_skipped += len(due) - len(acked)  # sent again on the new connection
            if isinstance(self._client, IngestClient):
                self._client.ack_many(message.mid for message in acked if message.qos == 1)
                acked = [message for message in acked if message.qos != 1]
            for message in acked:
                self._client.ack(message.mid, message.qos)

    def _account(self, messages: int, result: BatchResult) -> None:
        stats = self.stats
        stats.batches += 1
        stats.messages += messages
        stats.stored += result.stored
        stats.duplicates += result.duplicates
        stats.quarantined += result.quarantined
        stats.images += result.images
        stats.statuses += result.statuses
        stats.gaps_opened += result.gaps_opened
        stats.gaps_closed += result.gaps_closed
        self._refusals.update(result.refusals)

    def _publish_retained(self, topic: str, payload: bytes) -> int:
        info = self._client.publish(topic, payload, qos=1, retain=True)
        return info.mid

    def _sweep(self) -> None:
        """Record the watermarks the broker acknowledged; pick up any stored but never published."""
        confirmed = self._watermarks.take_confirmed()

        def sweep(connection: db.Connection) -> dict[LaneKey, int]:
            with connection.transaction():
                if confirmed:
                    lanes = sorted(confirmed, key=str)
                    connection.execute(
                        "UPDATE lanes l SET ack_published_seq = greatest(l.ack_published_seq, v.seq),"
                        " ack_published_at = now()"
                        " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS v(port_id, lane_id, seq)"
                        " WHERE l.port_id = v.port_id AND l.lane_id = v.lane_id",
                        (
                            [k.port_id for k in lanes],
                            [k.lane_id for k in lanes],
                            [confirmed[k] for k in lanes],
                        ),
                    )
                rows = connection.execute(
                    "SELECT port_id, lane_id, acked_seq FROM lanes WHERE acked_seq > ack_published_seq"
                ).fetchall()
            return {LaneKey(str(p), str(n)): int(s) for p, n, s in rows}  # type: ignore[call-overload]

        found = self._with_database(sweep)
        if found:
            self._watermarks.committed(found)

    def _with_database(self, action: Any) -> Any:
        """Run ``action(connection)``; on a database failure log it and return None (retried later)."""
        try:
            return action(self._ensure_store().connection)
        except psycopg.Error as error:
            if isinstance(error, psycopg.OperationalError):
                self._drop_broken_connection()
            log.warning("database housekeeping failed (%s); will retry", _describe(error))
            return None

    def _ensure_store(self) -> IngestStore:
        if self._store is None or self._store.connection.closed:
            connection = self._open_database(first=False)
            if connection is None:
                raise psycopg.OperationalError("PostgreSQL is unreachable")
            self._store = IngestStore(connection, write_mode=self.settings.write_mode)
        return self._store

    def _open_database(self, *, first: bool) -> db.Connection | None:
        try:
            connection = db.connect(
                self.settings.dsn, autocommit=True, application=self.settings.client_id
            )
        except db.DatabaseUnavailableError:
            if first:
                raise
            return None
        try:
            migrate.require_latest(connection)
            if first:
                partitions.ensure_crossing_partitions(connection)
        except BaseException:
            connection.close()
            raise
        if first:
            self._store = IngestStore(connection, write_mode=self.settings.write_mode)
        return connection

    def _drop_broken_connection(self) -> None:
        if self._store is not None and (
            self._store.connection.broken or self._store.connection.closed
        ):
            self._store.connection.close()
            self._store = None

    def _log_summary(self) -> None:
        stats = self.stats
        refusals = ", ".join(
            f"{reason} {count}" for reason, count in sorted(self._refusals.items())
        )
        log.info(
            "ingest: %d stored, %d duplicates, %d quarantined%s, %d gaps opened / %d closed, "
            "%d watermarks published",
            stats.stored, stats.duplicates, stats.quarantined,
            f" ({refusals})" if refusals else "", stats.gaps_opened, stats.gaps_closed,
            stats.watermarks_published,
        )  # fmt: skip

    def _finish(self) -> None:
        """Publish what is due, wait briefly for the broker, disconnect keeping the session."""
        self.stats.watermarks_published += self._watermarks.flush(time.monotonic(), force=True)
        deadline = time.monotonic() + _STOP_FLUSH_S
        while self._watermarks.in_flight and time.monotonic() < deadline:
            try:
                event = self._events.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(event, _Published):
                self._watermarks.acknowledged(event.mid, event.success)
        self._sweep()
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        if self._store is not None:
            self._store.connection.close()
        self._log_summary()


def _describe(error: psycopg.Error) -> str:
    """Class and SQLSTATE only: PostgreSQL's messages may quote values (card numbers, plates)."""
    state = getattr(error, "sqlstate", None)
    return f"{type(error).__name__}" + (f", SQLSTATE {state}" if state else "")


def _as_refused(record: Record, error: psycopg.Error) -> Refused:
    if isinstance(record, Refused):
        return record
    data: bytes
    if isinstance(record, Crossing):
        data = record.payload.encode()
    elif isinstance(record, LaneStatus):
        data = record.document.encode()
    elif isinstance(record, PlateImage):
        data = record.jpeg
    else:
        data = record.value.encode()
    return Refused(
        record.topic, record.lane, STORE_REFUSED, f"PostgreSQL refused it: {_describe(error)}", data
    )


def _merge(total: BatchResult, part: BatchResult) -> None:
    total.stored += part.stored
    total.duplicates += part.duplicates
    total.quarantined += part.quarantined
    total.images += part.images
    total.statuses += part.statuses
    total.availabilities += part.availabilities
    total.gaps_opened += part.gaps_opened
    total.gaps_closed += part.gaps_closed
    total.watermarks.update(part.watermarks)
    total.advanced |= part.advanced
    total.refusals.update(part.refusals)
