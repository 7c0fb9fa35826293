"""Who may change the credential cache: the trust file, its keys, and signatures over JSON.

The trust file names the Ed25519 public keys central signs bundles with and how many of them
(``threshold``, the k of k-of-n) must sign each one. It is provisioned root-owned and read-only
for the agent: whoever can write it decides what the lane accepts, so :meth:`TrustStore.load`
refuses a file that is group- or world-writable or not owned by the expected user.

A key is named by its key id: the first 16 hex digits of the SHA-256 of its 32 raw public-key
bytes, so an id cannot be chosen independently of the key. A key listed with ``"revoked": true``
stays in the file so that a signature by it is refused as revoked rather than as unknown.

Key rotation is a trust-file update signed by at least ``threshold`` keys of the trust file in
force (:func:`verify_trust_update`), with a ``serial`` higher than the current one; installing it
is a root operation (``lane-agent keys install-trust``), never something the agent does to itself.

Exceptions::

    TrustError                 the trust file or a trust update cannot be used (path, reason)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

TRUST_FORMAT = "lane-agent/trust/1"
TRUST_UPDATE_DOMAIN = b"lane-agent trust update v1\x00"
"""Prefixed to signed trust bytes so a bundle signature can never pass as a trust signature."""
MAX_TRUST_FILE_BYTES = 256 * 1024
MAX_KEYS = 64
KEY_ID_HEX_DIGITS = 16


class TrustError(Exception):
    """The trust file (or a trust update) cannot be used."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"trust file {path}: {reason}")

    def __repr__(self) -> str:
        return f"TrustError(path={self.path!r}, reason={self.reason!r})"


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key id: 16 hex digits of SHA-256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_HEX_DIGITS]


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """Base64 of the 32 raw public-key bytes, the form the trust file holds."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def canonical_json(value: object) -> bytes:
    """The one byte form of a JSON value that is signed: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass(frozen=True, slots=True)
