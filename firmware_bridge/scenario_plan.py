"""From a scenario to what the controller sends, and to the truth a run is scored against.

:func:`plan_scenario` lays the scenario out in time: each vehicle's arrival and departure, the
loop edges the controller reports (the union of the vehicles on each loop, then the loop
faults: chatter, dropouts, lost edges, a loop stuck occupied), every card read (its bursts, in
time, with signal strength and antenna) and the faults. :func:`scenario_truth` says which cards
each vehicle carries and which reads belong to no vehicle of the lane, which is what a
benchmark or an outside test suite scores crossings against.

Both are repeatable for a scenario's ``seed``. Should anything happen before time 0 (the first
vehicle's approach reads, a burst placed before its arrival), the whole plan moves later by the
same amount, truth included, so a scenario never has to know where its first event falls.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from firmware_bridge.codec import Fault, Loop, TagRead
from firmware_bridge.scenario import (
    Anchor,
    Burst,
    CardPass,
    CardProfile,
    ControllerClock,
    LoopFaultKind,
    Scenario,
    Shape,
    StrayRead,
    Vehicle,
)

SimEvent = TagRead | Loop | Fault
"""Events a scenario produces."""

MIN_PLAN_RSSI_DBM = -120.0


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """An event and the scenario time (seconds, before ``speed``) at which it happens.

    The message's ``timestamp_ms`` is 0 here: the simulator stamps it with the controller's
    clock for ``at_s`` (:func:`controller_offset_ms`) when it sends it.
    """

    at_s: float
    message: SimEvent


@dataclass(frozen=True, slots=True)
class VehicleTruth:
    """One vehicle as it really was."""

    index: int
    arrive_s: float
    depart_s: float
    cards: tuple[str, ...]
    """Every card in the vehicle, as listed."""
    expected_cards: tuple[str, ...]
    """The cards that are read at least once: what a right crossing for it carries."""
    plate: str | None
    jurisdiction: str | None
    loop_fault: str | None


@dataclass(frozen=True, slots=True)
class ScenarioTruth:
    """Which card is in which vehicle, for scoring a run."""

    vehicles: tuple[VehicleTruth, ...]
    stray_cards: tuple[str, ...]
    """Cards read in the lane that are in none of its vehicles (neighbouring lanes)."""
    shift_s: float
    """How much later than written the plan put everything (0 unless something was early)."""


@dataclass(frozen=True, slots=True)
class _Stay:
    arrive_s: float
    depart_s: float


def timeline(scenario: Scenario) -> list[_Stay]:
    """Arrival and departure of every vehicle, as written (before any shift)."""
    stays = []
    clock = 0.0
    for vehicle in scenario.vehicles:
        arrive = vehicle.arrive_s if vehicle.arrive_s is not None else clock + vehicle.gap_s
        clock = arrive + vehicle.dwell_s
        stays.append(_Stay(arrive, clock))
    return stays


def controller_offset_ms(clock: ControllerClock, at_s: float) -> int:
    """Milliseconds the controller's clock has advanced ``at_s`` into the scenario: drift and
    steps included."""
    offset = round(at_s * 1000.0 * (1.0 + clock.drift_ppm * 1e-6))
    return offset + sum(step.step_ms for step in clock.steps if step.at_s <= at_s)


def plan_scenario(scenario: Scenario) -> list[PlannedEvent]:
    """Every event of the scenario in emission order; repeatable for a given ``seed``."""
    events, _ = _plan(scenario)
    return events


def scenario_truth(scenario: Scenario) -> ScenarioTruth:
    """The vehicles as they were and the cards that were in none of them."""
    _, truth = _plan(scenario)
    return truth


def _plan(scenario: Scenario) -> tuple[list[PlannedEvent], ScenarioTruth]:
    rng = random.Random(scenario.seed)
    stays = timeline(scenario)
    planned: list[PlannedEvent] = []
    expected: list[list[str]] = []
    loop_edges = _loop_edges(scenario, stays, rng)
    edges_by_vehicle: dict[int, list[PlannedEvent]] = {}
    for index, edge in loop_edges:
        edges_by_vehicle.setdefault(index, []).append(edge)
    for index, (vehicle, stay) in enumerate(zip(scenario.vehicles, stays, strict=True)):
        read_refs: list[str] = []
        edges = edges_by_vehicle.get(index, [])
        arrivals = [e for e in edges if isinstance(e.message, Loop) and e.message.occupied]
        others = [e for e in edges if e not in arrivals]
        planned.extend(arrivals)
        for card in vehicle.cards:
            reads = _card_reads(rng, card, vehicle, stay)
            planned.extend(reads)
            if reads:
                read_refs.append(card.epc)
        planned.extend(e for e in others if e.at_s <= stay.depart_s)
        for card in vehicle.cards:
            reads = _straggler_reads(rng, card, stay)
            planned.extend(reads)
            if reads and card.epc not in read_refs:
                read_refs.append(card.epc)
        planned.extend(e for e in others if e.at_s > stay.depart_s)
        expected.append(read_refs)
    stray_cards: list[str] = []
    for stray in scenario.stray_reads:
        planned.extend(_stray_reads(rng, stray, stays))
        if stray.card.epc not in stray_cards:
            stray_cards.append(stray.card.epc)
    for fault in scenario.faults:
        planned.append(PlannedEvent(fault.at_s, Fault(0, fault.code, fault.detail)))
    earliest = min((event.at_s for event in planned), default=0.0)
    shift = -earliest if earliest < 0 else 0.0
    if shift:
        planned = [PlannedEvent(event.at_s + shift, event.message) for event in planned]
    # Stable sort: a loop edge and a read planned for the same instant keep their order above.
    planned.sort(key=lambda event: event.at_s)
    truth = ScenarioTruth(
        vehicles=tuple(
            VehicleTruth(
                index=index,
                arrive_s=stay.arrive_s + shift,
                depart_s=stay.depart_s + shift,
                cards=tuple(dict.fromkeys(card.epc for card in vehicle.cards)),
                expected_cards=tuple(dict.fromkeys(refs)),
                plate=vehicle.plate,
                jurisdiction=vehicle.jurisdiction,
                loop_fault=None if vehicle.loop_fault is None else vehicle.loop_fault.kind.value,
            )
            for index, (vehicle, stay, refs) in enumerate(
                zip(scenario.vehicles, stays, expected, strict=True)
            )
        ),
        stray_cards=tuple(stray_cards),
        shift_s=shift,
    )
    return planned, truth


# --- reads ---


def _read_times(rng: random.Random, start_s: float, span_s: float, count: int) -> list[float]:
    """``count`` times spread over ``span_s``: one per equal slice, never on a slice edge."""
    return [start_s + span_s * (index + rng.uniform(0.05, 0.95)) / count for index in range(count)]


PLATEAU_RAMP_S = (1.5, 1.0)
"""A plateau burst rises over its first 1.5 s and falls over its last second (at most 15 % and
10 % of it): a vehicle rolls onto the loop, stops, and rolls off."""


def _level(
    shape: Shape,
    phase: float,
    duration_s: float,
    weakest: float,
    strongest: float,
    rng: random.Random,
) -> float:
    phase = min(max(phase, 0.0), 1.0)
    span = strongest - weakest
    match shape:
        case Shape.PEAK:
            level = weakest + span * math.sin(math.pi * phase)
        case Shape.PLATEAU:
            rise = min(0.15, PLATEAU_RAMP_S[0] / duration_s) if duration_s else 0.15
            fall = min(0.1, PLATEAU_RAMP_S[1] / duration_s) if duration_s else 0.1
            level = weakest + span * min(1.0, phase / rise, (1.0 - phase) / fall)
        case Shape.STEADY:
            level = rng.uniform(weakest, strongest)
        case Shape.RISING:
            level = weakest + span * phase
        case Shape.FALLING:
            level = strongest - span * phase
    level += rng.uniform(-1.5, 1.5)
    return min(max(level, weakest), strongest)


def _burst_reads(
    rng: random.Random, card: CardPass, burst: Burst, start_s: float
) -> list[PlannedEvent]:
    epc = bytes.fromhex(card.epc)
    tid = bytes.fromhex(card.tid) if card.tid else None
    weakest, strongest = burst.rssi_dbm
    events = []
    for at_s in _read_times(rng, start_s, burst.duration_s, burst.reads):
        phase = (at_s - start_s) / burst.duration_s if burst.duration_s else 0.5
        rssi = _level(burst.shape, phase, burst.duration_s, weakest, strongest, rng)
        read = TagRead(0, rng.choice(burst.antennas), round(rssi * 10), epc, tid)
        events.append(PlannedEvent(at_s, read))
    return events


def _stay_bursts(rng: random.Random, card: CardPass, vehicle: Vehicle) -> list[Burst]:
    """The bursts a card's profile and approach keys stand for, before its explicit ones."""
    weakest, strongest = card.rssi_dbm
    bursts: list[Burst] = []
    if card.approach_reads:
        bursts.append(
            Burst(
                start_s=-card.approach_s,
                duration_s=card.approach_s,
                reads=card.approach_reads,
                rssi_dbm=(max(MIN_PLAN_RSSI_DBM, weakest - 6.0), (weakest + strongest) / 2),
                shape=Shape.RISING,
                antennas=card.antennas,
            )
        )
    match card.profile:
        case CardProfile.NORMAL | CardProfile.SHIELDED:
            shape = Shape.STEADY if card.profile is CardProfile.SHIELDED else card.shape
            bursts.append(
                Burst(
                    0.0,
                    vehicle.dwell_s,
                    card.reads,
                    Anchor.ARRIVAL,
                    card.rssi_dbm,
                    shape,
                    card.antennas,
                )
            )
        case CardProfile.ONCE:
            at = vehicle.dwell_s * rng.uniform(0.05, 0.95)
            bursts.append(
                Burst(at, 0.0, 1, Anchor.ARRIVAL, card.rssi_dbm, card.shape, card.antennas)
            )
        case CardProfile.NEVER:
            pass
    return bursts + list(card.bursts)


