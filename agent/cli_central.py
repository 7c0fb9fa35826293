"""Central-side tooling: signing keys, trust files and cache bundles (docs/bundles.md).

``lane-agent keys …`` and ``lane-agent bundle …`` run at central operations (and in tests); the
lane only ever needs ``lane-agent cache import BUNDLE`` and ``lane-agent keys install-trust``.
Exit codes as in :mod:`agent.cli`: 65 bad input data, 66 missing input, 69 unavailable.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import click

from agent.cache import records
from agent.cache.bundle import (
    MAGIC,
    BundleLimits,
    BundleRefusedError,
    Kind,
    Scope,
    check_payload_digest,
    delta_batches,
    encode_record,
    payload_lines,
    read_header,
    revocation_refs,
    snapshot_rows,
    write_bundle,
)
from agent.cache.records import StorageRow
from agent.cache.trust import (
    TrustError,
    TrustStore,
    decode_public_key,
    key_id,
    load_private_key,
    public_key_text,
    sign_trust_update,
    trust_document,
    verify_trust_update,
    write_private_key,
)

EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_CONFIG = 78
DEFAULT_EXPIRY_S = {
    Kind.SNAPSHOT: 7 * 86400,
    Kind.DELTA: 7 * 86400,
    Kind.REVOCATION: 7 * 86400,
    Kind.FRESHNESS: 2 * 86400,
}
_NO_LIMITS = BundleLimits(max_snapshot_bytes=1 << 62, max_update_bytes=1 << 62)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


# --- keys ---------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Signing keys and trust files for cache bundles."""


@keys.command("generate")
@click.argument("name")
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(),
    show_default=True,
    help="Where NAME.key (private, 0600) and NAME.pub (public) are written; created 0700 when "
    "it does not exist.",
)
def keys_generate(name: str, out_dir: Path) -> None:
    """Generate an Ed25519 signing key NAME; prints its key id."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if private_path.exists() or public_path.exists():
        _fail(f"{private_path} or {public_path} exists; choose another name", EX_DATAERR)
    if not out_dir.is_dir():  # an existing folder keeps its owner and mode
        try:
            out_dir.mkdir(mode=0o700, parents=True)
        except OSError as err:
            _fail(f"{out_dir}: cannot create the folder: {err.strerror or err}", EX_CANTCREAT)
        os.chmod(out_dir, 0o700)  # whatever the umask: it will hold private keys
    key = Ed25519PrivateKey.generate()
    write_private_key(private_path, key)
    public = key.public_key()
    public_path.write_text(
        json.dumps({"key_id": key_id(public), "public_key": public_key_text(public)}) + "\n"
    )
    click.echo(f"{key_id(public)} {private_path} {public_path}")


@keys.command("trust")
@click.argument(
    "public_keys", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True)
)
@click.option("--threshold", type=click.IntRange(1, 64), required=True, help="k of k-of-n.")
@click.option("--serial", type=click.IntRange(1), required=True, help="Higher than the last one.")
@click.option("--revoke", multiple=True, help="Key id to list as revoked (repeatable).")
@click.option(
    "--sign-with",
    "signers",
    multiple=True,
    type=click.Path(path_type=Path, exists=True),
    help="Private key of the trust in force: makes a signed update for rotation (repeatable).",
)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def keys_trust(
    public_keys: tuple[Path, ...],
    threshold: int,
    serial: int,
    revoke: tuple[str, ...],
    signers: tuple[Path, ...],
    out: Path,
) -> None:
    """Write a trust file listing PUBLIC_KEYS (NAME.pub files).

    Without --sign-with it is a first trust file, to provision as root. With --sign-with (keys
    of the trust in force, at least its threshold) it is a signed update for
    'lane-agent keys install-trust'.
    """
    try:
        entries = []
        for path in public_keys:
            public = decode_public_key(json.loads(path.read_text())["public_key"], str(path))
            entries.append((public, key_id(public) in revoke))
        document = trust_document(serial, threshold, entries)
        signer_keys = [load_private_key(path) for path in signers]
    except (TrustError, OSError, KeyError, json.JSONDecodeError) as err:
        _fail(str(err), EX_DATAERR)
        return
    wrapped = sign_trust_update(document, signer_keys) if signer_keys else {"trust": document}
    out.write_text(json.dumps(wrapped, indent=2) + "\n")
    click.echo(f"{out}: trust serial {serial}, {threshold} of {len(entries)} key(s)")


@keys.command("install-trust")
@click.argument("update", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--trust-file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The trust file in force (the lane config's cache.trust_file).",
)
def keys_install_trust(update: Path, trust_file: Path) -> None:
    """Replace the trust file with UPDATE if enough keys of the one in force signed it (as root)."""
    try:
        current = TrustStore.load(trust_file, required_owner_uid=os.geteuid())
        new = verify_trust_update(current, update.read_bytes(), source=str(update))
    except (TrustError, OSError) as err:
        _fail(f"{err}; the trust file is unchanged", EX_DATAERR)
        return
    staging = trust_file.with_name(f".{trust_file.name}.new")
    staging.write_bytes(update.read_bytes())
    os.chmod(staging, 0o644)
    os.replace(staging, trust_file)
    click.echo(
        f"{trust_file}: trust serial {current.serial} -> {new.serial}, "
        f"threshold {new.threshold}; restart lane-agent to use it"
    )


# --- bundles ------------------------------------------------------------------------------


@click.group()
def bundle() -> None:
    """Build, verify and publish signed cache bundles."""


def _input_rows(path: Path) -> Iterator[StorageRow]:
    """Validated storage rows from an NDJSON or CSV export (the plain import's formats)."""
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".jsonl"):
        source = records.read_ndjson(path)
    elif suffix == ".csv":
        source = records.read_csv(path)
    else:
        _fail(f"{path}: use .ndjson, .jsonl or .csv (the extension selects the format)", EX_DATAERR)
        return
    problems = 0
    for position, fields, problem in source:
        found = [problem] if problem is not None else []
        if fields is not None:
            row, found = records.validate_record(fields)
            if row is not None:
                yield row
        for item in found:
            problems += 1
            click.echo(f"error: {item.describe(position)}", err=True)
    if problems:
        _fail(f"{path}: {problems} problem(s); no bundle written", EX_DATAERR)


