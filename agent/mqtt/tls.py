"""Mutual TLS for the agent's MQTT clients: which files, and putting them on a paho client.

paho's ``tls_set`` builds an SSL context and loads the CA, certificate and key into it there and
then. A client built after a certificate was renewed therefore presents the new one: the uplink
builds a fresh client for every connection, so a renewal is picked up at the next reconnect
without a restart.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Mutual TLS: the CA that signed the broker's certificate, and this client's certificate and key.

    The certificate's subject (CN) is the client's identity on the broker (see config/mosquitto/).
    """

    ca_file: Path
    cert_file: Path
    key_file: Path

    def apply(self, client: mqtt.Client) -> None:
        """Have ``client`` verify the broker against the CA and present the certificate: reads the
        three files now.

        Raises ``OSError`` for a file that is missing or unreadable, ``ssl.SSLError`` (an
        ``OSError`` too) for one that holds no usable certificate or a key that does not match.
        """
        client.tls_set(
            ca_certs=str(self.ca_file),
            certfile=str(self.cert_file),
            keyfile=str(self.key_file),
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
