"""Scoring crossings against a scenario's truth: was each vehicle one right crossing?

Used by ``bench/bench_fusion.py`` and the tests, on crossings from the lane core run in-process
(:func:`replay_through_core`) or received from a real agent over MQTT (:func:`from_event`).
Crossings are placed against vehicles by time: a crossing belongs to the vehicle whose stay it
overlaps most; one that covers half or more of the stays of two vehicles merged them.

A vehicle is **correct** when exactly one crossing belongs to it, that crossing merged nothing,
and it carries exactly the vehicle's cards that were read. A **wrong EXPEDITE** is an EXPEDITE on
a crossing that carries a card not in its vehicle, or on a crossing that belongs to no vehicle.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.lane.correlator import CorrelationSettings
from agent.lane.credentials import Credential
from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, LoopChanged, TagRead, Tick
from agent.lane.policy import Decision, LanePolicy
from firmware_bridge import codec
from firmware_bridge.scenario import Scenario
from firmware_bridge.scenario_plan import ScenarioTruth, VehicleTruth, plan_scenario

MERGE_SHARE = 0.5
"""A crossing covering this share of two vehicles' stays merged them."""


@dataclass(frozen=True, slots=True)
class ScoredCrossing:
    """What scoring needs of one crossing, its times in scenario seconds."""

    opened_s: float
    closed_s: float
    cards: frozenset[str]
    """Cards it carries (attached or uncertain)."""
    recommendation: str
    vehicle_detected: bool = True


@dataclass(slots=True)
class SituationScore:
    """One row of the fusion benchmark."""

    vehicles: int = 0
    correct: int = 0
    split: int = 0
    merged: int = 0
    extra_cards: int = 0
    missing_cards: int = 0
    lost: int = 0
    no_vehicle_crossings: int = 0
    wrong_expedite: int = 0
    crossings: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: SituationScore) -> None:
        for name in (
            "vehicles",
            "correct",
            "split",
            "merged",
            "extra_cards",
            "missing_cards",
            "lost",
            "no_vehicle_crossings",
            "wrong_expedite",
            "crossings",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)

    @property
    def correct_share(self) -> float:
        return self.correct / self.vehicles if self.vehicles else 1.0


def _overlap(crossing: ScoredCrossing, vehicle: VehicleTruth) -> float:
    return max(
        0.0, min(crossing.closed_s, vehicle.depart_s) - max(crossing.opened_s, vehicle.arrive_s)
    )


def score(truth: ScenarioTruth, crossings: Sequence[ScoredCrossing]) -> SituationScore:
    """Score ``crossings`` against ``truth`` (see the module docstring)."""
    result = SituationScore(vehicles=len(truth.vehicles), crossings=len(crossings))
    owned: dict[int, list[ScoredCrossing]] = {v.index: [] for v in truth.vehicles}
    merged_into: set[int] = set()
    for crossing in crossings:
        overlaps = [(_overlap(crossing, v), v) for v in truth.vehicles]
        best_overlap, best = max(overlaps, key=lambda pair: pair[0], default=(0.0, None))
        covered = [
            v
            for overlap, v in overlaps
            if overlap >= MERGE_SHARE * max(v.depart_s - v.arrive_s, 1e-9)
        ]
        if best is None or best_overlap <= 0:
            result.no_vehicle_crossings += 1
            result.failures.append(
                f"crossing {crossing.opened_s:.1f}-{crossing.closed_s:.1f} s belongs to no "
                f"vehicle ({len(crossing.cards)} cards, {crossing.recommendation})"
            )
            if crossing.recommendation == "EXPEDITE":
                result.wrong_expedite += 1
            continue
        if len(covered) >= 2:
            merged_into.update(v.index for v in covered)
        owned[best.index].append(crossing)
        if crossing.recommendation == "EXPEDITE" and not crossing.cards <= set(best.cards):
            result.wrong_expedite += 1
            result.failures.append(
                f"vehicle {best.index}: EXPEDITE carrying "
                f"{len(crossing.cards - set(best.cards))} card(s) not in it"
            )
    for vehicle in truth.vehicles:
        mine = owned[vehicle.index]
        carried: set[str] = set()
        for crossing in mine:
            carried |= crossing.cards
        expected = set(vehicle.expected_cards)
        result.extra_cards += len(carried - expected)
        result.missing_cards += len(expected - carried)
        label = f"vehicle {vehicle.index} ({vehicle.loop_fault or 'no loop fault'})"
        if vehicle.index in merged_into:
            result.merged += 1
            result.failures.append(f"{label}: merged with another vehicle")
        elif not mine:
            result.lost += 1
            result.failures.append(f"{label}: no crossing")
        elif len(mine) > 1:
            result.split += 1
            result.failures.append(f"{label}: split into {len(mine)} crossings")
        elif carried == expected:
            result.correct += 1
        else:
            result.failures.append(
                f"{label}: {len(carried - expected)} extra, {len(expected - carried)} missing "
                f"card(s)"
            )
    return result


