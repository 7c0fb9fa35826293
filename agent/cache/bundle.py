"""Signed cache bundles: the only way central's credential data gets into a lane's cache.

A bundle is one byte string, the same in a file and in an MQTT message (docs/bundles.md)::

    LANE-AGENT-BUNDLE/1\\n
    {"manifest": {...}, "signatures": [{"key_id": ..., "signature": ...}, ...]}\\n
    <payload: gzip of UTF-8 lines>

The manifest says what the payload is (kind, version, base version of a delta, scope, record
count, payload size and SHA-256) and how long it may be installed (``expires_at``). Signatures
are Ed25519 over ``MANIFEST_DOMAIN + canonical_json(manifest)``; the payload is bound to them by
its digest. Checks that need no payload (size, shape, signatures, expiry, scope) come first, so a
forged bundle costs the lane one header read.

Payload lines, tab-separated, one per record (``record_count`` lines):

- snapshot: ``REF DOCUMENT_TYPE PROGRAM STATUS VALID_FROM VALID_UNTIL HOLDER_REF VEHICLES``
  (times as Unix seconds, vehicles ``JUR:PLATE;…`` or empty), strictly ascending by ref so the
  lane loads it in key order without sorting;
- delta: ``U`` + the eight record fields (insert or replace), or ``D REF`` (delete);
- revocation: ``REF``;
- freshness: no lines.

Exceptions::

    BundleRefusedError         a bundle was not installed (reason, detail)
"""

from __future__ import annotations

import base64
import enum
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cache import records
from agent.cache.records import StorageRow
from agent.cache.trust import TrustError, TrustStore, canonical_json, key_id, parse_signatures

MAGIC = b"LANE-AGENT-BUNDLE/1\n"
BUNDLE_FORMAT = "lane-agent/bundle/1"
PAYLOAD_ENCODING = "tsv-lines+gzip"
MANIFEST_DOMAIN = b"lane-agent bundle manifest v1\x00"
"""Prefixed to the signed manifest bytes: a bundle signature is never valid for anything else."""
MAX_HEADER_BYTES = 64 * 1024
PAYLOAD_BLOCK_BYTES = 1 << 20
MAX_LINE_BYTES = 4096
"""No record line comes near this; a longer one is refused before it can fill memory."""
DELTA_BATCH_ROWS = 512
"""Changes per batch :func:`delta_batches` yields: one ``executemany`` each, bounded memory."""


class Kind(enum.StrEnum):
    """What a bundle does to the cache."""

    SNAPSHOT = "snapshot"
    """The whole data set: built into a new file and swapped in."""
    DELTA = "delta"
    """Changes from ``base_version`` to ``version``, applied in one transaction."""
    REVOCATION = "revocation"
    """Refs to mark revoked now; its own serial in ``version``, applied before anything queued."""
    FRESHNESS = "freshness"
    """No data: central vouches that ``version`` is still current at ``created_at``."""


class RefusalReason(enum.StrEnum):
    """Why a bundle was refused; each is counted separately on the status topic."""

    OVERSIZED = "oversized"
    TRUNCATED = "truncated"
    MALFORMED = "malformed"
    MISSING_SIGNATURE = "missing_signature"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    BAD_SIGNATURE = "bad_signature"
    BELOW_THRESHOLD = "below_threshold"
    EXPIRED = "expired"
    WRONG_SCOPE = "wrong_scope"
    ROLLBACK = "rollback"
    GAP = "gap"
    DIGEST_MISMATCH = "digest_mismatch"
    INVALID_RECORD = "invalid_record"


