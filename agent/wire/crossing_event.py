"""The crossing event: what central operations receive for every vehicle, as JSON.

The wire format is versioned by ``schema`` and described by
``agent/wire/schemas/crossing-event.v2.schema.json`` (version 1, without occupant association, is
what agents before it wrote; it stays in ``schemas/`` for the events still in lane outboxes).
Every field here is one central needs to act on the crossing, and nothing more: the card
reference and the opaque holder reference (so central can pull up the holder), the match result
and program, how sure the lane is that the card was in the vehicle and why, never names, birth
dates or the tag's chip id.

Times in the event are the agent's wall clock: the lane core works in lane time (the
controller's clock), and ``wall`` converts (:meth:`agent.lane.clock.ControllerClock.to_wall`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.lane.association import CardEvidence
from agent.lane.correlator import SetAsideCard
from agent.lane.plates import PlateOutcome
from agent.lane.policy import CardMatch, Decision, LaneType

SCHEMA_ID = "lane-agent/crossing-event/2"


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
    crossing_id: uuid.UUID,
    lane: LaneIdentity,
    cache: CacheInfo,
    committed_at: float,
    wall: Callable[[float], float] = float,
) -> dict[str, Any]:
    """The event as a JSON-ready dict; ``seq`` is the outbox's per-lane sequence number,
    ``crossing_id`` the id its live events carried (:func:`agent.wire.live_event.crossing_id`),
    and ``wall`` turns the decision's lane times into the agent's wall clock."""
    crossing = decision.crossing
    return {
        "schema": SCHEMA_ID,
        "event_id": str(event_id),
        "crossing_id": str(crossing_id),
        "seq": seq,
        "port_id": lane.port_id,
        "lane_id": lane.lane_id,
        "lane_type": lane.lane_type.value,
        "opened_at": iso(wall(crossing.opened_at)),
        "closed_at": iso(wall(crossing.closed_at)),
        "committed_at": iso(committed_at),
        "opened_by": crossing.opened_by.value,
        "closed_by": crossing.closed_by.value,
        "vehicle_detected": crossing.vehicle_detected,
        "loop_anomalies": [anomaly.value for anomaly in crossing.anomalies],
        "recommendation": decision.recommendation.value,
        "reasons": [reason.value for reason in decision.reasons],
        "cards": [card_json(match, wall) for match in decision.matches],
        "set_aside": [_set_aside(card) for card in crossing.set_aside],
        "plate": plate_json(decision.plate) if decision.plate else None,
        "cache": {
            "data_version": cache.data_version,
            "imported_at": iso(cache.imported_at) if cache.imported_at else None,
            "bundle_version": cache.bundle_version,
            "age_s": None if decision.cache_age_s is None else round(decision.cache_age_s, 3),
        },
        "agent": {"version": lane.agent_version},
    }


def _evidence(evidence: CardEvidence | None, rule: str) -> dict[str, Any]:
    """What the association looked at, rounded for people (docs/fusion.md)."""
    if evidence is None:
        return {"rule": rule}
    return {
        "rule": rule,
        "reads": evidence.reads,
        "reads_at_booth": evidence.reads_at_booth,
        "onset_s": round(evidence.onset_s, 2),
        "end_gap_s": round(evidence.end_gap_s, 2),
        "spread": round(evidence.spread, 2),
        "peak_rssi_dbm": round(evidence.peak_rssi_dbm, 1),
        "strong_reads": evidence.strong_reads,
        "median_rssi_dbm": round(evidence.median_rssi_dbm, 1),
        "rise_db": round(evidence.rise_db, 1),
        "zones": [zone.value for zone in evidence.zones],
    }


def _set_aside(card: SetAsideCard) -> dict[str, Any]:
    return {
        "ref": card.ref,
        "association": card.association.value,
        "evidence": _evidence(card.evidence, card.rule.value),
    }


def card_json(match: CardMatch, wall: Callable[[float], float]) -> dict[str, Any]:
    """A carried card as the crossing and live events show it."""
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
        "first_read_at": iso(wall(seen.first_at)),
        "association": seen.association.value,
        "evidence": _evidence(seen.evidence, seen.rule.value),
    }


def plate_image(decision: Decision) -> bytes | None:
    """The JPEG crop sent with the event on the image topic (None: no plate image)."""
    vote = decision.plate.vote if decision.plate else None
    return vote.best_reading.crop_jpeg or None if vote else None


def plate_json(outcome: PlateOutcome) -> dict[str, Any]:
    """The plate outcome as the crossing and live events show it."""
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
