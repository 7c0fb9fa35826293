"""The crossing event: what central operations receive for every vehicle, as JSON.

The wire format is versioned by ``schema`` and described by
``agent/schemas/crossing-event.v1.schema.json``; every field here is one central needs to act
on the crossing, and nothing more: the card reference and the opaque holder reference (so
central can pull up the holder), the match result and program, never names, birth dates or the
tag's chip id.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.lane.policy import CardMatch, Decision, LaneType

SCHEMA_ID = "lane-agent/crossing-event/1"


@dataclass(frozen=True, slots=True)
class LaneIdentity:
    """Who publishes the event."""

    port_id: str
    lane_id: str
    lane_type: LaneType
    agent_version: str


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """Which credential data the decision was made with."""

    data_version: str | None
    imported_at: datetime | None


def uuid7(now_ns: int | None = None) -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix ms, then random bits."""
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand & ((1 << 80) - 1)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)


def iso(at: float | datetime) -> str:
    """UTC timestamp with milliseconds and a Z, the one format every event uses."""
    moment = at if isinstance(at, datetime) else datetime.fromtimestamp(at, tz=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_crossing_event(
    decision: Decision,
    *,
    seq: int,
    event_id: uuid.UUID,
    lane: LaneIdentity,
    cache: CacheInfo,
    committed_at: float,
) -> dict[str, Any]:
    """The event as a JSON-ready dict; ``seq`` is the outbox's per-lane sequence number."""
    crossing = decision.crossing
    return {
        "schema": SCHEMA_ID,
        "event_id": str(event_id),
        "seq": seq,
        "port_id": lane.port_id,
        "lane_id": lane.lane_id,
        "lane_type": lane.lane_type.value,
        "opened_at": iso(crossing.opened_at),
        "closed_at": iso(crossing.closed_at),
        "committed_at": iso(committed_at),
        "opened_by": crossing.opened_by.value,
        "closed_by": crossing.closed_by.value,
        "vehicle_detected": crossing.vehicle_detected,
        "recommendation": decision.recommendation.value,
        "reasons": [reason.value for reason in decision.reasons],
        "cards": [_card(match) for match in decision.matches],
        "cache": {
            "data_version": cache.data_version,
            "imported_at": iso(cache.imported_at) if cache.imported_at else None,
        },
        "agent": {"version": lane.agent_version},
    }


def _card(match: CardMatch) -> dict[str, Any]:
    seen = match.observation
    credential = match.credential
    return {
        "ref": seen.ref,
        "result": match.result.value,
        "document_type": credential.document_type.value if credential else None,
        "program": credential.program.value if credential else None,
        "holder_ref": credential.holder_ref if credential else None,
        "valid_until": iso(credential.valid_until) if credential else None,
        "reads": seen.reads,
        "best_rssi_dbm": round(seen.best_rssi_dbm, 1),
        "antennas": list(seen.antennas),
        "first_read_at": iso(seen.first_at),
    }


def encode(event: dict[str, Any]) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the bytes that go in the outbox and on the wire."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