class BundleRefusedError(Exception):
    """A bundle was refused; the cache is as it was. ``detail`` never quotes a record."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"bundle refused ({reason.value}): {detail}")

    def __repr__(self) -> str:
        return f"BundleRefusedError(reason={self.reason.value!r}, detail={self.detail!r})"


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a bundle may be installed: one port, optionally only some of its lanes."""

    port_id: str
    lanes: tuple[str, ...] | None = None

    def admits(self, port_id: str, lane_id: str) -> bool:
        """Whether the lane ``port_id``/``lane_id`` is inside this scope."""
        return self.port_id == port_id and (self.lanes is None or lane_id in self.lanes)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The signed description of a bundle's payload."""

    kind: Kind
    version: int
    base_version: int | None
    created_at: int
    expires_at: int
    scope: Scope
    record_count: int
    payload_size: int
    payload_sha256: str

    def to_json(self) -> dict[str, Any]:
        """The manifest object as it is signed and stored."""
        return {
            "format": BUNDLE_FORMAT,
            "kind": self.kind.value,
            "version": self.version,
            "base_version": self.base_version,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "scope": {
                "port_id": self.scope.port_id,
                "lanes": None if self.scope.lanes is None else list(self.scope.lanes),
            },
            "record_count": self.record_count,
            "payload_size": self.payload_size,
            "payload_sha256": self.payload_sha256,
            "payload_encoding": PAYLOAD_ENCODING,
        }

    @classmethod
    def from_json(cls, value: object) -> Manifest:
        """Parse a manifest object; raises BundleRefusedError(MALFORMED) naming the bad field."""
        if not isinstance(value, dict):
            raise _malformed("manifest is not a JSON object")
        expected = {
            "format", "kind", "version", "base_version", "created_at", "expires_at", "scope",
            "record_count", "payload_size", "payload_sha256", "payload_encoding",
        }  # fmt: skip
        if set(value) != expected:
            raise _malformed(f"manifest keys must be exactly {', '.join(sorted(expected))}")
        if value["format"] != BUNDLE_FORMAT:
            raise _malformed(f"format {value['format']!r}, this lane reads {BUNDLE_FORMAT!r}")
        if value["payload_encoding"] != PAYLOAD_ENCODING:
            raise _malformed(f"payload_encoding must be {PAYLOAD_ENCODING!r}")
        try:
            kind = Kind(value["kind"])
        except ValueError:
            raise _malformed(f"kind must be one of {', '.join(Kind)}") from None
        version = _natural(value["version"], "version", minimum=1)
        base = value["base_version"]
        if kind is Kind.DELTA:
            base = _natural(base, "base_version", minimum=0)
            if base >= version:
                raise _malformed("a delta's version must be greater than its base_version")
        elif base is not None:
            raise _malformed(f"base_version must be null for a {kind.value}")
        created_at = _epoch(value["created_at"], "created_at")
        expires_at = _epoch(value["expires_at"], "expires_at")
        if expires_at <= created_at:
            raise _malformed("expires_at must be later than created_at")
        scope = _scope(value["scope"])
        record_count = _natural(value["record_count"], "record_count", minimum=0)
        if kind is Kind.FRESHNESS and record_count:
            raise _malformed("a freshness notice carries no records")
        payload_size = _natural(value["payload_size"], "payload_size", minimum=0)
        digest = value["payload_sha256"]
        if not isinstance(digest, str) or re.fullmatch(r"[0-9a-f]{64}", digest) is None:
            raise _malformed("payload_sha256 must be 64 lower-case hex digits")
        return cls(
            kind=kind,
            version=version,
            base_version=base,
            created_at=created_at,
            expires_at=expires_at,
            scope=scope,
            record_count=record_count,
            payload_size=payload_size,
            payload_sha256=digest,
        )


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """A bundle's manifest after its signatures were checked, and where its payload starts."""

    manifest: Manifest
    signed_by: frozenset[str]
    payload_offset: int


@dataclass(frozen=True, slots=True)
class BundleLimits:
    """The largest bundles a lane accepts, by kind (a forged giant must not fill the disk)."""

    max_snapshot_bytes: int
    max_update_bytes: int

    def for_kind(self, kind: Kind) -> int:
        """The byte limit for one kind of bundle."""
        return self.max_snapshot_bytes if kind is Kind.SNAPSHOT else self.max_update_bytes


def _malformed(detail: str) -> BundleRefusedError:
    return BundleRefusedError(RefusalReason.MALFORMED, detail)


def _natural(value: object, name: str, *, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _malformed(f"{name} must be an integer >= {minimum}")
    return value


def _epoch(value: object, name: str) -> int:
    if (
        not isinstance(value, str)
        or re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value) is None
    ):
        raise _malformed(f"{name} must be a UTC time like 2026-01-01T00:00:00Z")
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        raise _malformed(f"{name} is not a valid date-time") from None


def _iso(epoch: int) -> str:
    return records.format_timestamp(datetime.fromtimestamp(epoch, UTC))


_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