def _anchor_time(anchor: Anchor, stay: _Stay) -> float:
    return stay.arrive_s if anchor is Anchor.ARRIVAL else stay.depart_s


def _card_reads(
    rng: random.Random, card: CardPass, vehicle: Vehicle, stay: _Stay
) -> list[PlannedEvent]:
    events: list[PlannedEvent] = []
    for burst in _stay_bursts(rng, card, vehicle):
        events += _burst_reads(rng, card, burst, _anchor_time(burst.anchor, stay) + burst.start_s)
    return events


def _straggler_reads(rng: random.Random, card: CardPass, stay: _Stay) -> list[PlannedEvent]:
    """Reads after the loop clears, fading from the card's weakest as the vehicle drives off."""
    if not card.straggler_reads:
        return []
    weakest = card.rssi_dbm[0]
    burst = Burst(
        start_s=card.straggler_delay_s,
        duration_s=card.straggler_s,
        reads=card.straggler_reads,
        anchor=Anchor.DEPARTURE,
        rssi_dbm=(max(MIN_PLAN_RSSI_DBM, weakest - 8.0), weakest),
        shape=Shape.FALLING,
        antennas=card.antennas,
    )
    return _burst_reads(rng, card, burst, stay.depart_s + burst.start_s)


def _stray_reads(rng: random.Random, stray: StrayRead, stays: list[_Stay]) -> list[PlannedEvent]:
    start = stray.at_s
    if stray.vehicle is not None:
        start = _anchor_time(stray.anchor, stays[stray.vehicle]) + stray.at_s
    card = stray.card
    events: list[PlannedEvent] = []
    if card.profile is not CardProfile.NEVER:
        burst = Burst(
            start_s=0.0,
            duration_s=stray.duration_s,
            reads=1 if card.profile is CardProfile.ONCE else card.reads,
            rssi_dbm=card.rssi_dbm,
            shape=Shape.STEADY if card.profile is CardProfile.SHIELDED else card.shape,
            antennas=card.antennas,
        )
        events += _burst_reads(rng, card, burst, start)
    for burst in card.bursts:
        events += _burst_reads(rng, card, burst, start + burst.start_s)
    return events


