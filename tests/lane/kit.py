"""Lane inputs in a line each, and the restart round trip, for tests of the lane core."""

from __future__ import annotations

import json

from agent.lane.correlator import CorrelationSettings, CrossingCorrelator
from agent.lane.events import LaneInput, LoopChanged, TagRead


def read(at: float, epc: str, rssi: float = -50.0, antenna: int = 1) -> TagRead:
    return TagRead(at=at, epc=epc, antenna=antenna, rssi_dbm=rssi)


def arrive(at: float, loop: int = 1) -> LoopChanged:
    return LoopChanged(at=at, loop_id=loop, occupied=True)


def depart(at: float, loop: int = 1) -> LoopChanged:
    return LoopChanged(at=at, loop_id=loop, occupied=False)


def through_json(
    correlator: CrossingCorrelator, settings: CorrelationSettings
) -> CrossingCorrelator:
    """What a restart keeps: the exported state, written as JSON text (as the journal stores it),
    read back and restored."""
    return CrossingCorrelator.restore(settings, json.loads(json.dumps(correlator.export_state())))


def reads(
    epc: str,
    start: float,
    end: float,
    *,
    every: float = 0.5,
    rssi: float | tuple[float, float] = -50.0,
    antenna: int = 1,
) -> list[TagRead]:
    """A card read every ``every`` seconds from ``start`` to ``end``; ``rssi`` a level, or
    ``(first, last)`` for a strength that moves linearly between them."""
    count = max(1, round((end - start) / every) + 1)
    first, last = (rssi, rssi) if isinstance(rssi, int | float) else rssi
    return [
        read(
            start + index * every,
            epc,
            rssi=first + (last - first) * (index / (count - 1) if count > 1 else 0.0),
            antenna=antenna,
        )
        for index in range(count)
    ]


def in_time_order(*groups: LaneInput | list[TagRead]) -> list[LaneInput]:
    """Inputs and lists of reads merged into one time-ordered list (a stable sort)."""
    flat: list[LaneInput] = []
    for group in groups:
        flat.extend(group if isinstance(group, list) else [group])
    return sorted(flat, key=lambda event: event.at)
