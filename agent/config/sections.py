"""The sections of the agent's other parts: credential cache, durable state, MQTT uplink,
logging, engine loop, camera and plate reading, live crossing events, the lane page."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from agent.config.base import _HOST_PATTERN, _TOPIC_PREFIX_PATTERN, _Section
from agent.lane.plates import PlateCheck


def _named_file(value: object, example: str) -> object:
    """An empty path would become ".", the config's own folder: refuse it by name."""
    if isinstance(value, str) and not value.strip():
        raise ValueError(
            f"must name a file, not be empty (e.g. /var/lib/lane-agent/{example}, or a name "
            "relative to the config file's folder)"
        )
    return value


class CacheConfig(_Section):
    """The local credential cache."""

    path: Path = Field(
        default=Path("/var/lib/lane-agent/credentials.db"),
        description="SQLite file of the credential cache (created mode 0600).",
    )
    trust_file: Path | None = Field(
        default=None,
        description="Trust file naming the keys that sign cache bundles and how many must sign "
        "(docs/bundles.md). Root-owned, not group/world-writable. Unset: signed updates are off "
        "and only a technician's plain import fills the cache.",
    )
    max_cache_age_s: float = Field(
        default=86400.0,
        ge=0.0,
        le=30 * 86400.0,
        description="Older cache data than this (since the last verified bundle or freshness "
        "notice) no longer supports EXPEDITE (reason CACHE_STALE). 0 disables the check: lab only.",
    )
    max_snapshot_bytes: int = Field(
        default=2 << 30,
        ge=1 << 20,
        le=16 << 30,
        description="Largest snapshot bundle accepted, in bytes.",
    )
    max_update_bytes: int = Field(
        default=64 << 20,
        ge=64 << 10,
        le=256 << 20,
        description="Largest delta, revocation or freshness bundle accepted, in bytes.",
    )
    resync_interval_s: float = Field(
        default=300.0,
        ge=1.0,
        le=86400.0,
        description="Shortest time between two resync requests to central after a gap.",
    )
    install_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="Scheduling niceness of the child process that verifies and installs bundles. "
        "Above 0 a lookup the lane waits on wins a shared core over an install; on a lane whose "
        "cores stay busy (camera), a high value can stretch a 100k-change delta from seconds to "
        "tens of seconds (BENCHMARKS.md).",
    )
    lock_in_memory: bool = Field(
        default=True,
        description="Keep the cache file in force locked in memory (mmap + mlock), so a lookup "
        "never waits for the disk, above all while a bundle installs. Costs the file's size in "
        "RAM (~65 B/record, ~1 GB at 15 M; twice that during a snapshot swap) and needs "
        "RLIMIT_MEMLOCK above it (systemd LimitMEMLOCK=); when locking fails the lane logs a "
        "warning and goes on without it.",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path_named(cls, value: object) -> object:
        return _named_file(value, "credentials.db")

    @model_validator(mode="after")
    def _update_not_larger_than_snapshot(self) -> Self:
        if self.max_update_bytes > self.max_snapshot_bytes:
            raise ValueError(
                f"max_update_bytes ({self.max_update_bytes}) must not exceed max_snapshot_bytes "
                f"({self.max_snapshot_bytes})"
            )
        return self

    def relative_to(self, base: Path) -> CacheConfig:
        """Resolve the file paths against ``base`` (the config file's directory)."""
        trust = None if self.trust_file is None else base / self.trust_file
        return self.model_copy(update={"path": base / self.path, "trust_file": trust})


class OutboxConfig(_Section):
    """The durable outbox every event is committed to before it is sent."""

    path: Path = Field(
        default=Path("/var/lib/lane-agent/outbox.db"), description="SQLite file of the outbox."
    )
    synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL",
        description="SQLite synchronous mode. FULL survives power loss; NORMAL may roll back "
        "committed events on power loss and is only for lab use.",
    )
    retain_sent_s: float = Field(
        default=86400.0,
        ge=0.0,
        le=30 * 86400.0,
        description="Sent events no ingest has confirmed are kept this long (for re-send after "
        "a broker loss) before pruning; confirmed events leave at once.",
    )
    max_bytes: int = Field(
        default=1 << 30,
        ge=1 << 20,
        le=1 << 40,
        description="Size cap of the outbox file. Health and image records are evicted to keep "
        "under it; crossings never are: when no crossing fits, the lane falls back to manual.",
    )

    @field_validator("path", mode="before")
    @classmethod
    def _path_named(cls, value: object) -> object:
        return _named_file(value, "outbox.db")


