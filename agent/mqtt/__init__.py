"""What every MQTT client of the agent shares: the session, TLS, reason codes and reconnect delays.

The agent opens two MQTT v5 connections to central's broker: the uplink (:mod:`agent.uplink`), which
publishes the lane's outbox, status and live events, and the credential cache's updates subscriber
(:mod:`agent.cache.updates`), which receives central's signed bundles. Both are built here the
same way, so a fix to how the agent talks MQTT is made once:

* :mod:`agent.mqtt.client`: a paho client the project's way (MQTT v5, callback API 2, a will,
  username/password, TLS), connected with a session the broker keeps across reconnects
  (``clean_start=False`` and a session expiry), and the keepalive to negotiate;
* :mod:`agent.mqtt.tls`: :class:`TlsFiles`, the CA, certificate and key of mutual TLS, read
  whenever a client is built, so renewed certificates are picked up;
* :mod:`agent.mqtt.reasons`: what a CONNACK or PUBACK reason code means (success below 0x80, the
  broker's Receive Maximum, what an operator should check after a refusal);
* :mod:`agent.mqtt.backoff`: jittered exponential delays, and the reconnect back-off that resets
  once a connection stayed up.

This package imports nothing else of the agent: it is a library both adapters may use.
"""

from agent.mqtt.backoff import ReconnectBackoff, backoff_delay, paho_reconnect_delays
from agent.mqtt.client import (
    DISCONNECT_WITH_WILL,
    MAX_SESSION_EXPIRY_S,
    Will,
    connect_keeping_session,
    new_client,
    paho_keepalive,
)
from agent.mqtt.reasons import FAILURE_THRESHOLD, receive_maximum, refusal_hint, succeeded
from agent.mqtt.tls import TlsFiles

__all__ = [
    "DISCONNECT_WITH_WILL",
    "FAILURE_THRESHOLD",
    "MAX_SESSION_EXPIRY_S",
    "ReconnectBackoff",
    "TlsFiles",
    "Will",
    "backoff_delay",
    "connect_keeping_session",
    "new_client",
    "paho_keepalive",
    "paho_reconnect_delays",
    "receive_maximum",
    "refusal_hint",
    "succeeded",
]
