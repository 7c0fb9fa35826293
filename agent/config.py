"""Lane configuration: pydantic models and ``load_config(path)``.

Every field has a description and bounds; unknown keys are errors (a misspelt key must never be
silently ignored on a border lane). ``load_config`` turns every problem into a ``ConfigProblem``
naming the file, the line where it can find one, the key path, the value and what is allowed,
so ``lane-agent config check`` and the service print the same thing and exit 78 (EX_CONFIG).

Relative paths in the file are resolved against the directory of the config file, so a lane
directory can be moved as a whole.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent.lane.association import AntennaZone, AssociationSettings
from agent.lane.clock import ClockSettings
from agent.lane.correlator import CorrelationSettings
from agent.lane.credentials import Program
from agent.lane.plates import PlateCheck
from agent.lane.policy import LanePolicy, LaneType

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
_TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
_PATTERN_MEANING = {
    _ID_PATTERN: "must be 1-32 characters of letters, digits, '_', '.', '-', starting with a "
    "letter or digit",
    _TOPIC_PREFIX_PATTERN: "must be topic levels of letters, digits, '_', '.', '-' separated by "
    "single '/' (no wildcards, no leading or trailing '/')",
    r"^[A-Za-z0-9_.-]+$": "must be letters, digits, '_', '.', '-' only",
}
_STANDARD_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)

Identifier = Annotated[
    str,
    Field(
        pattern=_ID_PATTERN,
        description="1-32 characters: letters, digits, '_', '.', '-'; safe inside MQTT topics",
    ),
]


class _Section(BaseModel):
    # strict: a TOML string "1883" or a boolean is not silently turned into a port number.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CorrelationConfig(_Section):
    """How loop edges and tag reads become one crossing per vehicle (docs/fusion.md)."""

    presence_loop_id: int = Field(
        default=1, ge=0, le=255, description="Controller loop id of the booth presence loop."
    )
    idle_timeout_s: float = Field(
        default=8.0,
        ge=0.5,
        le=120.0,
        description="A crossing of a vehicle the loop did not see (cards read strongly at the "
        "booth, no loop) closes after this many seconds without reads of its cards.",
    )
    max_open_s: float = Field(
        default=300.0,
        ge=10.0,
        le=3600.0,
        description="Safety net: a crossing is closed after this long even if the loop never "
        "clears (stuck loop, lost edge); a loop still occupied then is not trusted until it "
        "clears.",
    )
    straggler_window_s: float = Field(
        default=8.0,
        ge=0.0,
        le=60.0,
        description="Reads of a card of the vehicle that just left, within this many seconds, "
        "are that vehicle driving off, not the next vehicle's (unless read at the booth as "
        "strongly as before: a card handed back).",
    )
    min_rssi_dbm: float = Field(
        default=-85.0,
        ge=-120.0,
        le=0.0,
        description="Reads weaker than this are ignored entirely (noise at the reader's edge).",
    )
    approach_window_s: float = Field(
        default=15.0,
        ge=1.0,
        le=120.0,
        description="Reads this long before a vehicle reaches the loop count as its approach.",
    )
    handed_back_after_s: float = Field(
        default=1.5,
        ge=0.0,
        le=30.0,
        description="Once the next vehicle has been at the booth this long, a card of the "
        "vehicle before read strongly at the booth is in it (handed back), not a straggler.",
    )
    infer_after_s: float = Field(
        default=4.0,
        ge=0.5,
        le=60.0,
        description="A card read strongly at the booth this long with nobody on the loop is a "
        "vehicle the loop missed: it gets a crossing (NO_VEHICLE_DETECTED).",
    )

    @model_validator(mode="after")
    def _idle_shorter_than_max(self) -> Self:
        if self.idle_timeout_s >= self.max_open_s:
            raise ValueError(
                f"idle_timeout_s ({self.idle_timeout_s}) must be shorter than max_open_s "
                f"({self.max_open_s})"
            )
        return self


class LoopConfig(_Section):
    """How the presence loop's edges are read: chatter, lost edges, a loop stuck occupied."""

    departure_confirm_s: float = Field(
        default=0.2,
        ge=0.0,
        le=5.0,
        description="A clear must last this long to be a departure; a shorter one is chatter "
        "and the vehicle stays (the crossing closes at the clear edge).",
    )
    min_stay_s: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="After an occupation shorter than this (a vehicle still rolling on), a "
        "clear must last short_stay_confirm_s instead.",
    )
    short_stay_confirm_s: float = Field(
        default=0.6,
        ge=0.0,
        le=10.0,
        description="How long a clear must last after a short occupation to be a departure.",
    )
    rejoin_window_s: float = Field(
        default=2.0,
        ge=0.0,
        le=30.0,
        description="The loop occupied again this soon after a departure may be the same "
        "vehicle (a trailer, a dropout): it only becomes a new vehicle on new evidence.",
    )
    tail_max_s: float = Field(
        default=1.5,
        ge=0.1,
        le=30.0,
        description="Such a re-occupation that clears within this long with no new card or "
        "plate was the departed vehicle's tail.",
    )
    split_quiet_s: float = Field(
        default=3.0,
        ge=0.5,
        le=60.0,
        description="With the loop occupied, a new card read strongly at the booth after every "
        "card of the vehicle there has been silent this long means the vehicle changed.",
    )
    stuck_occupied_s: float = Field(
        default=600.0,
        ge=30.0,
        le=86_400.0,
        description="A loop occupied this long raises loop_stuck_occupied on the status topic.",
    )
    fault_hold_s: float = Field(
        default=600.0,
        ge=10.0,
        le=86_400.0,
        description="A missing edge or chatter stays a status fault this long after it was seen.",
    )
    chatter_fault_count: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="This many chatter events within fault_hold_s raise loop_chatter.",
    )


