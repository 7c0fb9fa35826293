"""Cache updates over MQTT: central's signed bundles in, resync requests out.

One paho client (client id ``<lane client id>-updates``, its own persistent session) subscribes
at QoS 1 to :func:`agent.wire.topics.cache_updates_filter`. Messages are acknowledged manually,
after the worker has installed or refused them, so a bundle received just before a crash is
delivered again by the broker instead of being lost.

Threads: paho's network thread only puts events on a priority queue; one worker thread installs.
Revocations have the highest priority, so they are applied before anything else queued. The
worker also notices installs made by another process (``lane-agent cache import``): once a second
it re-reads the installed state and switches the lookups to a swapped snapshot.

A delta that does not follow the installed version (a gap) or a freshness notice for a version
the lane does not have makes the worker publish a resync request (at most once per
``resync_interval_s``) on :func:`agent.wire.topics.cache_resync_topic`::

    {"installed_version": 41, "revocation_serial": 7, "reason": "gap",
     "detail": "delta from 42 to 43, installed is 41", "requested_at": "2026-11-28T07:00:00Z"}
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.cache.bundle import BundleRefusedError, Kind, RefusalReason
from agent.cache.install import CacheInstaller, CacheState
from agent.cache.records import format_timestamp
from agent.cache.store import CacheError, CredentialCache
from agent.mqtt import (
    TlsFiles,
    connect_keeping_session,
    new_client,
    paho_reconnect_delays,
    refusal_hint,
    succeeded,
)
from agent.wire.topics import cache_resync_topic, cache_update_kind, cache_updates_filter

logger = logging.getLogger(__name__)

STATE_POLL_S = 1.0
_PRIORITY_CONTROL = 0
_PRIORITY_REVOCATION = 1
_PRIORITY_OTHER = 2


@dataclass(frozen=True, slots=True)
class _Connected:
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class _Subscribed:
    granted: bool


@dataclass(frozen=True, slots=True)
class _Disconnected:
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class _Received:
    topic: str
    payload: bytes
    mid: int
    qos: int


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


_Event = _Connected | _Subscribed | _Disconnected | _Received | _Stop


@dataclass(frozen=True, slots=True)
class UpdatesStats:
    """What the updates channel did: for the status topic and tests."""

    connected: bool
    received: int
    resync_requests: int


class CacheUpdates:
    """Subscribes to the port's cache bundles and installs them on a worker thread."""

    def __init__(
        self,
        installer: CacheInstaller,
        cache: CredentialCache,
        *,
        prefix: str,
        port_id: str,
        lane_id: str,
        host: str,
        port: int,
        client_id: str,
        keepalive_s: int = 30,
        session_expiry_s: int = 7 * 86400,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 60.0,
        resync_interval_s: float = 300.0,
        on_state: Callable[[CacheState], None] | None = None,
        tls: TlsFiles | None = None,
        configure_client: Callable[[mqtt.Client], None] | None = None,
    ) -> None:
        """``tls`` (its files are read here) is this subscriber's own certificate: a broker that
        ties a certificate to one client id would otherwise have the uplink and this connection
        kick each other off. ``configure_client`` may adjust the paho client before it connects."""
        self.installer = installer
        self.cache = cache
        self._filter = cache_updates_filter(prefix, port_id)
        self._resync_topic = cache_resync_topic(prefix, port_id, lane_id)
        self._host = host
        self._port = port
        self._keepalive_s = keepalive_s
        self._session_expiry_s = session_expiry_s
        self._resync_interval_s = resync_interval_s
        self._on_state = on_state
        self._events: queue.PriorityQueue[tuple[int, int, _Event]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name="cache-updates", daemon=True)
        self._connected = threading.Event()
        self.subscribed = threading.Event()
        """Set once the broker acknowledged the subscription (SUBACK)."""
        self._received = 0
        self._resyncs = 0
        self._last_resync = float("-inf")
        self._last_state: CacheState | None = None
        # paho's own loop thread connects and reconnects this client (within these delays).
        self._client = new_client(client_id, tls=tls, manual_ack=True)
        min_delay, max_delay = paho_reconnect_delays(reconnect_min_s, reconnect_max_s)
        self._client.reconnect_delay_set(min_delay=min_delay, max_delay=max_delay)
        if configure_client is not None:
            configure_client(self._client)
        self._client.on_connect = self._paho_connect
        self._client.on_disconnect = self._paho_disconnect
        self._client.on_message = self._paho_message
        self._client.on_subscribe = self._paho_subscribe

    # --- paho callbacks: enqueue only ---------------------------------------------------

    def _put(self, priority: int, event: _Event) -> None:
        self._events.put((priority, next(self._order), event))

    def _paho_connect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._put(_PRIORITY_CONTROL, _Connected(reason))

    def _paho_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        granted = all(succeeded(code) for code in reason_codes)
        self._put(_PRIORITY_CONTROL, _Subscribed(granted))

    def _paho_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._put(_PRIORITY_CONTROL, _Disconnected(reason))

    def _paho_message(
        self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        kind = cache_update_kind(message.topic)
        priority = _PRIORITY_REVOCATION if kind == Kind.REVOCATION.value else _PRIORITY_OTHER
        self._put(
            priority, _Received(message.topic, bytes(message.payload), message.mid, message.qos)
        )

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Connect (in the background, with reconnects) and start the worker."""
        connect_keeping_session(
            self._client,
            self._host,
            self._port,
            keepalive=self._keepalive_s,
            session_expiry_s=self._session_expiry_s,
            background=True,
        )
        self._client.loop_start()
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Finish the bundle being installed, then disconnect; queued bundles stay unacknowledged
        so the broker delivers them again next time."""
        self._put(_PRIORITY_CONTROL, _Stop())
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._client.disconnect()
        self._client.loop_stop()

    def stats(self) -> UpdatesStats:
        """Counters of this channel (installs and refusals are in ``installer.stats()``)."""
        return UpdatesStats(self._connected.is_set(), self._received, self._resyncs)

    # --- worker -------------------------------------------------------------------------

    def _run(self) -> None:
        self._refresh_state()
        next_poll = time.monotonic() + STATE_POLL_S
        while True:
            try:
                _, _, event = self._events.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                event = None
            if isinstance(event, _Stop):
                return
            try:
                self._handle(event)
            except Exception:
                logger.exception("cache updates worker: unexpected error, carrying on")
            if time.monotonic() >= next_poll:
                self._refresh_state()
                next_poll = time.monotonic() + STATE_POLL_S

    def _handle(self, event: _Event | None) -> None:
        match event:
            case _Connected(reason) if succeeded(reason):
                self._connected.set()
                self._client.subscribe(self._filter, qos=1)
                logger.info("cache updates connected; subscribing to %s", self._filter)
            case _Subscribed(granted=True):
                self.subscribed.set()
            case _Subscribed():
                logger.error(
                    "cache updates: the broker refused the subscription to %s", self._filter
                )
            case _Connected(reason):
                logger.warning(
                    "cache updates connection refused: %s%s", reason, refusal_hint(reason)
                )
            case _Disconnected(reason):
                self._connected.clear()
                logger.info("cache updates disconnected: %s", reason)
            case _Received():
                self._install(event)
            case _:
                pass

    def _install(self, message: _Received) -> None:
        self._received += 1
        try:
            self.installer.install_bytes(message.payload, source=f"mqtt:{message.topic}")
        except BundleRefusedError as err:
            if err.reason is RefusalReason.GAP:
                self._request_resync(err)
        except (CacheError, OSError) as err:
            # The bundle may be fine and the disk full: leave it unacknowledged for a retry.
            logger.error("cache update from %s could not be installed: %s", message.topic, err)
            return
        self._refresh_state()
        if message.qos:
            self._client.ack(message.mid, message.qos)

    def _request_resync(self, err: BundleRefusedError) -> None:
        now = time.monotonic()
        if now - self._last_resync < self._resync_interval_s:
            return
        self._last_resync = now
        state = self.installer.state()
        payload = {
            "installed_version": state.bundle_version,
            "revocation_serial": state.revocation_serial,
            "reason": err.reason.value,
            "detail": err.detail,
            "requested_at": format_timestamp(datetime.now(UTC)),
        }
        self._client.publish(self._resync_topic, json.dumps(payload, sort_keys=True), qos=1)
        self._resyncs += 1
        logger.warning("cache resync requested: %s", err.detail)

    def _refresh_state(self) -> None:
        try:
            self.cache.reopen()
            state = self.installer.state()
        except (CacheError, OSError) as err:
            logger.error("cache state unreadable: %s", err)
            return
        if state != self._last_state:
            self._last_state = state
            if self._on_state is not None:
                self._on_state(state)
