"""Crossing events, status documents and plate crops as lanes publish them, for central's tests.

Events are built field by field the way agent/wire/crossing_event.py builds them and are checked
against the shipped schema by the tests that use them (an event that stopped validating would
be quarantined and fail those tests, never pass silently).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from agent.wire.crossing_event import iso, uuid7
from agent.wire.topics import Topics

PREFIX = "lane-agent/v1"
SCHEMA_V1 = "lane-agent/crossing-event/1"


def topics(port_id: str, lane_id: str) -> Topics:
    return Topics(PREFIX, port_id, lane_id)


def crossing_event(
    port_id: str,
    lane_id: str,
    seq: int,
    *,
    closed_at: datetime | None = None,
    cards: int = 1,
    rng: random.Random | None = None,
    plate_image: bytes | None = None,
) -> dict[str, Any]:
    """A valid crossing-event/1 document for one vehicle of ``port_id``/``lane_id``."""
    chance = rng or random.Random(seq)
    closed = closed_at or datetime.now(UTC)
    opened = closed - timedelta(seconds=chance.uniform(3, 12))
    committed = closed + timedelta(milliseconds=chance.randint(1, 20))
    refs = [f"E2806894{chance.getrandbits(64):016X}" for _ in range(cards)]
    return {
        "schema": SCHEMA_V1,
        "event_id": str(uuid7(int(committed.timestamp() * 1e9))),
        "seq": seq,
        "port_id": port_id,
        "lane_id": lane_id,
        "lane_type": "trusted_traveller",
        "opened_at": iso(opened),
        "closed_at": iso(closed),
        "committed_at": iso(committed),
        "opened_by": "loop",
        "closed_by": "departure",
        "vehicle_detected": True,
        "recommendation": chance.choice(["EXPEDITE", "EXPEDITE", "EXPEDITE", "REFER"]),
        "reasons": [],
        "cards": [
            {
                "ref": ref,
                "result": "valid",
                "document_type": "TRUSTED_TRAVELLER_CARD",
                "program": "SENTRI",
                "holder_ref": f"H-{chance.getrandbits(32):08X}",
                "valid_until": iso(closed + timedelta(days=700)),
                "reads": chance.randint(3, 20),
                "best_rssi_dbm": round(chance.uniform(-70, -40), 1),
                "antennas": [1, 2],
                "first_read_at": iso(opened + timedelta(seconds=1)),
            }
            for ref in refs
        ],
        "plate": {
            "match": "exact",
            "text": f"{chance.randint(1, 9)}ABC{chance.randint(100, 999)}",
            "confidence": 0.93,
            "candidates": [],
            "readings": 7,
            "formats": ["US-CA"],
            "registered_jurisdiction": "CA",
            "image_sha256": hashlib.sha256(plate_image).hexdigest() if plate_image else None,
        },
        "cache": {
            "data_version": "v41",
            "imported_at": iso(closed - timedelta(hours=2)),
            "bundle_version": 41,
            "age_s": 7200.0,
        },
        "agent": {"version": "0.1.0"},
    }


def encode(document: dict[str, Any]) -> bytes:
    """Compact key-sorted JSON, as the lane's outbox stores it."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def status_document(
    port_id: str, lane_id: str, *, depth: int = 0, last_seq: int = 0, acked_seq: int = 0,
    faults: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """A status document as agent.status.StatusBoard builds it, with outbox, uplink and cache."""
    now = iso(time.time())
    return {
        "schema": "lane-agent/status/1",
        "lane": {"port_id": port_id, "lane_id": lane_id, "agent": "0.1.0"},
        "time": now,
        "faults": [{"code": code, "message": "fault text", "since": now} for code in faults],
        "last_fault": None,
        "outbox": {
            "depth": depth,
            "oldest_unsent_age_s": 1.5 if depth else None,
            "rows": depth,
            "size_bytes": 4096,
            "max_bytes": 1 << 30,
            "last_seq": {"crossing": last_seq},
            "acked_seq": {"crossing": acked_seq},
            "held_in_memory": 0,
            "journal_rows": 0,
            "failsafe_signal": None,
        },
        "uplink": {"state": "connected", "broker": "127.0.0.1:1883"},
        "cache": {"bundle_version": 41, "age_s": 120.0, "stale": False},
    }


def jpeg(marker: int) -> bytes:
    """Bytes that start like a JPEG (SOI + APP0), distinct per ``marker``."""
    return b"\xff\xd8\xff\xe0" + marker.to_bytes(8, "big") + b"\x00" * 64 + b"\xff\xd9"