class AssociationConfig(_Section):
    """Thresholds of occupant association: is a card in this vehicle (docs/fusion.md)?"""

    strong_rssi_dbm: float = Field(
        default=-65.0,
        ge=-100.0,
        le=0.0,
        description="Only a card at the booth is read this strongly on a booth antenna.",
    )
    steady_min_reads: int = Field(
        default=4, ge=2, le=1000, description="Fewest reads of a steadily read (shielded) card."
    )
    steady_spread: float = Field(
        default=0.5,
        ge=0.1,
        le=1.0,
        description="Share of the stay's tenths a steadily read card is read in.",
    )
    settle_s: float = Field(
        default=1.5,
        ge=0.0,
        le=30.0,
        description="A card first read later than this after the arrival, near the close, "
        "appeared late (the next vehicle pulling up).",
    )
    late_onset_s: float = Field(
        default=6.0,
        ge=0.5,
        le=60.0,
        description="How close to the close a card must appear to count as late.",
    )
    rising_db: float = Field(
        default=4.0,
        ge=0.5,
        le=40.0,
        description="A rise of this much from a card's first third of reads to its last marks "
        "a vehicle coming closer.",
    )
    weak_margin_db: float = Field(
        default=6.0,
        ge=0.0,
        le=40.0,
        description="Reads this far below strong_rssi_dbm are weak; also how close to its stay "
        "strength a departed card must be read to be still at the booth.",
    )
    burst_max_s: float = Field(
        default=2.5,
        ge=0.1,
        le=60.0,
        description="A few weak reads within this long are a neighbouring lane's burst.",
    )
    peer_gap_db: float = Field(
        default=15.0,
        ge=1.0,
        le=60.0,
        description="A card this much weaker than the strongest card of the same vehicle, and "
        "not read steadily, is a neighbouring lane's.",
    )
    approach_gap_s: float = Field(
        default=3.0,
        ge=0.0,
        le=30.0,
        description="Strong reads up to this long before the arrival count as at the booth.",
    )
    handed_back_margin_db: float = Field(
        default=8.0,
        ge=0.0,
        le=40.0,
        description="A card handed back to the next vehicle is read within this much of its "
        "strength in the vehicle before.",
    )


class AntennasConfig(_Section):
    """Where each reader antenna looks; an antenna not listed is a booth antenna."""

    booth: tuple[Annotated[int, Field(ge=0, le=255)], ...] = Field(
        default=(),
        max_length=64,
        description="Antennas aimed at the vehicle at the stop point.",
    )
    approach: tuple[Annotated[int, Field(ge=0, le=255)], ...] = Field(
        default=(),
        max_length=64,
        description="Antennas aimed up the lane at the queue: their reads never make a card "
        "strong at the booth.",
    )
    exit: tuple[Annotated[int, Field(ge=0, le=255)], ...] = Field(
        default=(),
        max_length=64,
        description="Antennas aimed past the booth at vehicles leaving.",
    )

    @model_validator(mode="after")
    def _each_antenna_once(self) -> Self:
        seen: dict[int, str] = {}
        for zone in ("booth", "approach", "exit"):
            for antenna in getattr(self, zone):
                if antenna in seen:
                    raise ValueError(
                        f"antenna {antenna} is listed in both {seen[antenna]} and {zone}"
                    )
                seen[antenna] = zone
        return self

    def zones(self) -> tuple[tuple[int, AntennaZone], ...]:
        return tuple(
            (antenna, AntennaZone(zone))
            for zone in ("booth", "approach", "exit")
            for antenna in getattr(self, zone)
        )