# --- the loop ---


def _loop_edges(
    scenario: Scenario, stays: list[_Stay], rng: random.Random
) -> list[tuple[int, PlannedEvent]]:
    """Loop edges as ``(vehicle index, event)``: the union of the vehicles on each loop (a merged
    occupation's edges belong to its first and last vehicle), then each vehicle's loop fault."""
    by_loop: dict[int, list[tuple[float, float, int]]] = {}
    for index, (vehicle, stay) in enumerate(zip(scenario.vehicles, stays, strict=True)):
        fault = vehicle.loop_fault
        if fault is not None and fault.kind is LoopFaultKind.UNDETECTED:
            continue
        end = stay.depart_s
        if fault is not None and fault.kind is LoopFaultKind.STUCK_OCCUPIED:
            end = max(end, stay.arrive_s + fault.duration_s)
        by_loop.setdefault(vehicle.loop_id, []).append((stay.arrive_s, end, index))
    edges: list[tuple[int, float, bool, int]] = []  # (loop, at, occupied, owner)
    for loop_id, intervals in by_loop.items():
        for start, end, first, last in _merged(intervals):
            edges.append((loop_id, start, True, first))
            edges.append((loop_id, end, False, last))
    for index, (vehicle, stay) in enumerate(zip(scenario.vehicles, stays, strict=True)):
        fault = vehicle.loop_fault
        if fault is None:
            continue
        loop_id = vehicle.loop_id
        match fault.kind:
            case LoopFaultKind.MISSING_CLEAR:
                edges = [e for e in edges if not (e[0] == loop_id and not e[2] and e[3] == index)]
            case LoopFaultKind.MISSING_OCCUPIED:
                edges = [e for e in edges if not (e[0] == loop_id and e[2] and e[3] == index)]
            case LoopFaultKind.CHATTER:
                edges += [
                    (loop_id, at, occupied, index)
                    for at, occupied in _chatter(rng, fault.where, fault.blips, fault.blip_s, stay)
                ]
            case LoopFaultKind.DROPOUT:
                mid = fault.at_s if fault.at_s is not None else (stay.depart_s - stay.arrive_s) / 2
                clear_at = min(stay.arrive_s + mid, stay.depart_s)
                length = rng.uniform(*fault.blip_s)
                reoccupied = min(clear_at + length, stay.depart_s)
                if reoccupied < stay.depart_s:
                    edges += [(loop_id, clear_at, False, index), (loop_id, reoccupied, True, index)]
            case _:
                pass
    return [
        (owner, PlannedEvent(at, Loop(0, loop_id, occupied)))
        for loop_id, at, occupied, owner in sorted(edges, key=lambda e: (e[1], not e[2]))
    ]


