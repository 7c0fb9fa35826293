"""The ``[lane]`` sections: the lane's identity and rules, and how its correlation is tuned."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from agent.config.base import Identifier, _Section
from agent.lane.association import AntennaZone, AssociationSettings
from agent.lane.correlator import CorrelationSettings
from agent.lane.credentials import Program
from agent.lane.policy import LanePolicy, LaneType


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
