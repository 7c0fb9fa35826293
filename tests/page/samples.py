"""Events shaped as agent/wire builds them (live crossing, crossing), for the page's tests."""

from __future__ import annotations

from typing import Any

CARD_REF = "E2801160600002084A1B2C3D"
HOLDER = "H-SECRET-0042"


def card(
    ref: str = CARD_REF, *, result: str = "valid", association: str = "attached"
) -> dict[str, Any]:
    return {
        "ref": ref,
        "result": result,
        "document_type": "CARD",
        "program": "SENTRI",
        "holder_ref": HOLDER,
        "valid_until": "2030-01-01T00:00:00.000Z",
        "reads": 7,
        "best_rssi_dbm": -48.5,
        "antennas": [1, 2],
        "first_read_at": "2026-12-07T04:00:00.000Z",
        "association": association,
        "evidence": {"rule": "steady_at_booth", "reads": 7},
    }


def live_event(
    crossing_id: str = "c-1",
    *,
    phase: str = "opened",
    revision: int = 1,
    recommendation: str = "EXPEDITE",
    cards: list[dict[str, Any]] | None = None,
    plate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": "lane-agent/live-crossing/1",
        "crossing_id": crossing_id,
        "port_id": "TEST",
        "lane_id": "L09",
        "lane_type": "trusted_traveller",
        "phase": phase,
        "revision": revision,
        "changes": ["opened"],
        "provisional": phase != "closed",
        "pending": ["vehicle_at_booth"] if phase != "closed" else [],
        "opened_at": "2026-12-07T04:00:00.000Z",
        "as_of": "2026-12-07T04:00:01.000Z",
        "closed_at": None,
        "published_at": "2026-12-07T04:00:01.001Z",
        "opened_by": "loop",
        "closed_by": None,
        "vehicle_detected": True,
        "recommendation": recommendation,
        "reasons": [] if recommendation == "EXPEDITE" else ["UNKNOWN_CARD"],
        "cards": [card()] if cards is None else cards,
        "plate": plate,
        "cache": {"data_version": "v1", "bundle_version": None, "age_s": 3.0},
        "agent": {"version": "0.0.0"},
    }


def crossing_event(
    crossing_id: str = "c-1",
    *,
    seq: int = 1,
    recommendation: str = "REFER",
    reasons: tuple[str, ...] = ("UNKNOWN_CARD",),
    cards: list[dict[str, Any]] | None = None,
    set_aside: list[dict[str, Any]] | None = None,
    plate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": "lane-agent/crossing-event/2",
        "event_id": "e-1",
        "crossing_id": crossing_id,
        "seq": seq,
        "port_id": "TEST",
        "lane_id": "L09",
        "opened_at": "2026-12-07T04:00:00.000Z",
        "closed_at": "2026-12-07T04:00:05.000Z",
        "closed_by": "departure",
        "vehicle_detected": True,
        "recommendation": recommendation,
        "reasons": list(reasons),
        "cards": [card(result="unknown")] if cards is None else cards,
        "set_aside": [] if set_aside is None else set_aside,
        "plate": plate,
    }