def _scope(value: object) -> Scope:
    if not isinstance(value, dict) or set(value) != {"port_id", "lanes"}:
        raise _malformed("scope must have exactly port_id and lanes")
    port_id, lanes = value["port_id"], value["lanes"]
    if not isinstance(port_id, str) or _IDENTIFIER.fullmatch(port_id) is None:
        raise _malformed("scope.port_id must be a port identifier")
    if lanes is None:
        return Scope(port_id)
    if (
        not isinstance(lanes, list)
        or not lanes
        or not all(isinstance(lane, str) and _IDENTIFIER.fullmatch(lane) for lane in lanes)
    ):
        raise _malformed("scope.lanes must be null or a non-empty list of lane identifiers")
    return Scope(port_id, tuple(lanes))


# --- reading ------------------------------------------------------------------------------


def read_header(
    stream: IO[bytes], total_size: int, trust: TrustStore, limits: BundleLimits
) -> BundleHeader:
    """Read the magic and the signed manifest from ``stream`` and check its signatures.

    ``total_size`` is the whole bundle's length in bytes. Checks, in order: overall size, shape,
    signatures (missing, unknown key, revoked key, bad, below threshold), the kind's size limit
    and the payload length. Expiry, scope and version need the lane's state: the installer
    checks them next.
    """
    if total_size > limits.max_snapshot_bytes:
        raise BundleRefusedError(
            RefusalReason.OVERSIZED,
            f"{total_size} bytes, no bundle may exceed {limits.max_snapshot_bytes}",
        )
    magic = stream.read(len(MAGIC))
    if len(magic) < len(MAGIC) and MAGIC.startswith(magic):
        raise BundleRefusedError(RefusalReason.TRUNCATED, "ends inside the bundle marker")
    if magic != MAGIC:
        raise _malformed("does not start with the bundle marker LANE-AGENT-BUNDLE/1")
    line = stream.readline(MAX_HEADER_BYTES + 1)
    if not line.endswith(b"\n"):
        if len(line) > MAX_HEADER_BYTES:
            raise BundleRefusedError(
                RefusalReason.OVERSIZED, f"manifest line longer than {MAX_HEADER_BYTES} bytes"
            )
        raise BundleRefusedError(RefusalReason.TRUNCATED, "ends inside the manifest line")
    try:
        document = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _malformed(f"manifest line is not JSON ({err})") from None
    if not isinstance(document, dict) or set(document) != {"manifest", "signatures"}:
        raise _malformed("manifest line must have exactly manifest and signatures")
    try:
        signatures = parse_signatures(document["signatures"], "bundle")
    except TrustError as err:
        raise _malformed(err.reason) from None
    signed_by = _check_signatures(document["manifest"], signatures, trust)
    manifest = Manifest.from_json(document["manifest"])
    limit = limits.for_kind(manifest.kind)
    if total_size > limit:
        raise BundleRefusedError(
            RefusalReason.OVERSIZED,
            f"{manifest.kind.value} of {total_size} bytes, the limit is {limit}",
        )
    offset = len(MAGIC) + len(line)
    available = total_size - offset
    if available < manifest.payload_size:
        raise BundleRefusedError(
            RefusalReason.TRUNCATED,
            f"payload has {available} of its {manifest.payload_size} bytes",
        )
    if available > manifest.payload_size:
        raise _malformed(f"{available - manifest.payload_size} bytes after the payload")
    return BundleHeader(manifest=manifest, signed_by=signed_by, payload_offset=offset)


def _check_signatures(
    manifest: object, signatures: list[tuple[str, bytes]], trust: TrustStore
) -> frozenset[str]:
    if not signatures:
        raise BundleRefusedError(RefusalReason.MISSING_SIGNATURE, "the bundle is not signed")
    check = trust.check_signatures(MANIFEST_DOMAIN + canonical_json(manifest), signatures)
    if check.unknown:
        raise BundleRefusedError(
            RefusalReason.UNKNOWN_KEY,
            f"signed by key(s) not in the trust file: {list(check.unknown)}",
        )
    if check.revoked:
        raise BundleRefusedError(
            RefusalReason.REVOKED_KEY, f"signed by revoked key(s): {list(check.revoked)}"
        )
    if check.bad:
        raise BundleRefusedError(
            RefusalReason.BAD_SIGNATURE, f"signature(s) do not verify for key(s) {list(check.bad)}"
        )
    if len(check.valid) < trust.threshold:
        raise BundleRefusedError(
            RefusalReason.BELOW_THRESHOLD,
            f"{len(check.valid)} distinct valid signature(s), the trust file needs {trust.threshold}",
        )
    return check.valid


