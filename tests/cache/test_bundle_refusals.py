"""Every way a bundle is refused: its own reason, counted, and the cache exactly as it was.

The cache under test is at snapshot 5 → delta 6 with revocation serial 3 applied, on real files;
"unchanged" means the same file in force, the same snapshot files and the same SQL dump.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.cache.bundle import (
    MAGIC,
    BundleLimits,
    BundleRefusedError,
    Kind,
    RefusalReason,
    assemble,
    sign_manifest,
)
from agent.cache.install import CacheInstaller
from tests.cache.kit import Central, fingerprint, installer_for, record_line, ref

Case = Callable[[Central], bytes]


@pytest.fixture
def installer(tmp_path: Path, central: Central) -> CacheInstaller:
    installer = installer_for(tmp_path / "credentials.db", central)
    installer.install_bytes(
        central.bundle(Kind.SNAPSHOT, 5, [record_line(n) for n in range(1, 41)]), source="setup"
    )
    installer.install_bytes(
        central.bundle(Kind.DELTA, 6, [f"U\t{record_line(50)}", f"D\t{ref(2)}"], base_version=5),
        source="setup",
    )
    installer.install_bytes(central.bundle(Kind.REVOCATION, 3, [ref(3)]), source="setup")
    return installer


def _delta(central: Central, **kwargs: object) -> bytes:
    options: dict[str, object] = {"base_version": 6}
    options.update(kwargs)
    return central.bundle(Kind.DELTA, 7, [f"U\t{record_line(60)}"], **options)  # type: ignore[arg-type]


def _split(data: bytes) -> tuple[dict[str, object], bytes]:
    newline = data.index(b"\n", len(MAGIC))
    return json.loads(data[len(MAGIC) : newline]), data[newline + 1 :]


def _resigned(central: Central, data: bytes, change: Callable[[dict[str, object]], None]) -> bytes:
    """The bundle with its manifest changed and properly signed again (a bad but signed bundle)."""
    header, payload = _split(data)
    manifest = header["manifest"]
    assert isinstance(manifest, dict)
    change(manifest)
    return assemble(manifest, sign_manifest(manifest, central.keys[:2]), payload)


def _tampered_manifest(central: Central) -> bytes:
    data = _delta(central)
    return data.replace(b'"version":7', b'"version":9', 1)


def _flipped_payload(central: Central) -> bytes:
    data = bytearray(_delta(central))
    data[-5] ^= 0x01
    return bytes(data)


def _count_lies(central: Central) -> bytes:
    def more(manifest: dict[str, object]) -> None:
        manifest["record_count"] = 2

    return _resigned(central, _delta(central), more)


def _not_gzip(central: Central) -> bytes:
    import hashlib

    payload = b"U\tnot gzip at all\n"

    def plain(manifest: dict[str, object]) -> None:
        manifest["payload_size"] = len(payload)
        manifest["payload_sha256"] = hashlib.sha256(payload).hexdigest()

    header, _ = _split(_delta(central))
    manifest = header["manifest"]
    assert isinstance(manifest, dict)
    plain(manifest)
    return assemble(manifest, sign_manifest(manifest, central.keys[:2]), payload)


def _raw_payload(central: Central, text: bytes, count: int) -> bytes:
    """A properly signed delta whose payload is ``text``, gzipped as given."""
    import gzip
    import hashlib

    payload = gzip.compress(text, mtime=0)

    def describe(manifest: dict[str, object]) -> None:
        manifest["payload_size"] = len(payload)
        manifest["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        manifest["record_count"] = count

    header, _ = _split(_delta(central))
    manifest = header["manifest"]
    assert isinstance(manifest, dict)
    describe(manifest)
    return assemble(manifest, sign_manifest(manifest, central.keys[:2]), payload)


CASES: dict[str, tuple[Case, RefusalReason]] = {
    "a record that is not ASCII": (
        lambda c: _raw_payload(c, f"U\t{record_line(60)}é\n".encode(), 1),
        RefusalReason.INVALID_RECORD,
    ),
    "a line without its newline": (
        lambda c: _raw_payload(c, f"U\t{record_line(60)}".encode(), 1),
        RefusalReason.MALFORMED,
    ),
    "a line too long to be a record": (
        lambda c: _raw_payload(c, b"U\t" + b"A" * (3 << 20), 1),
        RefusalReason.MALFORMED,
    ),
    "no signatures": (lambda c: _delta(c, signers=[]), RefusalReason.MISSING_SIGNATURE),
    "one of two signatures": (
        lambda c: _delta(c, signers=[c.keys[0]]),
        RefusalReason.BELOW_THRESHOLD,
    ),
    "one key signing twice": (
        lambda c: _delta(c, signers=[c.keys[0], c.keys[0]]),
        RefusalReason.BELOW_THRESHOLD,
    ),
    "a key not in the trust file": (
        lambda c: _delta(c, signers=[c.keys[0], c.keys[1], c.outsider]),
        RefusalReason.UNKNOWN_KEY,
    ),
    "a revoked key": (
        lambda c: _delta(c, signers=[c.keys[0], c.keys[1], c.revoked]),
        RefusalReason.REVOKED_KEY,
    ),
    "a manifest changed after signing": (_tampered_manifest, RefusalReason.BAD_SIGNATURE),
    "a payload changed after signing": (_flipped_payload, RefusalReason.DIGEST_MISMATCH),
    "a payload cut short": (lambda c: _delta(c)[:-10], RefusalReason.TRUNCATED),
    "a file cut inside the manifest": (lambda c: _delta(c)[:60], RefusalReason.TRUNCATED),
    "a file cut inside the marker": (lambda c: MAGIC[:5], RefusalReason.TRUNCATED),
    "not a bundle": (lambda c: b"ref,status\nE280,ACTIVE\n", RefusalReason.MALFORMED),
    "a manifest line that is not JSON": (lambda c: MAGIC + b"{oops\n", RefusalReason.MALFORMED),
    "a record count that does not match": (_count_lies, RefusalReason.MALFORMED),
    "a payload that is not gzip": (_not_gzip, RefusalReason.MALFORMED),
    "a record with a name for a holder ref": (
        lambda c: c.bundle(
            Kind.DELTA, 7, [f"U\t{record_line(60, holder='John Smith')}"], base_version=6
        ),
        RefusalReason.INVALID_RECORD,
    ),
    "a ref changed twice in one delta": (
        lambda c: c.bundle(
            Kind.DELTA,
            7,
            [f"U\t{record_line(60)}", f"U\t{record_line(60, 'SUSPENDED')}"],
            base_version=6,
        ),
        RefusalReason.INVALID_RECORD,
    ),
    "a ref both replaced and deleted in one delta": (
        lambda c: c.bundle(Kind.DELTA, 7, [f"U\t{record_line(3)}", f"D\t{ref(3)}"], base_version=6),
        RefusalReason.INVALID_RECORD,
    ),
    "a delta deleting a ref that is not upper-case hex": (
        lambda c: c.bundle(Kind.DELTA, 7, [f"D\t{ref(3).lower()}"], base_version=6),
        RefusalReason.INVALID_RECORD,
    ),
    "a bad line after more than one batch of good ones": (
        lambda c: c.bundle(
            Kind.DELTA,
            7,
            [*(f"U\t{record_line(n)}" for n in range(100, 1400)), "U\tnot a record"],
            base_version=6,
        ),
        RefusalReason.INVALID_RECORD,
    ),
    "a delta line that is neither U nor D": (
        lambda c: c.bundle(Kind.DELTA, 7, [f"X\t{ref(60)}"], base_version=6),
        RefusalReason.INVALID_RECORD,
    ),
    "a snapshot not sorted by ref": (
        lambda c: c.bundle(Kind.SNAPSHOT, 7, [record_line(2), record_line(1)]),
        RefusalReason.INVALID_RECORD,
    ),
    "a snapshot not newer than installed": (
        lambda c: c.bundle(Kind.SNAPSHOT, 6, [record_line(1)]),
        RefusalReason.ROLLBACK,
    ),
    "a delta replayed": (
        lambda c: c.bundle(Kind.DELTA, 6, [f"U\t{record_line(50)}"], base_version=5),
        RefusalReason.ROLLBACK,
    ),
    "a revocation serial replayed": (
        lambda c: c.bundle(Kind.REVOCATION, 3, [ref(4)]),
        RefusalReason.ROLLBACK,
    ),
    "a freshness notice for an older version": (
        lambda c: c.bundle(Kind.FRESHNESS, 5),
        RefusalReason.ROLLBACK,
    ),
    "an expired manifest": (
        lambda c: _delta(c, created_at=int(time.time()) - 7200, expires_in=3600),
        RefusalReason.EXPIRED,
    ),
    "another port's bundle": (lambda c: _delta(c, port_id="OTHER-1"), RefusalReason.WRONG_SCOPE),
    "another lane's bundle": (lambda c: _delta(c, lanes=("L99",)), RefusalReason.WRONG_SCOPE),
    "a delta from a version not installed": (
        lambda c: c.bundle(Kind.DELTA, 8, [f"U\t{record_line(60)}"], base_version=7),
        RefusalReason.GAP,
    ),
    "a freshness notice for a version not installed": (
        lambda c: c.bundle(Kind.FRESHNESS, 9),
        RefusalReason.GAP,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_bundle_leaves_the_cache_unchanged_and_counts_its_reason(
    case: str, tmp_path: Path, central: Central, installer: CacheInstaller
) -> None:
    build, reason = CASES[case]
    data = build(central)
    before = fingerprint(tmp_path / "credentials.db")
    with pytest.raises(BundleRefusedError) as refused:
        installer.install_bytes(data, source="test")
    assert refused.value.reason is reason, refused.value
    assert fingerprint(tmp_path / "credentials.db") == before
    stats = installer.stats()
    assert stats.refused == {reason.value: 1}
    assert stats.last_refusal == reason.value


@pytest.mark.parametrize(
    ("limits", "kind"),
    [
        (
            BundleLimits(max_snapshot_bytes=1 << 20, max_update_bytes=100),
            "delta over the update limit",
        ),
        (
            BundleLimits(max_snapshot_bytes=300, max_update_bytes=300),
            "anything over the snapshot limit",
        ),
    ],
)
def test_an_oversized_bundle_is_refused_and_the_cache_unchanged(
    limits: BundleLimits, kind: str, tmp_path: Path, central: Central, installer: CacheInstaller
) -> None:
    small = installer_for(tmp_path / "credentials.db", central, limits=limits)
    before = fingerprint(tmp_path / "credentials.db")
    with pytest.raises(BundleRefusedError) as refused:
        small.install_bytes(_delta(central), source=kind)
    assert refused.value.reason is RefusalReason.OVERSIZED
    assert fingerprint(tmp_path / "credentials.db") == before
    assert small.stats().refused == {"oversized": 1}


def test_a_refused_file_import_leaves_the_cache_unchanged(
    tmp_path: Path, central: Central, installer: CacheInstaller
) -> None:
    """The file channel refuses like the MQTT one (here: a snapshot signed by the wrong keys)."""
    bundle = tmp_path / "snapshot.bundle"
    bundle.write_bytes(
        central.bundle(Kind.SNAPSHOT, 9, [record_line(1)], signers=[central.outsider])
    )
    before = fingerprint(tmp_path / "credentials.db")
    with pytest.raises(BundleRefusedError) as refused:
        installer.install_file(bundle)
    assert refused.value.reason is RefusalReason.UNKNOWN_KEY
    assert fingerprint(tmp_path / "credentials.db") == before


def test_refusal_details_never_quote_record_contents(
    central: Central, installer: CacheInstaller
) -> None:
    """Refusals are logged above DEBUG: they name lines, never refs or holder references."""
    data = central.bundle(
        Kind.DELTA, 7, [f"U\t{record_line(77, holder='Jane Doe')}"], base_version=6
    )
    with pytest.raises(BundleRefusedError) as refused:
        installer.install_bytes(data, source="test")
    assert "Jane" not in str(refused.value)
    assert ref(77) not in str(refused.value)
    assert "line 1" in str(refused.value)
