"""Building blocks for bundle tests: keys, a trust file, records and signed bundles."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cache.bundle import BundleLimits, Kind, Scope, build_bundle
from agent.cache.install import CacheInstaller
from agent.cache.trust import TrustStore, trust_document

PORT = "SYS-0250"
LANE = "L03"
LIMITS = BundleLimits(max_snapshot_bytes=64 << 20, max_update_bytes=4 << 20)


def ref(number: int) -> str:
    """A valid 24-hex-digit EPC, ascending with ``number``."""
    return f"E2801160{number:016X}"


def record_line(number: int, status: str = "ACTIVE", holder: str | None = None) -> str:
    """A snapshot record line for ``ref(number)``."""
    return "\t".join(
        (
            ref(number),
            "TRUSTED_TRAVELLER_CARD",
            "SENTRI",
            status,
            "1704067200",
            "1861920000",
            holder or f"H-{number}",
            f"CA:ABC{number % 10000}",
        )
    )


@dataclass
class Central:
    """Central's side of a test: three trusted keys (two must sign), one revoked, one outsider."""

    directory: Path
    keys: list[Ed25519PrivateKey] = field(
        default_factory=lambda: [Ed25519PrivateKey.generate() for _ in range(3)]
    )
    revoked: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    outsider: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    @property
    def trust_path(self) -> Path:
        return self.directory / "trust.json"

    def write_trust(self) -> Path:
        """A 2-of-3 trust file (plus the revoked key), mode 0644, owned by the test's user."""
        entries = [(key.public_key(), False) for key in self.keys]
        entries.append((self.revoked.public_key(), True))
        self.trust_path.write_text(json.dumps({"trust": trust_document(1, 2, entries)}))
        os.chmod(self.trust_path, 0o644)
        return self.trust_path

    def trust(self) -> TrustStore:
        return TrustStore.load(self.trust_path, required_owner_uid=os.getuid())

    def bundle(
        self,
        kind: Kind,
        version: int,
        lines: Iterable[str] = (),
        *,
        base_version: int | None = None,
        signers: Sequence[Ed25519PrivateKey] | None = None,
        port_id: str = PORT,
        lanes: tuple[str, ...] | None = None,
        created_at: int | None = None,
        expires_in: int = 3600,
    ) -> bytes:
        """A bundle signed by the first two keys unless ``signers`` says otherwise."""
        created = int(time.time()) - 1 if created_at is None else created_at
        return build_bundle(
            kind=kind,
            version=version,
            base_version=base_version,
            lines=lines,
            scope=Scope(port_id, lanes),
            signers=self.keys[:2] if signers is None else signers,
            created_at=created,
            expires_at=created + expires_in,
        )


def installer_for(cache_path: Path, central: Central, **kwargs: object) -> CacheInstaller:
    """An installer for lane PORT/LANE trusting ``central``."""
    options: dict[object, object] = {"port_id": PORT, "lane_id": LANE, "limits": LIMITS}
    options.update(kwargs)
    return CacheInstaller(cache_path, central.trust(), **options)  # type: ignore[arg-type]


def fingerprint(cache_path: Path) -> tuple[str | None, list[str], str]:
    """What a reader can observe of a cache: the file in force, the snapshot files, every row."""
    target = os.readlink(cache_path) if cache_path.is_symlink() else None
    files = sorted(
        p.name
        for p in cache_path.parent.iterdir()
        if p.name.startswith(cache_path.name + ".v") and not p.name.endswith(("-wal", "-shm"))
    )
    connection = sqlite3.connect(f"{cache_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        dump = "\n".join(connection.iterdump())
    finally:
        connection.close()
    return target, files, dump


def installed_snapshot_1(directory: Path, central: Central, records: int = 100) -> Path:
    """A lane cache in ``directory`` at snapshot 1 holding records 1..``records``; its path."""
    path = directory / "credentials.db"
    installer_for(path, central).install_bytes(
        central.bundle(Kind.SNAPSHOT, 1, map(record_line, range(1, records + 1))), source="setup"
    )
    return path