def check_payload_digest(stream: IO[bytes], manifest: Manifest) -> None:
    """Hash the payload (``stream`` positioned at its start) and compare with the manifest."""
    hasher = hashlib.sha256()
    remaining = manifest.payload_size
    while remaining:
        block = stream.read(min(remaining, 1 << 20))
        if not block:
            raise BundleRefusedError(RefusalReason.TRUNCATED, "payload ended early")
        hasher.update(block)
        remaining -= len(block)
    if hasher.hexdigest() != manifest.payload_sha256:
        raise BundleRefusedError(
            RefusalReason.DIGEST_MISMATCH, "payload SHA-256 differs from the signed manifest"
        )


def payload_lines(stream: IO[bytes], manifest: Manifest) -> Iterator[str]:
    """The payload's lines (without newline), checked to be exactly ``record_count`` of them.

    ``stream`` is positioned at the payload start. A gzip or UTF-8 error is MALFORMED: the digest
    was checked before, so a bad payload was signed that way.
    """
    if manifest.payload_size == 0:
        if manifest.record_count:
            raise _malformed("empty payload, but record_count is not 0")
        return
    count = 0
    tail = b""
    bounded = io.BufferedReader(_Bounded(stream, manifest.payload_size), buffer_size=1 << 20)
    try:
        with gzip.GzipFile(fileobj=bounded, mode="rb") as unzipped:
            # Whole blocks split at once: iterating a GzipFile line by line costs more than
            # decoding the record.
            while block := unzipped.read(PAYLOAD_BLOCK_BYTES):
                data = tail + block
                cut = data.rfind(b"\n") + 1
                complete, tail = data[:cut], data[cut:]
                if len(tail) > MAX_LINE_BYTES:
                    raise _malformed(f"line {count + 1} is longer than {MAX_LINE_BYTES} bytes")
                try:
                    lines = complete.decode("ascii").split("\n")
                except UnicodeDecodeError as err:
                    number = count + complete[: err.start].count(b"\n") + 1
                    raise BundleRefusedError(
                        RefusalReason.INVALID_RECORD, f"line {number}: not ASCII text"
                    ) from None
                lines.pop()  # the empty string after the last newline
                count += len(lines)
                if count > manifest.record_count:
                    raise _malformed(f"more lines than record_count {manifest.record_count}")
                yield from lines
    except (OSError, EOFError, zlib.error) as err:
        raise _malformed(f"payload is not valid gzip ({err})") from None
    if tail:
        raise _malformed(f"line {count + 1} does not end with a newline")
    if count != manifest.record_count:
        raise _malformed(f"{count} lines, record_count says {manifest.record_count}")