def _merged(intervals: Iterable[tuple[float, float, int]]) -> list[tuple[float, float, int, int]]:
    """Overlapping or touching occupations as one: (start, end, first owner, last owner)."""
    merged: list[list[float]] = []
    owners: list[list[int]] = []
    for start, end, index in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            owners[-1][1] = index
        else:
            merged.append([start, end])
            owners.append([index, index])
    return [(m[0], m[1], o[0], o[1]) for m, o in zip(merged, owners, strict=True)]


def _chatter(
    rng: random.Random,
    where: Anchor,
    blips: int,
    blip_s: tuple[float, float],
    stay: _Stay,
) -> list[tuple[float, bool]]:
    """Short clears right after the arrival or right before the departure, inside the stay."""
    edges: list[tuple[float, bool]] = []
    if where is Anchor.ARRIVAL:
        at = stay.arrive_s
        for _ in range(blips):
            at += rng.uniform(0.05, 0.4)
            length = rng.uniform(*blip_s)
            if at + length >= stay.depart_s:
                break
            edges += [(at, False), (at + length, True)]
            at += length
    else:
        at = stay.depart_s
        for _ in range(blips):
            at -= rng.uniform(0.05, 0.4)
            length = rng.uniform(*blip_s)
            if at - length <= stay.arrive_s:
                break
            edges += [(at - length, False), (at, True)]
            at -= length
    return edges
