"""What the page shows of each event: the booth's view, with card numbers masked.

The page serves the booth and the technician, so it gets what they act on and nothing more:

* card references are shown as their last four characters (``••••A1B2``): enough to tell two
  cards of one vehicle apart and to say which card a holder hands over, not enough to copy one;
* the holder reference (central's key to the holder's record) is never shown: the officer
  pulls the holder up in central's systems, not here;
* the plate text and its crop are shown: the officer compares them with the vehicle in front of
  the booth, and both are on the booth's own screen anyway;
* tag reads carry the masked card, the antenna, the signal strength and the time.

These views are built on the engine thread, once per event, and never changed afterwards: the
server thread reads them without a lock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent.status import iso_time

MASK = "\u2022"
SHOWN_TAIL = 4
"""Characters of a card reference the page shows."""


def mask_ref(ref: object) -> str:
    """``ref`` with all but its last ``SHOWN_TAIL`` characters hidden (at most four dots shown:
    the length of a card number is no business of the page)."""
    text = str(ref or "")
    if len(text) <= SHOWN_TAIL:
        return MASK * 4
    return MASK * 4 + text[-SHOWN_TAIL:]


def _card(card: Mapping[str, Any]) -> dict[str, Any]:
    evidence = card.get("evidence") or {}
    return {
        "ref": mask_ref(card.get("ref")),
        "result": card.get("result"),
        "program": card.get("program"),
        "document_type": card.get("document_type"),
        "valid_until": card.get("valid_until"),
        "association": card.get("association"),
        "rule": evidence.get("rule"),
        "reads": card.get("reads"),
        "best_rssi_dbm": card.get("best_rssi_dbm"),
        "antennas": list(card.get("antennas") or ()),
    }


def _set_aside(card: Mapping[str, Any]) -> dict[str, Any]:
    evidence = card.get("evidence") or {}
    return {
        "ref": mask_ref(card.get("ref")),
        "association": card.get("association"),
        "rule": evidence.get("rule"),
    }


def _plate(plate: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not plate:
        return None
    return {
        "text": plate.get("text"),
        "confidence": plate.get("confidence"),
        "match": plate.get("match"),
        "registered_jurisdiction": plate.get("registered_jurisdiction"),
        "readings": plate.get("readings"),
    }


def _list(value: object) -> list[Any]:
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []


def live_view(event: Mapping[str, Any], *, has_crop: bool) -> dict[str, Any]:
    """The vehicle at the booth, from a live crossing event (agent/wire/live_event.py)."""
    return {
        "crossing_id": event.get("crossing_id"),
        "phase": event.get("phase"),
        "revision": event.get("revision"),
        "changes": _list(event.get("changes")),
        "provisional": event.get("provisional"),
        "pending": _list(event.get("pending")),
        "opened_at": event.get("opened_at"),
        "as_of": event.get("as_of"),
        "closed_at": event.get("closed_at"),
        "vehicle_detected": event.get("vehicle_detected"),
        "recommendation": event.get("recommendation"),
        "reasons": _list(event.get("reasons")),
        "cards": [_card(card) for card in _list(event.get("cards"))],
        "plate": _plate(event.get("plate")),
        "plate_crop": has_crop,
        "cache_age_s": (event.get("cache") or {}).get("age_s"),
    }


def crossing_view(event: Mapping[str, Any], *, has_crop: bool) -> dict[str, Any]:
    """A stored crossing, from the crossing event (agent/wire/crossing_event.py)."""
    return {
        "crossing_id": event.get("crossing_id"),
        "seq": event.get("seq"),
        "opened_at": event.get("opened_at"),
        "closed_at": event.get("closed_at"),
        "closed_by": event.get("closed_by"),
        "vehicle_detected": event.get("vehicle_detected"),
        "recommendation": event.get("recommendation"),
        "reasons": _list(event.get("reasons")),
        "cards": [_card(card) for card in _list(event.get("cards"))],
        "set_aside": [_set_aside(card) for card in _list(event.get("set_aside"))],
        "plate": _plate(event.get("plate")),
        "plate_crop": has_crop,
    }


def read_view(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One tag read: masked card, antenna, signal strength, time (the agent's clock)."""
    at = summary.get("at")
    rssi = summary.get("rssi_dbm")
    return {
        "ref": mask_ref(summary.get("ref")),
        "antenna": summary.get("antenna"),
        "rssi_dbm": None if rssi is None else round(float(rssi), 1),
        "at": iso_time(float(at)) if isinstance(at, int | float) else at,
    }