class TrustedKey:
    """One key of the trust file."""

    key_id: str
    public_key: Ed25519PublicKey
    revoked: bool


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """How a list of signatures fared against a trust store; ``valid`` holds distinct key ids."""

    valid: frozenset[str]
    unknown: tuple[str, ...]
    revoked: tuple[str, ...]
    bad: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The keys and threshold in force."""

    serial: int
    threshold: int
    keys: Mapping[str, TrustedKey]
    source: str

    @classmethod
    def load(cls, path: Path, *, required_owner_uid: int | None = 0) -> TrustStore:
        """Read and check the trust file at ``path``.

        Refuses a file the agent could have changed: group- or world-writable, or owned by
        someone other than ``required_owner_uid`` (root unless a test says otherwise; None skips
        the owner check, for tooling that only reads).
        """
        name = str(path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as err:
            raise TrustError(name, f"cannot open ({err.strerror or err})") from err
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise TrustError(name, "not a regular file")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise TrustError(
                    name,
                    f"mode {stat.S_IMODE(info.st_mode):04o} lets others write it; "
                    "make it root-owned and 0644 or stricter (chmod go-w)",
                )
            if required_owner_uid is not None and info.st_uid != required_owner_uid:
                raise TrustError(
                    name, f"owned by uid {info.st_uid}, must be owned by uid {required_owner_uid}"
                )
            if info.st_size > MAX_TRUST_FILE_BYTES:
                raise TrustError(name, f"larger than {MAX_TRUST_FILE_BYTES} bytes")
            with os.fdopen(os.dup(fd), "rb") as stream:
                data = stream.read(MAX_TRUST_FILE_BYTES + 1)
        finally:
            os.close(fd)
        return cls.from_bytes(data, source=name)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str) -> TrustStore:
        """Parse trust-file bytes (a trust document, optionally wrapped with signatures)."""
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TrustError(source, f"not JSON ({err})") from err
        if isinstance(document, dict) and "trust" in document:
            document = document["trust"]
        return cls.from_document(document, source=source)

    @classmethod
    def from_document(cls, document: object, *, source: str) -> TrustStore:
        """Check the shape of a trust document and build the store."""
        if not isinstance(document, dict):
            raise TrustError(source, "must be a JSON object")
        expected = {"format", "serial", "threshold", "keys"}
        if set(document) != expected:
            raise TrustError(source, f"keys must be exactly {', '.join(sorted(expected))}")
        if document["format"] != TRUST_FORMAT:
            raise TrustError(source, f"format {document['format']!r}, expected {TRUST_FORMAT!r}")
        serial, threshold, entries = document["serial"], document["threshold"], document["keys"]
        if not _is_int(serial) or serial < 1:
            raise TrustError(source, "serial must be a positive integer")
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_KEYS:
            raise TrustError(source, f"keys must be a list of 1-{MAX_KEYS} keys")
        keys: dict[str, TrustedKey] = {}
        for entry in entries:
            trusted = _trusted_key(entry, source)
            if trusted.key_id in keys:
                raise TrustError(source, f"key {trusted.key_id} is listed twice")
            keys[trusted.key_id] = trusted
        usable = sum(1 for k in keys.values() if not k.revoked)
        if not _is_int(threshold) or not 1 <= threshold <= usable:
            raise TrustError(
                source, f"threshold must be an integer from 1 to the {usable} unrevoked key(s)"
            )
        return cls(serial=serial, threshold=threshold, keys=keys, source=source)

    def to_document(self) -> dict[str, Any]:
        """The trust document this store was built from, to hand to the install worker process.

        Public keys only: the worker rebuilds the store with :meth:`from_document` rather than
        reading the trust file again, so it checks against exactly the keys the agent holds.
        """
        return {
            "format": TRUST_FORMAT,
            "serial": self.serial,
            "threshold": self.threshold,
            "keys": [
                {
                    "key_id": trusted.key_id,
                    "public_key": public_key_text(trusted.public_key),
                    "revoked": trusted.revoked,
                }
                for trusted in self.keys.values()
            ],
        }

    def check_signatures(
        self, message: bytes, signatures: Iterable[tuple[str, bytes]]
    ) -> SignatureCheck:
        """Sort each (key id, signature) pair into valid, unknown key, revoked key or bad."""
        valid: set[str] = set()
        unknown: list[str] = []
        revoked: list[str] = []
        bad: list[str] = []
        for signer, signature in signatures:
            trusted = self.keys.get(signer)
            if trusted is None:
                unknown.append(signer)
            elif trusted.revoked:
                revoked.append(signer)
            else:
                try:
                    trusted.public_key.verify(signature, message)
                except InvalidSignature:
                    bad.append(signer)
                else:
                    valid.add(signer)
        return SignatureCheck(frozenset(valid), tuple(unknown), tuple(revoked), tuple(bad))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _trusted_key(entry: object, source: str) -> TrustedKey:
    if not isinstance(entry, dict) or set(entry) != {"key_id", "public_key", "revoked"}:
        raise TrustError(source, "each key must have exactly key_id, public_key, revoked")
    if not isinstance(entry["revoked"], bool):
        raise TrustError(source, "revoked must be true or false")
    public_key = decode_public_key(entry["public_key"], source)
    derived = key_id(public_key)
    if entry["key_id"] != derived:
        raise TrustError(source, f"key_id {entry['key_id']!r} does not match its key ({derived})")
    return TrustedKey(key_id=derived, public_key=public_key, revoked=entry["revoked"])


def decode_public_key(text: object, source: str) -> Ed25519PublicKey:
    """A public key from base64 of its 32 raw bytes."""
    if not isinstance(text, str):
        raise TrustError(source, "public_key must be base64 text")
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as err:
        raise TrustError(source, "public_key is not base64 of 32 Ed25519 key bytes") from err


def trust_document(
    serial: int, threshold: int, keys: Iterable[tuple[Ed25519PublicKey, bool]]
) -> dict[str, Any]:
    """A trust document for the given (key, revoked) pairs; checked by parsing it back."""
    document = {
        "format": TRUST_FORMAT,
        "serial": serial,
        "threshold": threshold,
        "keys": [
            {"key_id": key_id(k), "public_key": public_key_text(k), "revoked": revoked}
            for k, revoked in keys
        ],
    }
    TrustStore.from_document(document, source="(new trust document)")
    return document


def sign_trust_update(
    document: Mapping[str, Any], signers: Iterable[Ed25519PrivateKey]
) -> dict[str, Any]:
    """Wrap a trust document with signatures by keys of the trust in force (for rotation)."""
    message = TRUST_UPDATE_DOMAIN + canonical_json(document)
    return {
        "trust": dict(document),
        "signatures": [
            {
                "key_id": key_id(signer.public_key()),
                "signature": base64.b64encode(signer.sign(message)).decode(),
            }
            for signer in signers
        ],
    }


def verify_trust_update(current: TrustStore, data: bytes, *, source: str) -> TrustStore:
    """The new trust store from a signed update, if ``current`` says it may replace it.

    Every signature must be by an unrevoked key of ``current`` and verify; at least
    ``current.threshold`` distinct keys must have signed; the serial must increase.
    """
    try:
        wrapped = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrustError(source, f"not JSON ({err})") from err
    if not isinstance(wrapped, dict) or set(wrapped) != {"trust", "signatures"}:
        raise TrustError(source, "a trust update has exactly the keys trust and signatures")
    new = TrustStore.from_document(wrapped["trust"], source=source)
    signatures = parse_signatures(wrapped["signatures"], source)
    message = TRUST_UPDATE_DOMAIN + canonical_json(wrapped["trust"])
    check = current.check_signatures(message, signatures)
    if check.unknown or check.revoked or check.bad:
        raise TrustError(
            source,
            f"signatures refused: unknown {list(check.unknown)}, revoked {list(check.revoked)}, "
            f"bad {list(check.bad)}",
        )
    if len(check.valid) < current.threshold:
        raise TrustError(
            source,
            f"{len(check.valid)} valid signature(s), the trust in force needs {current.threshold}",
        )
    if new.serial <= current.serial:
        raise TrustError(source, f"serial {new.serial} is not newer than {current.serial}")
    return new


def parse_signatures(value: object, source: str) -> list[tuple[str, bytes]]:
    """(key id, signature bytes) pairs from ``[{"key_id": ..., "signature": base64}]``."""
    if not isinstance(value, list):
        raise TrustError(source, "signatures must be a list")
    pairs: list[tuple[str, bytes]] = []
    for entry in value:
        if (
            not isinstance(entry, dict)
            or set(entry) != {"key_id", "signature"}
            or not isinstance(entry["key_id"], str)
            or not isinstance(entry["signature"], str)
        ):
            raise TrustError(source, "each signature must have exactly key_id and signature")
        try:
            pairs.append((entry["key_id"], base64.b64decode(entry["signature"], validate=True)))
        except binascii.Error as err:
            raise TrustError(source, "a signature is not base64") from err
    return pairs


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PKCS#8 PEM file (as ``lane-agent keys generate`` writes)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as err:
        raise TrustError(str(path), f"cannot read a private key ({err})") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(str(path), "not an Ed25519 private key")
    return key


def write_private_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write a private key as PKCS#8 PEM, created 0600 and never over an existing file."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as stream:
        os.fchmod(stream.fileno(), 0o600)
        stream.write(pem)
