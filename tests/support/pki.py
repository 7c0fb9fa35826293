"""A private CA and certificates made with the openssl command, for mutual-TLS broker tests.

Keys are P-256 (fast to make); certificates last two days. Lane certificates carry the lane's
identity "<port_id>/<lane_id>" as their CN, which the reference broker config uses as username.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.uplink.publisher import TlsFiles


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, signed by the test CA."""

    common_name: str
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    found = shutil.which("openssl")
    if found is None:
        pytest.fail("openssl not found: install it with `sudo apt-get install openssl`")
    result = subprocess.run([found, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"openssl {' '.join(args[:2])} failed: {result.stderr}")


class TestPki:
    """A throw-away CA in ``directory`` that issues broker and client certificates."""

    __test__ = False  # not a test class, whatever its name says

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_cert = directory / "ca.pem"
        self.ca_key = directory / "ca.key"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(self.ca_key), "-out", str(self.ca_cert), "-days", "2",
            "-subj", "/CN=lane-agent test CA",
        )  # fmt: skip
        self.broker = self.issue("localhost", "broker", san="IP:127.0.0.1,DNS:localhost")

    def issue(self, common_name: str, name: str, *, san: str | None = None) -> Identity:
        """A certificate for ``common_name`` (a '/' in it is kept as part of the CN)."""
        key = self.directory / f"{name}.key"
        csr = self.directory / f"{name}.csr"
        cert = self.directory / f"{name}.pem"
        subject = "/CN=" + common_name.replace("/", "\\/")
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", subject,
        )  # fmt: skip
        extra: list[str] = []
        if san is not None:
            extensions = self.directory / f"{name}.ext"
            extensions.write_text(f"subjectAltName={san}\n")
            extra = ["-extfile", str(extensions)]
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "2", *extra,
        )  # fmt: skip
        return Identity(common_name, cert, key)

    def tls_files(self, identity: Identity) -> TlsFiles:
        return TlsFiles(self.ca_cert, identity.cert, identity.key)