def _lines(kind: Kind, input_path: Path | None, deletions: Path | None) -> list[str]:
    if kind is Kind.FRESHNESS:
        return []
    if input_path is None and not (kind is Kind.DELTA and deletions is not None):
        _fail(f"a {kind.value} needs --input", EX_NOINPUT)
    if kind is Kind.REVOCATION:
        assert input_path is not None
        refs = []
        for number, text in enumerate(input_path.read_text().split(), start=1):
            key = records.ref_key(text)
            if key is None:
                _fail(f"{input_path}: ref number {number}: {records.ALLOWED_REF}", EX_DATAERR)
                return []
            refs.append(key.hex().upper())
        return sorted(set(refs))
    rows = {} if input_path is None else {row[0]: row for row in _input_rows(input_path)}
    if kind is Kind.SNAPSHOT:
        return [encode_record(rows[key]) for key in sorted(rows)]
    lines = [f"U\t{encode_record(rows[key])}" for key in sorted(rows)]
    if deletions is not None:
        for text in deletions.read_text().split():
            key = records.ref_key(text)
            if key is None or key in rows:
                _fail(f"{deletions}: {text[:40]!r}: a valid ref not also upserted", EX_DATAERR)
                return []
            lines.append(f"D\t{key.hex().upper()}")
    return lines


@bundle.command("build")
@click.option("--kind", type=click.Choice([k.value for k in Kind]), required=True)
@click.option("--version", "version", type=click.IntRange(1), required=True,
              help="Data version (a revocation's own serial for --kind revocation).")  # fmt: skip