class MqttConfig(_Section):
    """Connection to central operations' broker (standard MQTT v5 only)."""

    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=253,
        pattern=_HOST_PATTERN,
        description="Broker host name or IP address (no scheme, no port: that is mqtt.port).",
    )
    port: int = Field(default=1883, ge=1, le=65535, description="Broker TCP port.")
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="MQTT client id; default 'lane-<port_id>-<lane_id>'.",
    )
    topic_prefix: str = Field(
        default="lane-agent/v1",
        min_length=1,
        max_length=64,
        pattern=_TOPIC_PREFIX_PATTERN,
        description="First topic levels of every topic this lane publishes.",
    )
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=600,
        description="A silent (half-open) broker link is detected within 1.5 x this many seconds.",
    )
    max_inflight: int = Field(
        default=20,
        ge=1,
        le=100,
        description="Publishes awaiting PUBACK at once (paho slows down past ~100).",
    )
    session_expiry_s: int = Field(
        default=7 * 86400,
        ge=0,
        le=30 * 86400,
        description="Broker keeps the lane's session this long after a disconnect.",
    )
    reconnect_min_s: float = Field(
        default=1.0, ge=0.1, le=60.0, description="First reconnect delay (doubles, with jitter)."
    )
    reconnect_max_s: float = Field(
        default=60.0, ge=1.0, le=600.0, description="Longest reconnect delay."
    )
    tls: bool = Field(
        default=False,
        description="Mutual TLS to the broker; then ca_file, cert_file and key_file are required.",
    )
    ca_file: Path | None = Field(
        default=None,
        description="CA certificate(s) that signed the broker's certificate (PEM). A relative "
        "name is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) if set.",
    )
    cert_file: Path | None = Field(
        default=None, description="This lane's client certificate (PEM); its CN is its identity."
    )
    key_file: Path | None = Field(
        default=None, description="The private key of cert_file (PEM, unencrypted)."
    )
    updates_cert_file: Path | None = Field(
        default=None,
        description="Certificate of the cache-updates subscriber, the lane's second connection "
        "(CN '<port_id>/<lane_id>/cache'): a broker that ties client ids to certificates lets "
        "one certificate hold one connection. Needed with tls = true and cache.trust_file.",
    )
    updates_key_file: Path | None = Field(
        default=None, description="The private key of updates_cert_file (PEM, unencrypted)."
    )
    status_interval_s: float = Field(
        default=30.0,
        ge=1.0,
        le=3600.0,
        description="The retained status is republished this often, besides on every change.",
    )

    @model_validator(mode="after")
    def _tls_files(self) -> Self:
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        if self.tls:
            missing = [name for name, value in files.items() if value is None]
            if missing:
                raise ValueError(
                    f"tls = true needs {', '.join(missing)}: the broker is verified against "
                    "ca_file and the lane proves its identity with cert_file and key_file"
                )
        elif any(value is not None for value in files.values()):
            raise ValueError("ca_file, cert_file and key_file are only used with tls = true")
        updates = (self.updates_cert_file, self.updates_key_file)
        if (updates[0] is None) != (updates[1] is None):
            raise ValueError("updates_cert_file and updates_key_file go together")
        if updates[0] is not None and not self.tls:
            raise ValueError("updates_cert_file and updates_key_file are only used with tls = true")
        return self

    def with_credentials_from(self, base: Path, credentials_directory: str | None) -> MqttConfig:
        """Resolve relative TLS file names: in ``credentials_directory`` if given, else ``base``."""
        root = Path(credentials_directory) if credentials_directory else base
        update = {
            name: root / value
            for name, value in (
                ("ca_file", self.ca_file),
                ("cert_file", self.cert_file),
                ("key_file", self.key_file),
                ("updates_cert_file", self.updates_cert_file),
                ("updates_key_file", self.updates_key_file),
            )
            if value is not None
        }
        return self.model_copy(update=update) if update else self

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed reconnect_max_s "
                f"({self.reconnect_max_s})"
            )
        return self


