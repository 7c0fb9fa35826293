"""The uplink's MQTT connection: a fresh paho client per connection, driven by the publisher.

Every connection uses a fresh paho client. paho keeps a message published while disconnected
queued and sends it after a reconnect, and it re-sends its own in-flight messages too; a fresh
client carries none of that, so exactly one party decides what is re-sent: the uplink, from the
outbox, after each CONNACK. Everything that was in flight when a connection dropped goes back to
pending and is re-sent, possibly twice on the wire (central drops duplicates by stream sequence
number); nothing is lost. Reconnect delays grow exponentially with random jitter
(:class:`agent.mqtt.ReconnectBackoff`) so a fleet of lanes does not reconnect in lock-step after a
broker restart.

No paho thread: the publisher thread drives the client's network loop itself
(:meth:`UplinkConnection.network_step` when ``poll`` says the socket is ready). paho's callbacks
only record what happened, because paho calls them in the middle of reading a packet, with its
internal locks held: connects, disconnects and acknowledgement watermarks go on the publisher's
event queue, PUBACKs (one per message) on a deque as plain tuples. Each client has a generation
number; events of a client already replaced are ignored.

The session is kept across reconnects (``clean_start=False`` and a session expiry interval) so
that subscriptions survive a short outage, and the broker publishes the ``offline`` will when a
connection dies without a DISCONNECT. With :class:`~agent.mqtt.TlsFiles` every connection verifies
the broker against the CA file and presents the lane's certificate (mutual TLS); the files are
read at each connect, so renewed certificates are picked up without a restart.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import ssl
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.mqtt import (
    DISCONNECT_WITH_WILL,
    ReconnectBackoff,
    TlsFiles,
    Will,
    connect_keeping_session,
    new_client,
    paho_keepalive,
    receive_maximum,
    refusal_hint,
    succeeded,
)
from agent.uplink.events import AckReceived, Connected, Disconnected, Event
from agent.uplink.stats import Counters
from agent.wire.topics import AVAILABILITY_OFFLINE

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(f"{__name__}.paho")

_MISC_INTERVAL_S = 1.0  # paho's keepalive housekeeping (loop_misc), as often as loop_forever

Puback = tuple[int, int, ReasonCode]
"""A PUBACK as paho reported it: (generation, message id, reason code)."""


class UplinkConnection:
    """The current paho client (if any), its generation, and when to try connecting next."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive_s: int,
        session_expiry_s: int,
        username: str | None,
        password: str | None,
        tls: TlsFiles | None,
        availability_topic: str,
        backoff: ReconnectBackoff,
        counters: Counters,
        events: queue.SimpleQueue[Event],
        pubacks: collections.deque[Puback],
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self._keepalive_s = keepalive_s
        self._session_expiry_s = session_expiry_s
        self._username = username
        self._password = password
        self._tls = tls
        self._will = Will(availability_topic, AVAILABILITY_OFFLINE)
        self.backoff = backoff
        self._counters = counters
        self._events = events
        self._pubacks = pubacks
        self.client: mqtt.Client | None = None
        self.generation = 0  # events from an older client than the current one are ignored
        self.session_up = False  # CONNACK with success received on the current client
        self.next_connect_at = 0.0
        self.next_misc_at = 0.0

    def open(self, paho_window: int) -> str | None:
        """Send CONNECT on a fresh client whose paho window is ``paho_window``.

        None when it went out (the CONNACK arrives as an event); otherwise why not, for
        :meth:`retry_later`.
        """
        self.generation += 1
        log.debug("connecting to %s:%d as %s", self.host, self.port, self.client_id)
        try:
            client = self._new_client(self.generation, paho_window)
        except (OSError, ValueError) as error:
            # Missing or unreadable CA, certificate or key: retried, since files may be renewed.
            return f"TLS files unusable: {error}"
        try:
            connect_keeping_session(
                client,
                self.host,
                self.port,
                keepalive=paho_keepalive(self._keepalive_s),
                session_expiry_s=self._session_expiry_s,
            )
        except ssl.SSLCertVerificationError as error:
            return f"TLS: broker certificate rejected: {error.verify_message}"
        except ssl.SSLError as error:
            return f"TLS handshake failed: {error.reason or error}"
        except ConnectionRefusedError:
            return "connection refused (is the broker running?)"
        except OSError as error:
            return f"connecting failed: {error}"
        self.client = client
        self.next_misc_at = time.monotonic() + _MISC_INTERVAL_S
        return None

    def _new_client(self, generation: int, paho_window: int) -> mqtt.Client:
        events = self._events
        client = new_client(
            self.client_id,
            tls=self._tls,
            username=self._username,
            password=self._password,
            will=self._will,
            reconnect_on_failure=False,  # reconnecting is ours: with jitter and a fresh client
        )
        if _paho_log.isEnabledFor(logging.DEBUG):  # paho formats a line per packet when asked
            client.on_log = _log_paho_message
        client.max_inflight_messages_set(paho_window)
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
            maximum = receive_maximum(properties)
            events.put(Connected(generation, reason, flags.session_present, maximum))

        def on_disconnect(
            _client: mqtt.Client,
            _userdata: Any,
            _flags: mqtt.DisconnectFlags,
            reason: ReasonCode,
            _properties: Properties | None,
        ) -> None:
            events.put(Disconnected(generation, reason))

        def on_publish(
            _client: mqtt.Client,
            _userdata: Any,
            mid: int,
            reason: ReasonCode,
            _properties: Properties,
        ) -> None:
            pubacks.append((generation, mid, reason))

        def on_message(_client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
            events.put(AckReceived(generation, bytes(message.payload)))

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        return client

    def connack(self, reason: ReasonCode) -> bool:
        """The broker answered CONNECT: True when the session is up."""
        if not succeeded(reason):
            # paho closes the socket and reports a disconnect next; that schedules the retry.
            log.warning(
                "broker %s:%d refused the connection as %s: %s%s",
                self.host,
                self.port,
                self.client_id,
                reason,
                refusal_hint(reason),
            )
            with self._counters.lock:
                self._counters.last_connect_failure = f"CONNACK: {reason}"
            return False
        self.session_up = True
        self.backoff.connected(time.monotonic())
        return True

    def retry_later(self, why: str) -> None:
        """Schedule the next connection attempt after a jittered, growing delay."""
        delay = self.backoff.next_delay()
        self.next_connect_at = time.monotonic() + delay
        with self._counters.lock:
            self._counters.last_connect_failure = why
        log.warning(
            "uplink to %s:%d: %s; attempt %d in %.1f s",
            self.host,
            self.port,
            why,
            self.backoff.failures + 1,
            delay,
        )

    def write_pending(self) -> None:
        """Write what this pass queued (PUBLISHes, SUBSCRIBE, DISCONNECT), as far as it goes."""
        client = self.client
        if client is not None and client.want_write() and client.socket() is not None:
            client.loop_write()

    def network_step(self, sock: Any, readable: bool, writable: bool) -> None:
        """What paho's own loop does each pass: read, write what is left, keepalive housekeeping.

        Errors need no handling here: paho closes the socket and calls ``on_disconnect``, which
        queues the event that releases the client.
        """
        client = self.client
        assert client is not None
        if readable or tls_pending(sock):
            client.loop_read()
        # The PUBLISHes that paho released from its queue as PUBACKs came in, in one burst.
        if (readable or writable) and client.want_write() and client.socket() is not None:
            client.loop_write()
        now = time.monotonic()
        if now >= self.next_misc_at and client.socket() is not None:
            self.next_misc_at = now + _MISC_INTERVAL_S
            client.loop_misc()  # sends PINGREQ; gives up on a silent link or a missing CONNACK

    def release(self) -> None:
        """Forget a client whose connection has ended."""
        client, self.client = self.client, None
        self.generation += 1
        self.session_up = False
        if client is not None:
            _close_socket(client)  # paho has closed it after reporting the disconnect; to be sure

    def abandon(self) -> None:
        """Drop the client without waiting for the broker: when time is up, or on failure."""
        client, self.client = self.client, None
        self.generation += 1
        self.session_up = False
        if client is not None:
            client.disconnect(DISCONNECT_WITH_WILL)
            if client.socket() is not None:
                client.loop_write()  # sent if the socket takes it; paho then closes it
            # Nobody drives this client's loop any more: a DISCONNECT still queued is dropped with
            # the socket, and the broker publishes the will for a connection closed without one.
            _close_socket(client)


def tls_pending(sock: Any) -> bool:
    """True when a TLS socket holds decrypted bytes already read from the kernel."""
    pending = getattr(sock, "pending", None)
    return pending is not None and bool(pending())


def _write_later(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """paho's 'socket wants writing' hook: nothing to do, the publisher loop checks want_write()."""


def _close_socket(client: mqtt.Client) -> None:
    """Close a discarded client's socket if paho has not (it does on every disconnect it sees)."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _log_paho_message(_client: mqtt.Client, _userdata: Any, level: int, message: str) -> None:
    """Pass paho's own log lines on at DEBUG.

    paho reports every socket error at ERROR (and "not connected" after each clean DISCONNECT); the
    uplink already reports the same events once, at the right level, so paho's copies are kept for
    debugging only. They carry topics and sizes, never payloads.
    """
    _paho_log.debug("paho [%s] %s", level, message)
