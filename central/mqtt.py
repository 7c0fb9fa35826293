"""MQTT v5 clients for central: one place for the broker address, TLS and mutual TLS.

With the shipped broker config (config/mosquitto/) every client presents a certificate signed by
the lane CA, and its CN is its identity: ``central-ingest-N`` for ingest worker N,
``central-cache`` for the bundle publisher (see the ACL). The broker forces the client id to that
identity, so two workers need two certificates.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


class TlsFilesError(ValueError):
    """A TLS option names a file that cannot be used (the message names it)."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Verify the broker with ``ca_file``; with ``cert_file``/``key_file``, present a client
    certificate (mutual TLS, what the shipped broker config requires)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def check(self) -> None:
        """Fail early, naming the file, rather than at the first connect."""
        if (self.cert_file is None) != (self.key_file is None):
            raise TlsFilesError("a client certificate needs both --tls-cert and --tls-key")
        for label, path in (
            ("CA", self.ca_file),
            ("certificate", self.cert_file),
            ("key", self.key_file),
        ):
            if path is not None and not path.is_file():
                raise TlsFilesError(f"TLS {label} file {path} does not exist or is not a file")


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsSettings | None = None
    username: str | None = None
    keepalive_s: int = 30

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls else "")


def new_client(broker: BrokerSettings, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """An MQTT v5 paho client for ``broker`` (not connected); TLS set up when configured."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if broker.username is not None:
        client.username_pw_set(broker.username)
    if broker.tls is not None:
        broker.tls.check()
        client.tls_set(
            ca_certs=str(broker.tls.ca_file),
            certfile=None if broker.tls.cert_file is None else str(broker.tls.cert_file),
            keyfile=None if broker.tls.key_file is None else str(broker.tls.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    return client
