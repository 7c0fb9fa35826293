"""The live crossing event: the crossing as it forms, for the booth and central's live view.

Described by ``agent/wire/schemas/live-crossing.v1.schema.json`` and published on the lane's
``live`` topic (and, while the vehicle is at the booth, retained on ``current``; see
:mod:`agent.wire.topics`). What a consumer may infer from it is in docs/live.md: it is
provisional until its ``closed`` event, and the final crossing event, which carries the same
``crossing_id``, is the record.

The crossing id is derived, not drawn: a UUID (version 5) of the lane, the crossing's number on
the lane and the lane time it opened at. The agent that restarts with a vehicle at the booth
rebuilds the same crossing from its input journal, with the same number and opening time, so the
live crossing resumes, and the final crossing closes, under the id the booth already shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from agent.lane.live import LivePhase, LiveUpdate
from agent.wire.crossing_event import CacheInfo, LaneIdentity, card_json, iso, plate_json

LIVE_SCHEMA_ID = "lane-agent/live-crossing/1"

CROSSING_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lane-agent:crossing")
"""Fixed for good: changing it would give the crossings of a restarted agent new ids."""


def crossing_id(port_id: str, lane_id: str, number: int, opened_at: float) -> uuid.UUID:
    """The id of crossing ``number`` of a lane, opened at lane time ``opened_at`` (seconds).

    The opening time (to the millisecond) keeps ids unique when a lane's numbering starts again
    (a new lane computer, a replaced state file).
    """
    return uuid.uuid5(
        CROSSING_ID_NAMESPACE, f"{port_id}/{lane_id}/{number}/{round(opened_at * 1000)}"
    )


def build_live_event(
    update: LiveUpdate,
    *,
    lane: LaneIdentity,
    cache: CacheInfo,
    published_at: float,
    wall: Callable[[float], float] = float,
) -> dict[str, Any]:
    """The live event as a JSON-ready dict; ``wall`` turns lane times into the agent's clock."""
    decision = update.decision
    crossing = decision.crossing
    closed = update.phase is LivePhase.CLOSED
    plate = plate_json(decision.plate) if decision.plate else None
    if plate is not None:
        del plate["image_sha256"]  # the image goes with the final crossing only
    return {
        "schema": LIVE_SCHEMA_ID,
        "crossing_id": str(
            crossing_id(lane.port_id, lane.lane_id, update.number, crossing.opened_at)
        ),
        "port_id": lane.port_id,
        "lane_id": lane.lane_id,
        "lane_type": lane.lane_type.value,
        "phase": update.phase.value,
        "revision": update.revision,
        "changes": [change.value for change in update.changes],
        "provisional": update.provisional,
        "pending": [pending.value for pending in update.pending],
        "opened_at": iso(wall(crossing.opened_at)),
        "as_of": iso(wall(update.as_of)),
        "closed_at": iso(wall(crossing.closed_at)) if closed else None,
        "published_at": iso(published_at),
        "opened_by": crossing.opened_by.value,
        "closed_by": crossing.closed_by.value if closed else None,
        "vehicle_detected": crossing.vehicle_detected,
        "recommendation": decision.recommendation.value,
        "reasons": [reason.value for reason in decision.reasons],
        "cards": [card_json(match, wall) for match in decision.matches],
        "plate": plate,
        "cache": {
            "data_version": cache.data_version,
            "bundle_version": cache.bundle_version,
            "age_s": None if decision.cache_age_s is None else round(decision.cache_age_s, 3),
        },
        "agent": {"version": lane.agent_version},
    }
