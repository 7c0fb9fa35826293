"""The ``[reader]`` section: where the lane's card reads and loop edges come from.

A reader family is chosen by its ``type`` key (a discriminated union): ``lane_controller``, the
project's own controller on a serial line, or ``llrp``, an off-the-shelf UHF reader speaking LLRP
with the loops on its GPI inputs (docs/readers.md). Files written before reader families name the
lane controller in a ``[controller]`` section, still read as ``[reader] type = "lane_controller"``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import Field, model_validator

from agent.config.base import _HOST_PATTERN, _Section
from agent.lane.clock import ClockSettings

_STANDARD_BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


class _ReaderClock(_Section):
    """How far the reader's clock is trusted: every family stamps reads on its own clock."""

    clock_max_drift_ppm: float = Field(
        default=1000.0,
        ge=10.0,
        le=1_000_000.0,
        description="The reader's clock running faster or slower than the agent's by more "
        "than this raises controller_clock_drift (crystals are within 100 ppm).",
    )
    clock_step_tolerance_s: float = Field(
        default=1.0,
        ge=0.05,
        le=600.0,
        description="A jump of the reader's clock larger than this is a step: taken out "
        "and reported as controller_clock_step.",
    )

    def clock_settings(self) -> ClockSettings:
        """The clock watch's view of this section (agent/lane/clock.py)."""
        return ClockSettings(
            max_drift_ppm=self.clock_max_drift_ppm, step_tolerance_s=self.clock_step_tolerance_s
        )


class LaneControllerConfig(_ReaderClock):
    """The project's lane controller on a serial line (firmware_bridge/PROTOCOL.md)."""

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


class LaneControllerReaderConfig(LaneControllerConfig):
    """``[reader] type = "lane_controller"``."""

    type: Literal["lane_controller"] = Field(
        default="lane_controller", description="Reader family: the project's lane controller."
    )


class LlrpReaderConfig(_ReaderClock):
    """``[reader] type = "llrp"``: an off-the-shelf UHF reader (Impinj Speedway/R700, Zebra FX)
    speaking LLRP over TCP, the loop detectors wired to its GPI inputs and the lane signal to a GPO
    output (docs/readers.md)."""

    type: Literal["llrp"] = Field(description="Reader family: an LLRP reader.")
    host: str = Field(
        min_length=1,
        max_length=253,
        pattern=_HOST_PATTERN,
        description="The reader's host name or IP address (no scheme, no port).",
    )
    port: int = Field(default=5084, ge=1, le=65535, description="LLRP TCP port (5084).")
    antennas: tuple[Annotated[int, Field(ge=1, le=64)], ...] = Field(
        default=(1,),
        min_length=1,
        max_length=64,
        description="Antenna ports the lane reads with (the reader must have them).",
    )
    loop_gpi_ports: tuple[Annotated[int, Field(ge=1, le=64)], ...] = Field(
        default=(1,),
        min_length=1,
        max_length=16,
        description="The GPI port of each loop detector: the first is loop 1, the second loop "
        "2… (lane.correlation.presence_loop_id picks the booth's).",
    )
    loop_occupied_when_high: bool = Field(
        default=True,
        description="A loop detector's output closed (GPI high) means a vehicle is on the loop; "
        "false for detectors wired fail-safe (open when occupied).",
    )
    signal_gpo_port: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="GPO port driven high while the agent asks for manual processing (its "
        "fall-back when it cannot store crossings); none: no signal wired to the reader.",
    )
    read_tid: bool = Field(
        default=False,
        description="Also read each tag's TID (chip id) with an access spec: slower reads; the "
        "TID never leaves the lane.",
    )
    reset_on_connect: bool = Field(
        default=False,
        description="Return the reader to its factory settings before configuring it. Off: "
        "settings made on the reader itself (transmit power, search mode) are kept.",
    )
    report_every_n_tags: int = Field(
        default=1,
        ge=1,
        le=128,
        description="Tag reads per report: 1 reports each read at once; more batches them at "
        "high read rates, delaying each by at most the time to collect the batch.",
    )
    timestamps: Literal["auto", "uptime", "utc"] = Field(
        default="auto",
        description="Which reader clock lane time follows: its UTC clock, its uptime (immune "
        "to time changes on the reader), or auto: the one the reader stamps its events with "
        "(UTC when it has a UTC clock).",
    )
    connect_timeout_s: float = Field(
        default=5.0, ge=0.5, le=60.0, description="TCP connect and first answer timeout."
    )
    keepalive_s: float = Field(
        default=2.0, ge=0.2, le=60.0, description="The reader sends a KEEPALIVE this often."
    )
    silence_timeout_s: float = Field(
        default=6.0,
        ge=0.5,
        le=300.0,
        description="Nothing from the reader for this long means the connection is dead: the "
        "agent reconnects.",
    )
    reconnect_min_s: float = Field(
        default=1.0, ge=0.1, le=60.0, description="First reconnect delay (doubles, with jitter)."
    )
    reconnect_max_s: float = Field(
        default=30.0, ge=1.0, le=600.0, description="Longest reconnect delay."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if len(set(self.antennas)) != len(self.antennas):
            raise ValueError(f"antennas {list(self.antennas)} lists a port twice")
        if len(set(self.loop_gpi_ports)) != len(self.loop_gpi_ports):
            raise ValueError(f"loop_gpi_ports {list(self.loop_gpi_ports)} lists a port twice")
        if self.silence_timeout_s <= self.keepalive_s:
            raise ValueError(
                f"silence_timeout_s ({self.silence_timeout_s}) must be longer than keepalive_s "
                f"({self.keepalive_s}), or every keepalive gap looks like a dead reader"
            )
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed reconnect_max_s "
                f"({self.reconnect_max_s})"
            )
        return self


ReaderConfig = Annotated[LaneControllerReaderConfig | LlrpReaderConfig, Field(discriminator="type")]
"""The reader section, by family."""

READER_FAMILIES: dict[str, type[LaneControllerReaderConfig | LlrpReaderConfig]] = {
    "lane_controller": LaneControllerReaderConfig,
    "llrp": LlrpReaderConfig,
}