@click.option("--base-version", type=click.IntRange(0), default=None, help="Delta: from version.")
@click.option("--port", "port_id", required=True, help="Port of entry the bundle is for.")
@click.option("--lane", "lanes", multiple=True, help="Restrict to these lanes (repeatable).")
@click.option("--input", "input_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Records (.ndjson/.jsonl/.csv); for a revocation, refs one per line.")  # fmt: skip
@click.option("--delete", "deletions", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Delta: refs to delete, one per line.")  # fmt: skip
@click.option("--key", "key_paths", multiple=True, required=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Private signing key (repeatable: one signature each).")  # fmt: skip
@click.option("--expires-in", type=click.IntRange(60), default=None,
              help="Seconds until lanes refuse it (default 7 days, freshness 2 days).")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def bundle_build(
    kind: str,
    version: int,
    base_version: int | None,
    port_id: str,
    lanes: tuple[str, ...],
    input_path: Path | None,
    deletions: Path | None,
    key_paths: tuple[Path, ...],
    expires_in: int | None,
    out: Path,
) -> None:
    """Build a signed bundle from a CSV/NDJSON export (validated, sorted) and write it to --out."""
    chosen = Kind(kind)
    if (chosen is Kind.DELTA) != (base_version is not None):
        _fail("--base-version is required for a delta and only for a delta", EX_DATAERR)
    try:
        signers = [load_private_key(path) for path in key_paths]
    except TrustError as err:
        _fail(str(err), EX_DATAERR)
        return
    lines = _lines(chosen, input_path, deletions)
    now = int(time.time())
    write_bundle(
        out,
        kind=chosen,
        version=version,
        base_version=base_version,
        lines=lines,
        scope=Scope(port_id, tuple(lanes) or None),
        signers=signers,
        created_at=now,
        expires_at=now + (expires_in or DEFAULT_EXPIRY_S[chosen]),
    )
    click.echo(f"{out}: {chosen.value} {version}, {len(lines)} records, {out.stat().st_size} bytes")


@bundle.command("verify")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--trust-file", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              required=True)  # fmt: skip
def bundle_verify(file: Path, trust_file: Path) -> None:
    """Check FILE's signatures, digest and every record; print its manifest as JSON."""
    try:
        trust = TrustStore.load(trust_file, required_owner_uid=None)
    except TrustError as err:
        _fail(str(err), EX_DATAERR)
        return
    try:
        with file.open("rb") as stream:
            header = read_header(stream, os.fstat(stream.fileno()).st_size, trust, _NO_LIMITS)
            manifest = header.manifest
            stream.seek(header.payload_offset)
            check_payload_digest(stream, manifest)
            stream.seek(header.payload_offset)
            lines = payload_lines(stream, manifest)
            consume: Iterable[object]
            if manifest.kind is Kind.SNAPSHOT:
                consume = snapshot_rows(lines)
            elif manifest.kind is Kind.DELTA:
                consume = delta_batches(lines)
            else:
                consume = revocation_refs(lines)
            for _ in consume:
                pass
    except BundleRefusedError as err:
        _fail(f"{file}: {err}", EX_DATAERR)
        return
    summary = manifest.to_json()
    summary["signed_by"] = sorted(header.signed_by)
    click.echo(json.dumps(summary, indent=2))


@bundle.command("publish")
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@click.option("--prefix", default="lane-agent/v1", show_default=True)
@click.option("--client-id", default=None, help="MQTT client id (default: a random one).")
@click.option("--retain", is_flag=True, help="Retain it (for freshness notices).")
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), default=10.0, show_default=True)
@click.option("--tls-ca", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="CA that signed the broker's certificate: turns TLS on (use --port 8883).")  # fmt: skip
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Client certificate for mutual TLS; with the shipped broker config its CN is "
              "central-cache, which the ACL lets publish bundles.")  # fmt: skip
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="Key of --tls-cert.")  # fmt: skip
def bundle_publish(
    file: Path,
    host: str,
    port: int,
    prefix: str,
    client_id: str | None,
    retain: bool,
    timeout_s: float,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> None:
    """Publish FILE at QoS 1 on its port's cache topic (from its manifest); exit 0 on PUBACK.

    The broker must accept it: a PUBACK with a failure reason code (not authorised by the ACL)
    exits 69 naming the reason.
    """
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.reasoncodes import ReasonCode

    from agent.wire.topics import cache_update_topic

    data = file.read_bytes()
    if not data.startswith(MAGIC):
        _fail(f"{file}: not a bundle (no LANE-AGENT-BUNDLE/1 marker)", EX_DATAERR)
    try:
        document = json.loads(data[len(MAGIC) : data.index(b"\n", len(MAGIC))])
        manifest = document["manifest"]
        topic = cache_update_topic(prefix, manifest["scope"]["port_id"], manifest["kind"])
    except (ValueError, KeyError, TypeError) as err:
        _fail(f"{file}: unreadable manifest ({err})", EX_DATAERR)
        return
    if (tls_cert is None) != (tls_key is None) or (tls_ca is None and tls_cert is not None):
        _fail("mutual TLS needs --tls-ca, --tls-cert and --tls-key together", EX_DATAERR)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"lane-agent-bundle-{os.getpid()}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if tls_ca is not None:
        client.tls_set(
            ca_certs=str(tls_ca),
            certfile=None if tls_cert is None else str(tls_cert),
            keyfile=None if tls_key is None else str(tls_key),
        )
    refusal: list[str] = []

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:  # MQTT v5: a refused publish still completes wait_for_publish()
            refusal.append(str(reason))

    client.on_publish = on_publish
    try:
        client.connect(host, port, keepalive=30)
    except (OSError, ssl.SSLError) as err:
        _fail(f"cannot connect to {host}:{port}: {err}", EX_UNAVAILABLE)
    client.loop_start()
    with contextlib.ExitStack() as stack:
        stack.callback(client.loop_stop)
        stack.callback(client.disconnect)
        info = client.publish(topic, data, qos=1, retain=retain)
        try:
            info.wait_for_publish(timeout_s)
        except RuntimeError as err:  # paho: the connection ended (e.g. a TLS-only broker)
            _fail(f"the connection to {host}:{port} ended before the PUBACK: {err}", EX_UNAVAILABLE)
        if not info.is_published():
            _fail(f"no PUBACK from {host}:{port} within {timeout_s} s", EX_UNAVAILABLE)
        if refusal:
            _fail(
                f"the broker refused {topic}: {refusal[0]} (check its ACL for this client)",
                EX_UNAVAILABLE,
            )
    click.echo(f"{file}: published on {topic} ({len(data)} bytes)")


def is_bundle(path: Path) -> bool:
    """Whether ``path`` starts with the bundle marker (else it is a plain NDJSON/CSV export)."""
    with path.open("rb") as stream:
        return stream.read(len(MAGIC)) == MAGIC


def import_bundle(file: Path, config_path: Path, db_path: Path | None) -> int:
    """``lane-agent cache import BUNDLE``: verify against the configured trust file and install."""
    from agent.cache.install import CacheInstaller
    from agent.config import ConfigError, load_config

    try:
        config = load_config(config_path)
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        return EX_CONFIG
    trust_file = config.cache.trust_file
    if trust_file is None:
        click.echo(
            f"error: {config_path}: cache.trust_file is not set; a bundle cannot be verified",
            err=True,
        )
        return EX_CONFIG
    try:
        trust = TrustStore.load(trust_file)
        installer = CacheInstaller(
            db_path or config.cache.path,
            trust,
            port_id=config.lane.port_id,
            lane_id=config.lane.lane_id,
            limits=BundleLimits(config.cache.max_snapshot_bytes, config.cache.max_update_bytes),
            worker_nice=config.cache.install_nice,
        )
        report = installer.install_file(file)
    except TrustError as err:
        click.echo(f"error: {err}", err=True)
        return EX_CONFIG
    except BundleRefusedError as err:
        click.echo(f"error: {file}: {err}; the cache is unchanged", err=True)
        return EX_DATAERR
    click.echo(
        f"{file}: installed {report.kind.value} {report.version}: {report.records} records, "
        f"{report.changed} changed, in {report.duration_s:.1f} s"
    )
    return 0