class _Bounded(io.RawIOBase):
    """The next ``size`` bytes of a stream, so gzip cannot read past the payload."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self._remaining = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._remaining <= 0:
            return 0
        view = memoryview(buffer).cast("B")
        data = self._stream.read(min(len(view), self._remaining))
        view[: len(data)] = data
        self._remaining -= len(data)
        return len(data)


# --- record lines -------------------------------------------------------------------------

_DOC_CODE = {str(m): c for m, c in records.DOCUMENT_TYPE_CODES.items()}
_PROGRAM_CODE = {str(m): c for m, c in records.PROGRAM_CODES.items()}
_STATUS_CODE = {str(m): c for m, c in records.STATUS_CODES.items()}
_VEHICLE = rf"{records.JURISDICTION_PATTERN}:[A-Z0-9]{{1,{records.PLATE_MAX_LENGTH}}}"
_REF_TEXT = (
    rf"(?:[0-9A-F]{{2}}){{{records.REF_MIN_HEX_DIGITS // 2},{records.REF_MAX_HEX_DIGITS // 2}}}"
)
_RECORD_LINE = re.compile(
    rf"([0-9A-F]{{{records.REF_MIN_HEX_DIGITS},{records.REF_MAX_HEX_DIGITS}}})\t([A-Z_]{{1,32}})\t([A-Z_]{{1,32}})\t([A-Z_]{{1,32}})"
    r"\t(0|[1-9][0-9]{0,11})\t(0|[1-9][0-9]{0,11})"
    rf"\t([A-Za-z0-9][A-Za-z0-9._:-]{{0,{records.HOLDER_REF_MAX_LENGTH - 1}}})"
    rf"\t((?:{_VEHICLE})(?:;{_VEHICLE}){{0,{records.MAX_VEHICLES - 1}}})?"
)
"""Enumerations are matched by shape and then looked up: cheaper than alternations."""
_REF_LINE = re.compile(_REF_TEXT)
"""Compiled once: the snapshot path validates a whole line with one match (no JSON, no dicts)."""


def _invalid(number: int, what: str) -> BundleRefusedError:
    return BundleRefusedError(RefusalReason.INVALID_RECORD, f"line {number}: {what}")


def decode_record(text: str, number: int, start: int = 0) -> StorageRow:
    """One record line to a storage row; raises INVALID_RECORD naming the line, not the data.

    ``start`` skips a prefix (a delta's ``U<TAB>``) without copying the line.
    """
    match = _RECORD_LINE.fullmatch(text, start)
    if match is None:
        raise _invalid(number, "not a valid record (8 tab-separated fields, see docs/bundles.md)")
    ref, doc, program, status, valid_from, valid_until, holder, vehicles = match.groups()
    if len(ref) & 1:  # checked here, not in the pattern: a repeated group matches slower
        raise _invalid(number, "the ref has an odd number of hex digits")
    start, end = int(valid_from), int(valid_until)
    if start >= end:
        raise _invalid(number, "valid_until is not later than valid_from")
    if vehicles is not None and ";" in vehicles:
        entries = vehicles.split(";")
        if len(set(entries)) != len(entries):
            raise _invalid(number, "a vehicle is listed twice")
    try:
        return (
            bytes.fromhex(ref),
            _DOC_CODE[doc],
            _PROGRAM_CODE[program],
            _STATUS_CODE[status],
            start,
            end,
            holder,
            vehicles,
        )
    except KeyError as err:
        raise _invalid(number, f"unknown code {err.args[0][:32]!r}") from None


def snapshot_rows(lines: Iterable[str]) -> Iterator[StorageRow]:
    """Decode snapshot lines, checking refs strictly ascend (sorted and unique)."""
    for chunk in snapshot_chunks(lines):
        yield from chunk


def snapshot_chunks(lines: Iterable[str], chunk_rows: int = 1024) -> Iterator[list[StorageRow]]:
    """Decoded snapshot rows in lists of ``chunk_rows``, checked to ascend strictly by ref.

    Lists rather than single rows: one ``executemany`` per list keeps the per-row loop in C.
    Decoding on a second thread was measured slower than decoding between the lists: the GIL
    hand-offs cost more than the overlap with SQLite's writes gains.
    """
    previous = b""
    chunk: list[StorageRow] = []
    decode = decode_record
    for number, text in enumerate(lines, start=1):
        row = decode(text, number)
        if row[0] <= previous:
            raise _invalid(number, "refs must be strictly ascending (sorted, each once)")
        previous = row[0]
        chunk.append(row)
        if len(chunk) >= chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def delta_batches(
    lines: Iterable[str], batch_rows: int = DELTA_BATCH_ROWS
) -> Iterator[tuple[list[StorageRow], list[tuple[bytes]]]]:
    """Decode delta lines into batches of (rows to insert or replace, refs to delete).

    Each ref may appear once in a delta. Batches are what the installer hands to
    ``executemany``: the per-line work stays one regex match and one tuple. Decoding one change
    at a time into a dataclass took about twice as long.
    """
    seen: set[bytes] = set()
    upserts: list[StorageRow] = []
    deletes: list[tuple[bytes]] = []
    decode = decode_record
    ref_line = _REF_LINE.fullmatch
    for number, text in enumerate(lines, start=1):
        if text.startswith("U\t"):
            row = decode(text, number, 2)
            key = row[0]
            upserts.append(row)
        elif text.startswith("D\t") and ref_line(text, 2):
            key = bytes.fromhex(text[2:])
            deletes.append((key,))
        else:
            raise _invalid(number, "a delta line is U<TAB>record or D<TAB>REF")
        before = len(seen)
        seen.add(key)
        if len(seen) == before:
            raise _invalid(number, "a ref appears twice in one delta")
        if len(upserts) + len(deletes) >= batch_rows:
            yield upserts, deletes
            upserts, deletes = [], []
    if upserts or deletes:
        yield upserts, deletes


def revocation_refs(lines: Iterable[str]) -> Iterator[bytes]:
    """Decode revocation lines: one upper-case hex ref each."""
    for number, text in enumerate(lines, start=1):
        if _REF_LINE.fullmatch(text) is None:
            raise _invalid(number, "a revocation line is one upper-case hex ref")
        yield bytes.fromhex(text)


def encode_record(row: StorageRow) -> str:
    """A storage row as a payload record line (the inverse of :func:`decode_record`)."""
    key, doc, program, status, valid_from, valid_until, holder, vehicles = row
    return "\t".join(
        (
            key.hex().upper(),
            str(records.DOCUMENT_TYPE_BY_CODE[doc]),
            str(records.PROGRAM_BY_CODE[program]),
            str(records.STATUS_BY_CODE[status]),
            str(valid_from),
            str(valid_until),
            holder,
            vehicles or "",
        )
    )


# --- building (central side and tests) ----------------------------------------------------


def build_bundle(
    *,
    kind: Kind,
    version: int,
    lines: Iterable[str],
    scope: Scope,
    signers: Iterable[Ed25519PrivateKey],
    created_at: int,
    expires_at: int,
    base_version: int | None = None,
) -> bytes:
    """The bundle :func:`write_bundle` writes, as bytes (tests and small tools).

    The lines are taken as given (tests build wrong ones on purpose); ``lane-agent bundle build``
    validates and sorts its input before calling :func:`write_bundle`.
    """
    with tempfile.TemporaryDirectory(prefix="lane-agent-bundle-") as directory:
        out = Path(directory) / "bundle"
        write_bundle(
            out,
            kind=kind,
            version=version,
            lines=lines,
            scope=scope,
            signers=signers,
            created_at=created_at,
            expires_at=expires_at,
            base_version=base_version,
        )
        return out.read_bytes()


def sign_manifest(
    manifest: dict[str, Any], signers: Iterable[Ed25519PrivateKey]
) -> list[dict[str, str]]:
    """Signature entries for a manifest object, one per key."""
    message = MANIFEST_DOMAIN + canonical_json(manifest)
    return [
        {
            "key_id": key_id(signer.public_key()),
            "signature": base64.b64encode(signer.sign(message)).decode(),
        }
        for signer in signers
    ]


def assemble(manifest: dict[str, Any], signatures: list[dict[str, str]], payload: bytes) -> bytes:
    """Marker, manifest line and payload: the bundle's bytes."""
    header = canonical_json({"manifest": manifest, "signatures": signatures})
    return MAGIC + header + b"\n" + payload


def write_bundle(
    out: Path,
    *,
    kind: Kind,
    version: int,
    lines: Iterable[str],
    scope: Scope,
    signers: Iterable[Ed25519PrivateKey],
    created_at: int,
    expires_at: int,
    base_version: int | None = None,
) -> Manifest:
    """Compress the payload lines, write and sign the manifest, stream the bundle to ``out``.

    Streamed through files, so memory stays flat at 15 M records.

    The payload is compressed into ``out`` + ``.payload``, hashed, then copied behind the signed
    manifest; ``out`` is created 0600.
    """
    staging = out.with_name(out.name + ".payload")
    count = 0
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as zipped,
        ):
            for line in lines:
                zipped.write(line.encode("ascii") + b"\n")
                count += 1
        if not count:
            staging.write_bytes(b"")
        hasher = hashlib.sha256()
        with staging.open("rb") as stream:
            while block := stream.read(1 << 20):
                hasher.update(block)
        manifest = Manifest(
            kind=kind,
            version=version,
            base_version=base_version,
            created_at=created_at,
            expires_at=expires_at,
            scope=scope,
            record_count=count,
            payload_size=staging.stat().st_size,
            payload_sha256=hasher.hexdigest(),
        )
        header = assemble(manifest.to_json(), sign_manifest(manifest.to_json(), signers), b"")
        out_fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(out_fd, "wb") as target, staging.open("rb") as payload:
            target.write(header)
            shutil.copyfileobj(payload, target, 1 << 20)
    finally:
        staging.unlink(missing_ok=True)
    return manifest
