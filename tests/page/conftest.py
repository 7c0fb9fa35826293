"""Helpers for the page's tests: a page server on a free loopback port, a self-signed cert."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.page.auth import CredentialCheck, server_tls
from agent.page.feed import PageFeed
from agent.page.metrics import build_registry
from agent.page.server import PageServer, build_app

SECRET = "page-test-secret-0123456789"  # noqa: S105 - a test credential


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


def make_self_signed(directory: Path, name: str = "page") -> CertFiles:
    """A P-256 self-signed certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lane page test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = CertFiles(directory / f"{name}.pem", directory / f"{name}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    return files


@pytest.fixture
def self_signed(tmp_path: Path) -> CertFiles:
    return make_self_signed(tmp_path)


STATUS: dict[str, Any] = {
    "schema": "lane-agent/status/1",
    "lane": {"port_id": "TEST", "lane_id": "L09", "agent": "0.0.0"},
    "time": "2026-12-07T04:00:00.000Z",
    "faults": [{"code": "loop_chatter", "message": "the loop chatters", "since": "x"}],
    "last_fault": None,
    "reader": {
        "family": "lane_controller",
        "up": True,
        "controller_id": "LANE-SIM",
        "firmware": "1.0.0",
        "link": {"frames_ok": 44, "crc_errors": 3, "framing_errors": 1, "link_ups": 1},
        "last_read_at": 1796618167.27,
    },
    "outbox": {"depth": 2, "oldest_unsent_age_s": 1.5, "size_bytes": 4096, "held_in_memory": 0},
    "uplink": {"state": "connected", "broker": "127.0.0.1:1883", "in_flight": 1, "published": 7},
    "cache": {"bundle_version": 12, "revocation_serial": 3, "age_s": 40.0, "stale": False},
    "correlation": {"cards_attached": 5, "cards_uncertain": 1, "chatter": 2},
}


@pytest.fixture
def page_server() -> Iterator[Callable[..., PageServer]]:
    """Start a page server over a feed on a free loopback port; stopped after the test."""
    servers: list[PageServer] = []

    def start(
        feed: PageFeed | None = None,
        *,
        status: Mapping[str, Any] | None = None,
        secret: str | None = None,
        tls: CertFiles | None = None,
        status_interval_s: float = 0.5,
        host: str = "127.0.0.1",
    ) -> PageServer:
        if feed is None:
            document = dict(STATUS if status is None else status)
            feed = PageFeed(status=lambda: document)
        app = build_app(
            feed,
            build_registry(feed, feed.status),
            check=None if secret is None else CredentialCheck(secret),
            status_interval_s=status_interval_s,
        )
        context = None if tls is None else server_tls(tls.cert, tls.key)
        server = PageServer(app, feed, host=host, port=0, tls=context)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