class LoggingConfig(_Section):
    """Where and how the agent logs (journald takes JSON lines)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO",
        description="Lowest level logged. Card numbers and plates appear only at DEBUG.",
    )
    format: Literal["auto", "json", "text", "journal"] = Field(
        default="auto",
        description="'auto': text on a terminal, JSON lines otherwise; when stderr is the "
        "journal (JOURNAL_STREAM), each line also starts with its priority (<4> warning), so "
        "journalctl -p filters. 'journal': that prefix and 'logger: message' even where the "
        "journal cannot be detected.",
    )


class ServiceConfig(_Section):
    """Engine loop settings."""

    tick_interval_s: float = Field(
        default=0.25,
        ge=0.01,
        le=5.0,
        description="Longest the engine waits before checking timeouts on a quiet lane.",
    )
    shutdown_flush_s: float = Field(
        default=5.0,
        ge=0.0,
        le=60.0,
        description="On SIGTERM, how long to keep publishing the outbox before exiting.",
    )


class CameraConfig(_Section):
    """The lane camera that reads licence plates (docs/vision.md)."""

    enabled: bool = Field(
        default=False,
        description="Read plates. Off: the lane decides on cards alone, as without a camera.",
    )
    source: str = Field(
        default="/dev/video0",
        min_length=1,
        max_length=1024,
        description="rtsp:// or http(s):// stream URL, V4L2 device (/dev/videoN or an index), "
        "video file, or folder of images.",
    )
    roi: tuple[int, int, int, int] | None = Field(
        default=None,
        description="Region of interest [x, y, width, height] in pixels where plates appear; "
        "unset: the whole frame.",
    )
    folder_fps: float = Field(
        default=5.0, ge=0.5, le=60.0, description="Frame rate at which a folder source plays."
    )
    stall_timeout_s: float = Field(
        default=5.0,
        ge=0.5,
        le=120.0,
        description="No frame for this long: camera unavailable, the lane runs RFID-only.",
    )
    reconnect_min_s: float = Field(
        default=1.0, ge=0.1, le=60.0, description="First reopen delay (doubles, with jitter)."
    )
    reconnect_max_s: float = Field(
        default=30.0, ge=1.0, le=600.0, description="Longest reopen delay."
    )

    @model_validator(mode="after")
    def _camera_checks(self) -> Self:
        if self.roi is not None:
            x, y, width, height = self.roi
            if (
                min(x, y) < 0
                or max(x, y) > 16384
                or not (16 <= width <= 16384)
                or not (16 <= height <= 16384)
            ):
                raise ValueError(
                    f"roi {list(self.roi)} must be [x, y, width, height] with x, y 0-16384 and "
                    "width, height 16-16384 pixels"
                )
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed reconnect_max_s "
                f"({self.reconnect_max_s})"
            )
        return self


class VisionConfig(_Section):
    """The plate reader and how plate readings are combined (docs/vision.md)."""

    models_dir: Path | None = Field(
        default=None,
        description="Folder with manifest.toml and the ONNX models; unset: the models shipped "
        "with the agent.",
    )
    threads: int = Field(
        default=1, ge=1, le=2, description="Inference threads (the RFID path keeps the rest)."
    )
    max_fps: float = Field(default=4.0, ge=0.2, le=30.0, description="Most frames read per second.")
    min_read_confidence: float = Field(
        default=0.3, ge=0.0, le=1.0, description="Frame readings below this are discarded."
    )
    min_plate_confidence: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="A crossing's voted plate below this counts as not read.",
    )
    candidates: int = Field(
        default=5, ge=1, le=20, description="Plate candidates kept per crossing (top-N)."
    )
    plate_preroll_s: float = Field(
        default=2.0,
        ge=0.0,
        le=10.0,
        description="Readings this long before a crossing opens join it (the camera sees the "
        "plate before the vehicle reaches the loop).",
    )
    reader_retry_s: float = Field(
        default=60.0,
        ge=5.0,
        le=3600.0,
        description="After a model failure, how long to run RFID-only before reloading.",
    )
    jpeg_quality: int = Field(
        default=85, ge=30, le=95, description="JPEG quality of the plate crop sent with events."
    )

    def plate_check(self) -> PlateCheck:
        """How the lane policy weighs plates (in a lane with a camera)."""
        return PlateCheck(top_n=self.candidates, min_confidence=self.min_plate_confidence)


class LiveConfig(_Section):
    """Live crossing events: the vehicle at the booth as it forms (docs/live.md)."""

    enabled: bool = Field(
        default=True,
        description="Publish the crossing as it forms on the live topic and retain the vehicle "
        "at the booth on the current topic. The final crossing is published either way.",
    )
    message_expiry_s: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="The broker discards a live event not delivered within this many seconds "
        "(MQTT v5 message expiry), so a screen that reconnects is not shown stale vehicles.",
    )
    current_expiry_s: int = Field(
        default=900,
        ge=10,
        le=86400,
        description="The retained vehicle at the booth expires at the broker after this many "
        "seconds without a change: it clears itself if the agent dies with a vehicle shown. "
        "Keep it above the lane's longest stay (lane.correlation.max_open_s).",
    )
    max_in_flight: int = Field(
        default=4,
        ge=1,
        le=20,
        description="Live events awaiting the broker's PUBACK at once: at most this many slots "
        "of the send window, so live events never hold back the durable crossings.",
    )


def _loopback(host: str) -> bool:
    """``host`` is a loopback address or ``localhost`` (a host name may resolve anywhere)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class PageConfig(_Section):
    """The live lane page and Prometheus metrics, served by the agent (docs/page.md)."""

    enabled: bool = Field(
        default=True,
        description="Serve the lane page (the vehicle at the booth, last crossings, health, "
        "reads, camera snapshot), its event stream, /api/status and /metrics.",
    )
    host: str = Field(
        default="127.0.0.1",
        min_length=1,
        max_length=253,
        pattern=_HOST_PATTERN,
        description="Address the page listens on. Anything but a loopback address exposes it "
        "beyond this computer and needs cert_file, key_file and credential_file.",
    )
    port: int = Field(
        default=8470, ge=0, le=65535, description="TCP port of the page (0: any free port, tests)."
    )
    cert_file: Path | None = Field(
        default=None,
        description="PEM certificate (chain): the page is served over HTTPS (TLS 1.2+). A "
        "relative name is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) if set.",
    )
    key_file: Path | None = Field(
        default=None, description="The unencrypted PEM private key of cert_file."
    )
    credential_file: Path | None = Field(
        default=None,
        description="File whose first line is the page's secret (16+ characters): every request "
        "must carry it, as a bearer token or as the password of HTTP Basic authentication.",
    )
    recent_crossings: int = Field(
        default=20, ge=1, le=200, description="Stored crossings the page lists, newest first."
    )
    max_clients: int = Field(
        default=8, ge=1, le=64, description="Pages connected at once; more are turned away (503)."
    )
    client_queue: int = Field(
        default=256,
        ge=16,
        le=4096,
        description="Messages queued for one page; a page slower than the lane loses the oldest "
        "(counted), the lane never waits for it.",
    )
    status_interval_s: float = Field(
        default=2.0,
        ge=0.2,
        le=60.0,
        description="How often the health panel and the camera snapshot are pushed to the page "
        "(at once when a fault is raised or cleared).",
    )

    @model_validator(mode="after")
    def _exposed_only_with_tls_and_a_credential(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.enabled and not _loopback(self.host):
            missing = [
                name
                for name, value in (
                    ("cert_file", self.cert_file),
                    ("key_file", self.key_file),
                    ("credential_file", self.credential_file),
                )
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"host {self.host!r} serves the lane page beyond this computer: it needs "
                    f"TLS and a credential ({', '.join(missing)} missing), or host = "
                    '"127.0.0.1"'
                )
        return self

    def with_credentials_from(self, base: Path, credentials_directory: str | None) -> PageConfig:
        """Resolve relative file names: in ``credentials_directory`` if given, else ``base``."""
        root = Path(credentials_directory) if credentials_directory else base
        update = {
            name: root / value
            for name, value in (
                ("cert_file", self.cert_file),
                ("key_file", self.key_file),
                ("credential_file", self.credential_file),
            )
            if value is not None
        }
        return self.model_copy(update=update) if update else self
