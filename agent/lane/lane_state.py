"""The correlator's working state: the vehicle at the booth, the one that just left, a
re-occupation being decided, the loop; and how all of it becomes plain JSON-compatible data for
the input journal's checkpoints and back (states of version 1, written before occupant
association, are converted)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.lane.crossing import ClosedBy, LoopAnomaly, OpenedBy
from agent.lane.events import PlateSeen, VisionFault

STATE_VERSION = 2


@dataclass(slots=True)
class Segment:
    """The vehicle at the booth: its crossing, open."""

    opened_at: float
    opened_by: OpenedBy
    vehicle_detected: bool
    arrived_at: float | None
    plates: list[PlateSeen] = field(default_factory=list)
    vision_faults: set[VisionFault] = field(default_factory=set)
    anomalies: set[LoopAnomaly] = field(default_factory=set)
    anchors: set[str] = field(default_factory=set)
    """Cards that made a vehicle the loop missed (``tag``): its idle timeout follows them."""
    ghost: bool = False
    """The rest of a stay whose crossing already closed (the loop dropped out under a vehicle
    that never left): it closes without a second crossing unless the cards say the vehicle
    changed."""
    last_split_check: float = float("-inf")

    @property
    def start(self) -> float:
        return self.opened_at if self.arrived_at is None else self.arrived_at


@dataclass(frozen=True, slots=True)
class Departed:
    """The crossing closed last: what a tail or continuation of it compares with."""

    at: float
    by: ClosedBy
    levels: Mapping[str, float]
    """Carried cards → their median RSSI during the stay."""
    plate: str | None


@dataclass(slots=True)
class Tail:
    """The loop occupied again soon after a departure: same vehicle or a new one?"""

    started_at: float
    departed: Departed


@dataclass(slots=True)
class LoopState:
    occupied: bool = False
    since: float | None = None
    clear_at: float | None = None
    confirm_by: float | None = None
    stuck: bool = False
    splits: int = 0
    edge_missing_at: float | None = None
    chatter_times: deque[float] = field(default_factory=deque)


def segment_state(segment: Segment) -> dict[str, Any]:
    return {
        "opened_at": segment.opened_at,
        "opened_by": segment.opened_by.value,
        "vehicle_detected": segment.vehicle_detected,
        "arrived_at": segment.arrived_at,
        "vision_faults": sorted(fault.value for fault in segment.vision_faults),
        "anomalies": sorted(anomaly.value for anomaly in segment.anomalies),
        "anchors": sorted(segment.anchors),
        "ghost": segment.ghost,
    }


def segment_from(state: Mapping[str, Any]) -> Segment:
    return Segment(
        opened_at=float(state["opened_at"]),
        opened_by=OpenedBy(state["opened_by"]),
        vehicle_detected=bool(state["vehicle_detected"]),
        arrived_at=optional_float(state["arrived_at"]),
        vision_faults={VisionFault(f) for f in state["vision_faults"]},
        anomalies={LoopAnomaly(a) for a in state["anomalies"]},
        anchors={str(ref) for ref in state["anchors"]},
        ghost=bool(state["ghost"]),
    )


def departed_state(departed: Departed) -> dict[str, Any]:
    return {
        "at": departed.at,
        "by": departed.by.value,
        "levels": dict(departed.levels),
        "plate": departed.plate,
    }


def departed_from(state: Mapping[str, Any]) -> Departed:
    plate = state["plate"]
    return Departed(
        at=float(state["at"]),
        by=ClosedBy(state["by"]),
        levels={str(ref): float(level) for ref, level in state["levels"].items()},
        plate=None if plate is None else str(plate),
    )


def tail_state(tail: Tail) -> dict[str, Any]:
    return {"started_at": tail.started_at, "departed": departed_state(tail.departed)}


def tail_from(state: Mapping[str, Any]) -> Tail:
    return Tail(float(state["started_at"]), departed_from(state["departed"]))


def upgrade_v1(state: Mapping[str, Any]) -> dict[str, Any]:
    """A version 1 state (cards summarised per crossing) as version 2: each card of the open
    crossing becomes a track with its first and last read at its best strength, and the cards
    of the crossing closed just before are carried up to their close."""
    try:
        current = state["open"]
        tracks: dict[str, Any] = {}
        recently = {str(ref): float(at) for ref, at in state["recently_closed"].items()}
        segment = None
        loop: dict[str, Any] = {
            "occupied": False,
            "since": None,
            "clear_at": None,
            "confirm_by": None,
            "stuck": False,
            "splits": 0,
            "edge_missing_at": None,
            "chatter_times": [],
        }
        if current is not None:
            opened_at = float(current["opened_at"])
            detected = bool(current["vehicle_detected"])
            for card in current["cards"]:
                antenna = int(sorted(card["antennas"])[0])
                best = float(card["best_rssi_dbm"])
                reads = [[float(card["first_at"]), best, antenna]]
                if float(card["last_at"]) > float(card["first_at"]):
                    reads.append([float(card["last_at"]), best, antenna])
                tracks[str(card["ref"])] = {"tid": card["tid"], "reads": reads}
            segment = {
                "opened_at": opened_at,
                "opened_by": "loop" if current["opened_by"] == "loop" else "tag",
                "vehicle_detected": detected,
                "arrived_at": opened_at if detected else None,
                "vision_faults": list(current["vision_faults"]),
                "anomalies": [],
                "anchors": [] if detected else sorted(tracks),
                "ghost": False,
            }
            loop["occupied"] = detected
            loop["since"] = opened_at if detected else None
        return {
            "version": STATE_VERSION,
            "closed_count": state["closed_count"],
            "last_at": state["last_at"],
            "last_closed_at": state["last_closed_at"],
            "recently_closed_plates": state["recently_closed_plates"],
            "vision_fault": state["vision_fault"],
            "loop": loop,
            "tracks": {
                "tracks": tracks,
                "consumed_until": dict(recently),
                "carried_at": dict(recently),
            },
            "segment": segment,
            "tail": None,
            "departed": None,
        }
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as error:
        raise ValueError(f"correlator state (version 1) is malformed: {error!r}") from error


def finite_or_none(value: float) -> float | None:
    return None if value == float("-inf") else value


def optional_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number or null, got {value!r}")
    return float(value)


def float_or_minus_inf(value: object) -> float:
    number = optional_float(value)
    return float("-inf") if number is None else number