def from_decision(decision: Decision, origin: float = 0.0) -> ScoredCrossing:
    """A decision of the core (lane times minus ``origin`` are scenario seconds)."""
    crossing = decision.crossing
    return ScoredCrossing(
        opened_s=crossing.opened_at - origin,
        closed_s=crossing.closed_at - origin,
        cards=frozenset(match.observation.ref for match in decision.matches),
        recommendation=decision.recommendation.value,
        vehicle_detected=crossing.vehicle_detected,
    )


def from_event(event: Mapping[str, Any], wall_origin: float, speed: float) -> ScoredCrossing:
    """A crossing event as received over MQTT; its times are the agent's wall clock."""

    def seconds(text: str) -> float:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (moment.timestamp() - wall_origin) * speed

    return ScoredCrossing(
        opened_s=seconds(str(event["opened_at"])),
        closed_s=seconds(str(event["closed_at"])),
        cards=frozenset(str(card["ref"]) for card in event["cards"]),
        recommendation=str(event["recommendation"]),
        vehicle_detected=bool(event["vehicle_detected"]),
    )


def lane_inputs(scenario: Scenario, origin: float = 0.0) -> list[LaneInput]:
    """The scenario's controller events as lane inputs at ``origin`` + scenario time (faults
    left out)."""
    inputs: list[LaneInput] = []
    for planned in plan_scenario(scenario):
        message = planned.message
        if isinstance(message, codec.TagRead):
            inputs.append(
                TagRead(
                    at=origin + planned.at_s,
                    epc=message.epc_hex,
                    antenna=message.antenna,
                    rssi_dbm=message.rssi_deci_dbm / 10.0,
                )
            )
        elif isinstance(message, codec.Loop):
            inputs.append(
                LoopChanged(
                    at=origin + planned.at_s, loop_id=message.loop_id, occupied=message.occupied
                )
            )
    return inputs


def replay_through_core(
    scenario: Scenario,
    correlation: CorrelationSettings,
    policy: LanePolicy,
    lookup: Callable[[str], Credential | None],
    *,
    origin: float = 0.0,
    tick_s: float = 0.25,
) -> list[Decision]:
    """Play the scenario through the lane core in-process, with ticks as the service gives them
    (every ``tick_s`` and at each deadline), and close what is open at the end."""
    engine = LaneEngine(correlation, policy, lookup)
    decisions: list[Decision] = []
    now = origin
    for lane_input in lane_inputs(scenario, origin):
        decisions += _advance(engine, now, lane_input.at, tick_s)
        now = lane_input.at
        decisions += engine.handle(lane_input)
    end = now + correlation.max_open_s + 60.0
    decisions += _advance(engine, now, end, tick_s * 20)
    decisions += engine.shutdown(end)
    return decisions


def _advance(engine: LaneEngine, start: float, until: float, tick_s: float) -> list[Decision]:
    decisions: list[Decision] = []
    at = start
    while True:
        deadline = engine.correlator.next_deadline()
        step = at + tick_s
        if deadline is not None and at < deadline < step:
            step = deadline
        if step >= until:
            return decisions
        decisions += engine.handle(Tick(step))
        at = step


def valid_credentials(refs: Iterable[str], at: dt.datetime) -> dict[str, Credential]:
    """A valid SENTRI credential for every ref (what generated suites put in the cache)."""
    from agent.lane.credentials import CredentialStatus, DocumentType, Program

    return {
        ref: Credential(
            ref=ref,
            document_type=DocumentType.TRUSTED_TRAVELLER_CARD,
            program=Program.SENTRI,
            status=CredentialStatus.ACTIVE,
            valid_from=at - dt.timedelta(days=365),
            valid_until=at + dt.timedelta(days=3650),
            holder_ref=f"H-SUITE-{index:05d}",
        )
        for index, ref in enumerate(refs)
    }