class LaneConfig(_Section):
    """Who this lane is and which rules it applies."""

    port_id: Identifier = Field(description="Port of entry code, as central knows it.")
    lane_id: Identifier = Field(description="Lane id within the port.")
    lane_type: LaneType = Field(
        default=LaneType.TRUSTED_TRAVELLER,
        description="'trusted_traveller' (every card must be valid in an allowed program) or "
        "'general' (card results are informational).",
    )
    allowed_programs: tuple[Program, ...] = Field(
        default=(Program.SENTRI, Program.NEXUS, Program.GLOBAL_ENTRY),
        min_length=1,
        max_length=len(Program),
        description="Programs accepted for expedited processing in a trusted-traveller lane.",
    )
    correlation: CorrelationConfig = Field(
        default_factory=CorrelationConfig, description="Crossing correlation timing."
    )
    loop: LoopConfig = Field(default_factory=LoopConfig, description="Presence loop handling.")
    association: AssociationConfig = Field(
        default_factory=AssociationConfig, description="Occupant association thresholds."
    )
    antennas: AntennasConfig = Field(
        default_factory=AntennasConfig, description="Reader antenna zones."
    )

    @model_validator(mode="after")
    def _programs_unique(self) -> Self:
        if len(set(self.allowed_programs)) != len(self.allowed_programs):
            raise ValueError("allowed_programs lists a program twice")
        if Program.NONE in self.allowed_programs and self.lane_type is LaneType.TRUSTED_TRAVELLER:
            raise ValueError(
                "allowed_programs may not contain NONE in a trusted_traveller lane: documents "
                "without a program never qualify for expedited processing"
            )
        return self

    def correlation_settings(self) -> CorrelationSettings:
        """The core's view of correlation, loop, association and antennas together."""
        c, loop, a = self.correlation, self.loop, self.association
        return CorrelationSettings(
            presence_loop_id=c.presence_loop_id,
            idle_timeout_s=c.idle_timeout_s,
            max_open_s=c.max_open_s,
            straggler_window_s=c.straggler_window_s,
            handed_back_after_s=c.handed_back_after_s,
            infer_after_s=c.infer_after_s,
            min_rssi_dbm=c.min_rssi_dbm,
            approach_window_s=c.approach_window_s,
            departure_confirm_s=loop.departure_confirm_s,
            min_stay_s=loop.min_stay_s,
            short_stay_confirm_s=loop.short_stay_confirm_s,
            rejoin_window_s=loop.rejoin_window_s,
            tail_max_s=loop.tail_max_s,
            split_quiet_s=loop.split_quiet_s,
            stuck_occupied_s=loop.stuck_occupied_s,
            fault_hold_s=loop.fault_hold_s,
            chatter_fault_count=loop.chatter_fault_count,
            handed_back_margin_db=a.handed_back_margin_db,
            association=AssociationSettings(
                strong_rssi_dbm=a.strong_rssi_dbm,
                steady_min_reads=a.steady_min_reads,
                steady_spread=a.steady_spread,
                settle_s=a.settle_s,
                late_onset_s=a.late_onset_s,
                rising_db=a.rising_db,
                weak_margin_db=a.weak_margin_db,
                burst_max_s=a.burst_max_s,
                peer_gap_db=a.peer_gap_db,
                approach_gap_s=a.approach_gap_s,
                antenna_zones=self.antennas.zones(),
            ),
        )

    def policy(self) -> LanePolicy:
        """The core's view of this section."""
        return LanePolicy(
            lane_type=self.lane_type, allowed_programs=frozenset(self.allowed_programs)
        )


