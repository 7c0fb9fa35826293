"""Who may see the page: the credential, the TLS files, and the check of each request.

The credential is a secret in a file (systemd ``LoadCredential=``; mode 0600 or 0640, owned by
root): its first line, at least ``MIN_SECRET_LENGTH`` characters. A request carries it either as
a bearer token (``Authorization: Bearer <secret>``: ``lane-agent status``, Prometheus'
``authorization`` block) or as the password of HTTP Basic authentication with any user name
(a browser asks once, then sends it with every request of the page, its event stream included).
Both are compared in constant time. Without a credential configured, every request is served:
the config allows that only on a loopback address.

Errors here are config errors: ``lane-agent run`` exits 78 (EX_CONFIG) on them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import ssl
from pathlib import Path

MIN_SECRET_LENGTH = 16
"""Shortest secret accepted: a page reachable over the network must not be guessable."""


class PageConfigError(Exception):
    """The page's credential or TLS files cannot be used; the message names the file and why."""


def is_loopback(host: str) -> bool:
    """``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve anywhere


def read_credential(path: Path) -> str:
    """The secret in ``path`` (its first line, stripped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PageConfigError(f"page.credential_file {path}: no such file") from None
    except IsADirectoryError:
        raise PageConfigError(f"page.credential_file {path}: is a directory") from None
    except PermissionError:
        raise PageConfigError(
            f"page.credential_file {path}: not readable by this user (give the agent read "
            "access, or pass it with systemd LoadCredential=)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise PageConfigError(f"page.credential_file {path}: cannot read: {error}") from None
    lines = text.splitlines()
    secret = lines[0].strip() if lines else ""
    if len(secret) < MIN_SECRET_LENGTH:
        raise PageConfigError(
            f"page.credential_file {path}: the secret on its first line must be at least "
            f"{MIN_SECRET_LENGTH} characters (e.g. `openssl rand -base64 24`)"
        )
    return secret


def server_tls(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The page's TLS context (TLS 1.2 or newer), loaded now so that a bad file stops the start."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except FileNotFoundError as error:
        raise PageConfigError(
            f"page.cert_file {cert_file} / page.key_file {key_file}: no such file "
            f"({error.filename or 'one of them'})"
        ) from None
    except PermissionError as error:
        raise PageConfigError(
            f"page.cert_file {cert_file} / page.key_file {key_file}: not readable by this user "
            f"({error.filename or 'one of them'})"
        ) from None
    except (ssl.SSLError, OSError) as error:
        raise PageConfigError(
            f"page.cert_file {cert_file} / page.key_file {key_file}: not a PEM certificate "
            f"and its unencrypted private key ({error})"
        ) from None
    return context


class CredentialCheck:
    """Checks the ``Authorization`` header of a request against the secret."""

    def __init__(self, secret: str) -> None:
        self._digest = hashlib.sha256(secret.encode()).digest()

    def allows(self, authorization: str | None) -> bool:
        """The header carries the secret, as a bearer token or as a Basic password."""
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        offered: str | None = None
        if scheme.lower() == "bearer":
            offered = value
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            _user, colon, password = decoded.partition(":")
            offered = password if colon else None
        if offered is None:
            return False
        # Compared as digests: equal lengths, so the comparison time says nothing of the secret.
        return hmac.compare_digest(hashlib.sha256(offered.encode()).digest(), self._digest)
