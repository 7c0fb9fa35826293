"""TlsFiles: the three files are read each time a client is built, and bad files are errors."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import pytest

from agent.mqtt import TlsFiles, new_client
from tests.support.pki import TestPki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


def test_a_missing_file_is_an_os_error_naming_nothing_secret(pki: TestPki, tmp_path: Path) -> None:
    lane = pki.issue("port-7/lane-3", "lane-missing")
    files = TlsFiles(pki.ca_cert, tmp_path / "renewal-not-there-yet.pem", lane.key)
    with pytest.raises(FileNotFoundError):
        new_client("lane", tls=files)


def test_a_key_that_does_not_match_the_certificate_is_an_ssl_error(pki: TestPki) -> None:
    lane = pki.issue("port-7/lane-3", "lane-mismatch")
    other = pki.issue("port-7/lane-4", "other-mismatch")
    with pytest.raises(ssl.SSLError):
        new_client("lane", tls=TlsFiles(pki.ca_cert, lane.cert, other.key))


def test_files_are_read_when_a_client_is_built_so_a_renewal_needs_no_restart(
    pki: TestPki, tmp_path: Path
) -> None:
    """The same TlsFiles, the files replaced in place (a renewal): the next client loads the new
    ones; nothing was cached when the first client failed."""
    cert, key = tmp_path / "lane.pem", tmp_path / "lane.key"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    files = TlsFiles(pki.ca_cert, cert, key)
    with pytest.raises(ssl.SSLError):
        new_client("lane", tls=files)
    renewed = pki.issue("port-7/lane-3", "lane-renewed")
    shutil.copyfile(renewed.cert, cert)
    shutil.copyfile(renewed.key, key)
    new_client("lane", tls=files)  # loads the renewed pair