class ControllerConfig(_Section):
    """The lane microcontroller on the serial line."""

    device: str = Field(
        default="/dev/lane-controller",
        min_length=1,
        max_length=256,
        description="Serial device of the lane controller (a udev symlink is best).",
    )
    baudrate: int = Field(
        default=115200,
        ge=9600,
        le=921600,
        description=f"Line speed; one of {', '.join(map(str, _STANDARD_BAUD_RATES))}.",
    )
    ping_interval_s: float = Field(
        default=2.0, ge=0.1, le=60.0, description="How often the agent pings the controller."
    )
    silence_timeout_s: float = Field(
        default=10.0,
        ge=0.5,
        le=300.0,
        description="No frame for this long means the link is down; the port is reopened.",
    )
    signal_ack_timeout_s: float = Field(
        default=0.5,
        ge=0.05,
        le=10.0,
        description="SET_SIGNAL is resent when not acknowledged within this time.",
    )
    clock_max_drift_ppm: float = Field(
        default=1000.0,
        ge=10.0,
        le=1_000_000.0,
        description="The controller's clock running faster or slower than the agent's by more "
        "than this raises controller_clock_drift (crystals are within 100 ppm).",
    )
    clock_step_tolerance_s: float = Field(
        default=1.0,
        ge=0.05,
        le=600.0,
        description="A jump of the controller's clock larger than this is a step: taken out "
        "and reported as controller_clock_step.",
    )

    def clock_settings(self) -> ClockSettings:
        """The controller clock watch's view of this section."""
        return ClockSettings(
            max_drift_ppm=self.clock_max_drift_ppm, step_tolerance_s=self.clock_step_tolerance_s
        )

    @model_validator(mode="after")
    def _timing(self) -> Self:
        if self.baudrate not in _STANDARD_BAUD_RATES:
            raise ValueError(
                f"baudrate {self.baudrate} is not a standard rate; use one of "
                f"{', '.join(map(str, _STANDARD_BAUD_RATES))}"
            )
        if self.silence_timeout_s <= self.ping_interval_s:
            raise ValueError(
                f"silence_timeout_s ({self.silence_timeout_s}) must be longer than "
                f"ping_interval_s ({self.ping_interval_s}), or every ping gap looks like a "
                "dead link"
            )
        return self


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


