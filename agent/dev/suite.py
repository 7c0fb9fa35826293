"""Scenario suites on disk: the lane situations of :mod:`firmware_bridge.situations`, written as
files a technician or an outside test suite can play with ``lane-agent simulate`` and score.

``write_suite`` writes, per situation, the scenario (format 2, its truth inside: every card
listed under a vehicle is in it) and one ``credentials.ndjson`` that ``lane-agent cache import``
loads: every card the suite reads is a valid SENTRI credential, the cards of other lanes
included, so a card wrongly attached to a vehicle earns an EXPEDITE a scorer can catch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from firmware_bridge.scenario import Scenario
from firmware_bridge.scenario_dump import dump_scenario
from firmware_bridge.situations import SITUATIONS, generate_situation, suite_cards

CREDENTIALS_FILE = "credentials.ndjson"


@dataclass(frozen=True, slots=True)
class SuiteFile:
    """One scenario of a suite on disk."""

    situation: str
    path: Path
    scenario: Scenario


def credential_records(
    scenarios: Iterable[Scenario], now: datetime | None = None
) -> list[dict[str, object]]:
    """Import records (the NDJSON shape) for every card the scenarios read: valid SENTRI cards,
    each registered to the plates of the vehicles it rides in."""
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    plates: dict[str, list[dict[str, str]]] = {}
    order: list[str] = []
    for scenario in scenarios:
        for ref in suite_cards(scenario):
            if ref not in plates:
                plates[ref] = []
                order.append(ref)
        for vehicle in scenario.vehicles:
            if vehicle.plate is None:
                continue
            registered = {
                "plate": vehicle.plate,
                "jurisdiction": vehicle.jurisdiction or "CA",
            }
            for card in vehicle.cards:
                if registered not in plates[card.epc]:
                    plates[card.epc].append(registered)
    return [
        {
            "ref": ref,
            "document_type": "TRUSTED_TRAVELLER_CARD",
            "program": "SENTRI",
            "status": "ACTIVE",
            "valid_from": (moment - timedelta(days=365)).isoformat(),
            "valid_until": (moment + timedelta(days=3 * 365)).isoformat(),
            "holder_ref": f"H-SUITE-{index:06d}",
            "vehicles": plates[ref][:16],
        }
        for index, ref in enumerate(order)
    ]


def write_suite(
    directory: Path,
    *,
    vehicles: int,
    seed: int,
    situations: Sequence[str] = tuple(SITUATIONS),
) -> list[SuiteFile]:
    """Write one scenario per situation and the credentials they need; returns what it wrote."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for situation in situations:
        scenario = generate_situation(situation, vehicles, seed)
        path = directory / f"{situation}.toml"
        path.write_text(dump_scenario(scenario), encoding="utf-8")
        written.append(SuiteFile(situation, path, scenario))
    records = credential_records(entry.scenario for entry in written)
    with (directory / CREDENTIALS_FILE).open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return written
