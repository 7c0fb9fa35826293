"""Lane inputs in a line each, and the restart round trip, for tests of the lane core."""

from __future__ import annotations

import json

from agent.lane.correlator import CorrelationSettings, CrossingCorrelator
from agent.lane.events import LoopChanged, TagRead


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