class MqttConfig(_Section):
    """Connection to central operations' broker (standard MQTT v5 only)."""

    host: str = Field(default="127.0.0.1", min_length=1, max_length=253, description="Broker host.")
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
    format: Literal["auto", "json", "text"] = Field(
        default="auto", description="'auto': text on a terminal, JSON lines otherwise."
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

    def with_plates(
        self, correlation: CorrelationSettings, policy: LanePolicy
    ) -> tuple[CorrelationSettings, LanePolicy]:
        """The lane core's settings with plate reading added (for a lane with a camera)."""
        check = PlateCheck(top_n=self.candidates, min_confidence=self.min_plate_confidence)
        return (
            dataclasses.replace(correlation, plate_preroll_s=self.plate_preroll_s),
            dataclasses.replace(policy, plate_check=check),
        )


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


class AgentConfig(_Section):
    """The whole lane config file."""

    lane: LaneConfig = Field(description="Lane identity and rules.")
    controller: ControllerConfig = Field(
        default_factory=ControllerConfig, description="Lane controller serial link."
    )
    cache: CacheConfig = Field(default_factory=CacheConfig, description="Credential cache.")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="Durable outbox.")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="Uplink to central.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="Engine loop.")
    camera: CameraConfig = Field(default_factory=CameraConfig, description="Lane camera.")
    vision: VisionConfig = Field(default_factory=VisionConfig, description="Plate reading.")
    live: LiveConfig = Field(
        default_factory=LiveConfig, description="Live crossing events for the booth."
    )

    @model_validator(mode="after")
    def _updates_subscriber_has_its_own_certificate(self) -> Self:
        if (
            self.cache.trust_file is not None
            and self.mqtt.tls
            and self.mqtt.updates_cert_file is None
        ):
            raise ValueError(
                "mqtt.updates_cert_file and mqtt.updates_key_file are required with tls = true and "
                "cache.trust_file set: the cache-updates subscriber is a second connection and "
                f"needs its own certificate (CN '{self.lane.port_id}/{self.lane.lane_id}/cache')"
            )
        return self

    @model_validator(mode="after")
    def _current_vehicle_outlives_the_longest_stay(self) -> Self:
        longest = self.lane.correlation.max_open_s
        if self.live.enabled and self.live.current_expiry_s <= longest:
            raise ValueError(
                f"live.current_expiry_s ({self.live.current_expiry_s}) must be longer than "
                f"lane.correlation.max_open_s ({longest:g}): the vehicle at the booth would "
                "vanish from the retained current topic while it is still there"
            )
        return self

    @property
    def mqtt_client_id(self) -> str:
        """The client id used on the broker."""
        return self.mqtt.client_id or f"lane-{self.lane.port_id}-{self.lane.lane_id}"

    def with_paths_relative_to(self, base: Path) -> AgentConfig:
        """Resolve relative file paths against ``base`` (the config file's directory)."""
        return self.model_copy(
            update={
                "cache": self.cache.relative_to(base),
                "outbox": self.outbox.model_copy(update={"path": base / self.outbox.path}),
                "mqtt": self.mqtt.with_credentials_from(
                    base, os.environ.get("CREDENTIALS_DIRECTORY")
                ),
                "vision": self.vision.model_copy(
                    update={"models_dir": base / self.vision.models_dir}
                )
                if self.vision.models_dir is not None
                else self.vision,
            }
        )


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file, phrased for the technician who wrote it."""

    file: Path
    line: int | None
    key: str
    value: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        value = f" = {self.value}" if self.value else ""
        return f"{where}: {self.key}{value}: {self.message}"


class ConfigError(Exception):
    """The config file could not be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_config(path: Path) -> AgentConfig:
    """Read, validate and resolve a lane config file, or raise ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigProblem(path, None, "(file)", "", f"cannot read: {reason}")]
        ) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc))
        raise ConfigError(
            [ConfigProblem(path, line, "(syntax)", "", f"not valid TOML: {exc}")]
        ) from exc
    try:
        # JSON mode keeps strict typing while accepting strings for enums and paths, and
        # arrays for tuples; TOML dates (never valid here) become strings and are refused.
        config = AgentConfig.model_validate_json(json.dumps(raw, default=str))
    except ValidationError as exc:
        raise ConfigError(_problems(path, text, raw, exc)) from exc
    return config.with_paths_relative_to(path.resolve().parent)


def _toml_error_line(message: str) -> int | None:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else None


def _problems(
    path: Path, text: str, raw: dict[str, Any], exc: ValidationError
) -> list[ConfigProblem]:
    errors = exc.errors(include_url=False)
    locs = [tuple(str(part) for part in error["loc"]) for error in errors]
    problems = []
    for error, loc_tuple in zip(errors, locs, strict=True):
        if any(
            len(other) > len(loc_tuple) and other[: len(loc_tuple)] == loc_tuple for other in locs
        ):
            continue  # a container-level echo of an item error already reported
        loc = list(loc_tuple)
        key = ".".join(loc) if loc else "(top level)"
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(loc)
            given = error.get("input")
            value = "" if isinstance(given, dict) else _render(given)
        elif error["type"] == "missing":
            message = "required key is missing"
            value = ""
        elif error["type"] == "string_pattern_mismatch":
            message = _PATTERN_MEANING.get(
                str(error.get("ctx", {}).get("pattern")), _plain(error["msg"])
            )
            value = _render(error.get("input"))
        else:
            message = _plain(error["msg"])
            given = error.get("input")
            value = "" if isinstance(given, dict) else _render(given)
        problems.append(ConfigProblem(path, _line_of(text, loc), key, value, message))
    return problems


def _unknown_key_message(loc: list[str]) -> str:
    model: type[BaseModel] = AgentConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            break
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(loc[-1], allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key; {hint}allowed here: {', '.join(allowed)}"


def _plain(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else message


def _render(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return repr(value)


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line of a key: the last occurrence of ``key =`` under its table header."""
    keys = [part for part in loc if not part.isdigit()]
    if not keys:
        return None
    table, key = keys[:-1], keys[-1]
    current: list[str] = []
    fallback: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[([^\[\]]+)\]", stripped)
        if header:
            current = [p.strip().strip('"') for p in header.group(1).split(".")]
            if current == keys:
                fallback = number
            continue
        assignment = re.match(r'^"?([A-Za-z0-9_-]+)"?\s*=', stripped)
        if not assignment or assignment.group(1) != key:
            continue
        if current == table:
            return number
        if fallback is None and current[: len(table)] == table:
            fallback = number
    return fallback
