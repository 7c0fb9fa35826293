"""The crossing event: what central operations receive for every vehicle, as JSON.

The wire format is versioned by ``schema`` and described by
``agent/wire/schemas/crossing-event.v1.schema.json``; every field here is one central needs to act
on the crossing, and nothing more: the card reference and the opaque holder reference (so
central can pull up the holder), the match result and program, never names, birth dates or the
tag's chip id.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.lane.plates import PlateOutcome
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
    bundle_version: int | None = None
    """Version of the signed bundle in force (None: plain import, no bundle yet)."""


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
        "plate": _plate(decision.plate) if decision.plate else None,
        "cache": {
            "data_version": cache.data_version,
            "imported_at": iso(cache.imported_at) if cache.imported_at else None,
            "bundle_version": cache.bundle_version,
            "age_s": None if decision.cache_age_s is None else round(decision.cache_age_s, 3),
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


def plate_image(decision: Decision) -> bytes | None:
    """The JPEG crop sent with the event on the image topic (None: no plate image)."""
    vote = decision.plate.vote if decision.plate else None
    return vote.best_reading.crop_jpeg or None if vote else None


def _plate(outcome: PlateOutcome) -> dict[str, Any]:
    vote = outcome.vote
    vehicle = outcome.match.vehicle
    crop = vote.best_reading.crop_jpeg if vote else b""
    return {
        "match": outcome.match.kind.value,
        "text": vote.text if vote else None,
        "confidence": vote.confidence if vote else None,
        "candidates": [
            {"text": c.text, "confidence": c.confidence} for c in (vote.candidates if vote else ())
        ],
        "readings": vote.readings if vote else 0,
        "formats": list(vote.formats) if vote else [],
        "registered_jurisdiction": vehicle.jurisdiction if vehicle else None,
        "image_sha256": hashlib.sha256(crop).hexdigest() if crop else None,
    }


def encode(event: dict[str, Any]) -> bytes:
    """Compact, key-sorted UTF-8 JSON: the bytes that go in the outbox and on the wire."""
    return json.dumps(event, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
