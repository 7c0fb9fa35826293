"""Scenario format 2: reads placed anywhere, loop and clock faults, the truth a scenario carries,
and the seeded situation suites; format 1 files still read and play."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.codec import Loop, TagRead
from firmware_bridge.scenario import (
    Anchor,
    Burst,
    CardPass,
    CardProfile,
    ClockStep,
    ControllerClock,
    LoopFault,
    LoopFaultKind,
    Scenario,
    ScenarioError,
    Shape,
    StrayRead,
    Vehicle,
    load_scenario,
    parse_scenario,
)
from firmware_bridge.scenario_dump import dump_scenario
from firmware_bridge.scenario_plan import (
    controller_offset_ms,
    plan_scenario,
    scenario_truth,
)
from firmware_bridge.situations import SITUATIONS, generate_situation, suite_cards

SCENARIOS = Path(__file__).parents[2] / "config" / "scenarios"
CARD = "E2801160600002000000A001"
OTHER = "E2801160600002000000B002"


def loop_edges(scenario: Scenario) -> list[tuple[float, bool]]:
    return [
        (round(p.at_s, 3), p.message.occupied)
        for p in plan_scenario(scenario)
        if isinstance(p.message, Loop)
    ]


def reads_of(scenario: Scenario, epc: str) -> list[tuple[float, float, int]]:
    return [
        (p.at_s, p.message.rssi_deci_dbm / 10, p.message.antenna)
        for p in plan_scenario(scenario)
        if isinstance(p.message, TagRead) and p.message.epc_hex == epc
    ]


def one(vehicle: Vehicle, **scenario: object) -> Scenario:
    return Scenario("t", (vehicle,), format=2, **scenario)  # type: ignore[arg-type]


# --- reading and writing -------------------------------------------------------------------


def test_a_format_2_file_reads_every_key() -> None:
    text = """
[scenario]
format = 2
name = "all keys"

[clock]
drift_ppm = 150.0

[[clock.steps]]
at_s = 30.0
step_ms = -2000

[[vehicles]]
arrive_s = 5.0
dwell_s = 20.0

[vehicles.loop_fault]
kind = "chatter"
where = "departure"
blips = 4
blip_s = [0.1, 0.2]

[[vehicles.cards]]
epc = "e2801160600002000000a001"
profile = "shielded"
rssi_dbm = [-82.0, -76.0]
reads = 30
approach_reads = 3
approach_s = 2.0
straggler_reads = 2
straggler_delay_s = 0.5
straggler_s = 1.5

[[vehicles.cards.bursts]]
anchor = "departure"
start_s = 3.0
duration_s = 1.0
reads = 2
shape = "falling"
antennas = [3]

[[stray_reads]]
vehicle = 0
anchor = "arrival"
start_s = 4.0
duration_s = 1.0
epc = "E2801160600002000000B002"
shape = "rising"
"""
    scenario = parse_scenario(text)
    assert scenario.format == 2
    assert scenario.clock == ControllerClock(150.0, (ClockStep(30.0, -2000),))
    (vehicle,) = scenario.vehicles
    assert vehicle.arrive_s == 5.0
    assert vehicle.loop_fault == LoopFault(
        LoopFaultKind.CHATTER, where=Anchor.DEPARTURE, blips=4, blip_s=(0.1, 0.2)
    )
    card = vehicle.cards[0]
    assert (card.epc, card.profile, card.approach_reads, card.straggler_delay_s) == (
        CARD,
        CardProfile.SHIELDED,
        3,
        0.5,
    )
    assert card.bursts == (
        Burst(3.0, 1.0, 2, Anchor.DEPARTURE, (-70.0, -50.0), Shape.FALLING, (3,)),
    )
    (stray,) = scenario.stray_reads
    assert (stray.vehicle, stray.anchor, stray.at_s, stray.card.shape) == (
        0,
        Anchor.ARRIVAL,
        4.0,
        Shape.RISING,
    )
    assert parse_scenario(dump_scenario(scenario)) == scenario


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[scenario]\nname = "t"\n\n[[vehicles]]\ndwell_s = 1.0\n\n[vehicles.loop_fault]\n'
            'kind = "chatter"\n',
            "lane.toml: vehicles[0].loop_fault: unknown key (a format 2 key: set format = 2 in "
            "[scenario]) (expected one of: cards, dwell_s, gap_s, jurisdiction, loop_id, plate)",
        ),
        (
            '[scenario]\nformat = 2\nname = "t"\n\n[[vehicles]]\ndwell_s = 1.0\n\n'
            '[vehicles.loop_fault]\nkind = "melted"\n',
            "lane.toml: vehicles[0].loop_fault.kind = 'melted': expected one of chatter, "
            "dropout, missing_clear, missing_occupied, undetected, stuck_occupied",
        ),
        (
            '[scenario]\nformat = 2\nname = "t"\n\n[[vehicles]]\ndwell_s = 10.0\n\n'
            "[[vehicles]]\narrive_s = 5.0\ndwell_s = 1.0\n",
            "lane.toml: vehicles[1].arrive_s = 5.0: expected no earlier than the previous "
            "vehicle's departure at 12 s",
        ),
        (
            '[scenario]\nformat = 2\nname = "t"\n\n[[vehicles]]\ndwell_s = 1.0\ngap_s = 1.0\n'
            "arrive_s = 2.0\n",
            "lane.toml: vehicles[0].gap_s = 1.0: give gap_s or arrive_s, not both",
        ),
        (
            '[scenario]\nformat = 2\nname = "t"\n\n[[vehicles]]\ndwell_s = 1.0\n\n'
            '[[vehicles.cards]]\nepc = "E280"\n\n[[vehicles.cards.bursts]]\nreads = 2\n',
            "lane.toml: vehicles[0].cards[0].bursts[0].start_s: required key is missing",
        ),
        (
            '[scenario]\nformat = 3\nname = "t"\n',
            "lane.toml: scenario.format = 3: expected an integer 1..2",
        ),
    ],
)
def test_format_2_errors_name_the_file_the_key_and_the_value(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "lane.toml")
    assert str(caught.value) == message


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_format_1_files_still_read_plan_and_name_every_vehicles_cards(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.format == 1
    truth = scenario_truth(scenario)
    assert len(truth.vehicles) == len(scenario.vehicles)
    for vehicle, told in zip(scenario.vehicles, truth.vehicles, strict=True):
        assert set(told.expected_cards) == {card.epc for card in vehicle.cards}
    assert dump_scenario(scenario).startswith("[scenario]\nname")  # still written as format 1


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(list(SITUATIONS)), st.integers(1, 6), st.integers(0, 10**6))
def test_generated_situations_are_repeatable_and_survive_a_write_and_read_back(
    situation: str, vehicles: int, seed: int
) -> None:
    scenario = generate_situation(situation, vehicles, seed)
    assert scenario == generate_situation(situation, vehicles, seed)
    assert parse_scenario(dump_scenario(scenario)) == scenario
    assert len(scenario.vehicles) >= vehicles


# --- the plan ---------------------------------------------------------------------------------


def test_bursts_place_reads_relative_to_arrival_and_departure() -> None:
    card = CardPass(
        CARD,
        profile=CardProfile.NEVER,
        bursts=(
            Burst(-4.0, 2.0, 4, Anchor.ARRIVAL, (-82.0, -74.0), Shape.RISING, (3,)),
            Burst(5.0, 1.0, 2, Anchor.DEPARTURE, (-80.0, -70.0), Shape.FALLING, (2,)),
        ),
    )
    scenario = one(Vehicle(dwell_s=10.0, arrive_s=20.0, cards=(card,)))
    reads = reads_of(scenario, CARD)
    assert [round(at) for at, _, _ in reads][:4] == [16, 17, 17, 18]
    approach = [rssi for _, rssi, _ in reads[:4]]
    assert approach == sorted(approach), "rising"
    assert all(antenna == 3 for _, _, antenna in reads[:4])
    assert all(35.0 <= at <= 36.0 for at, _, _ in reads[4:])
    assert loop_edges(scenario) == [(20.0, True), (30.0, False)]


def test_profiles_once_shielded_and_never() -> None:
    cards = (
        CardPass(CARD, profile=CardProfile.ONCE, reads=9),
        CardPass(OTHER, profile=CardProfile.SHIELDED, reads=12, rssi_dbm=(-81.0, -77.0)),
        CardPass("E2801160600002000000C003", profile=CardProfile.NEVER),
    )
    scenario = one(Vehicle(dwell_s=20.0, gap_s=1.0, cards=cards))
    assert len(reads_of(scenario, CARD)) == 1
    shielded = reads_of(scenario, OTHER)
    assert len(shielded) == 12
    assert all(-81.0 <= rssi <= -77.0 for _, rssi, _ in shielded)
    (truth,) = scenario_truth(scenario).vehicles
    assert truth.cards == tuple(card.epc for card in cards)
    assert truth.expected_cards == (CARD, OTHER), "a card never read is not expected"


@pytest.mark.parametrize(
    ("fault", "edges"),
    [
        (LoopFault(LoopFaultKind.MISSING_CLEAR), [(10.0, True)]),
        (LoopFault(LoopFaultKind.MISSING_OCCUPIED), [(20.0, False)]),
        (LoopFault(LoopFaultKind.UNDETECTED), []),
        (LoopFault(LoopFaultKind.STUCK_OCCUPIED, duration_s=40.0), [(10.0, True), (50.0, False)]),
        (
            LoopFault(LoopFaultKind.DROPOUT, at_s=4.0, blip_s=(0.5, 0.5)),
            [(10.0, True), (14.0, False), (14.5, True), (20.0, False)],
        ),
    ],
)
def test_loop_faults_change_the_edges_the_controller_reports(
    fault: LoopFault, edges: list[tuple[float, bool]]
) -> None:
    assert loop_edges(one(Vehicle(dwell_s=10.0, arrive_s=10.0, loop_fault=fault))) == edges


@pytest.mark.parametrize("where", [Anchor.ARRIVAL, Anchor.DEPARTURE])
def test_chatter_toggles_the_loop_near_the_arrival_or_the_departure(where: Anchor) -> None:
    fault = LoopFault(LoopFaultKind.CHATTER, where=where, blips=3, blip_s=(0.1, 0.2))
    edges = loop_edges(one(Vehicle(dwell_s=10.0, arrive_s=10.0, loop_fault=fault)))
    assert edges[0] == (10.0, True)
    assert edges[-1] == (20.0, False)
    assert len(edges) == 2 + 2 * 3
    blips = edges[1:-1]
    assert all(10.0 < at < 20.0 for at, _ in blips)
    near = 10.0 if where is Anchor.ARRIVAL else 20.0
    assert all(abs(at - near) < 2.5 for at, _ in blips)
    assert [occupied for _, occupied in blips] == [False, True] * 3


def test_a_tailgater_with_no_gap_makes_one_occupation_of_two_vehicles() -> None:
    scenario = Scenario(
        "t", (Vehicle(dwell_s=5.0, gap_s=1.0), Vehicle(dwell_s=5.0, gap_s=0.0)), format=2
    )
    assert loop_edges(scenario) == [(1.0, True), (11.0, False)]
    assert [(v.arrive_s, v.depart_s) for v in scenario_truth(scenario).vehicles] == [
        (1.0, 6.0),
        (6.0, 11.0),
    ]


def test_a_stray_read_placed_by_a_vehicle_and_the_truth_says_it_is_no_ones() -> None:
    stray = StrayRead(3.0, CardPass(OTHER, reads=2), 0.5, vehicle=0, anchor=Anchor.DEPARTURE)
    scenario = one(
        Vehicle(dwell_s=10.0, arrive_s=5.0, cards=(CardPass(CARD),)), stray_reads=(stray,)
    )
    assert all(18.0 <= at <= 18.5 for at, _, _ in reads_of(scenario, OTHER))
    truth = scenario_truth(scenario)
    assert truth.stray_cards == (OTHER,)
    assert truth.vehicles[0].expected_cards == (CARD,)


def test_everything_before_time_zero_moves_the_whole_scenario_later() -> None:
    card = CardPass(CARD, approach_reads=3, approach_s=4.0)
    scenario = one(Vehicle(dwell_s=5.0, gap_s=1.0, cards=(card,)))
    plan = plan_scenario(scenario)
    assert plan[0].at_s >= 0.0
    (truth,) = scenario_truth(scenario).vehicles
    assert 0.0 < scenario_truth(scenario).shift_s <= 3.0  # the first approach read is at 0
    assert truth.arrive_s == pytest.approx(1.0 + scenario_truth(scenario).shift_s)


def test_the_controller_clock_drifts_and_steps_as_the_scenario_says() -> None:
    clock = ControllerClock(drift_ppm=1000.0, steps=(ClockStep(50.0, 4000),))
    assert controller_offset_ms(clock, 10.0) == 10_010
    assert controller_offset_ms(clock, 49.999) == 50_049
    assert controller_offset_ms(clock, 60.0) == 60_060 + 4000


def test_every_situation_generates_what_its_name_says() -> None:
    queue = generate_situation("queue", 8, 3)
    approaching = [b for v in queue.vehicles[1:] for c in v.cards for b in c.bursts]
    assert approaching
    assert all(b.shape is Shape.RISING and b.start_s < 0 for b in approaching)
    adjacent = generate_situation("adjacent", 20, 3)
    assert adjacent.stray_reads
    assert set(suite_cards(adjacent)) >= {s.card.epc for s in adjacent.stray_reads}
    faults = generate_situation("loop_faults", 40, 3)
    kinds = {v.loop_fault.kind for v in faults.vehicles if v.loop_fault is not None}
    assert kinds == set(LoopFaultKind) - {LoopFaultKind.MISSING_OCCUPIED}
    assert any(v.gap_s == 0.0 for v in faults.vehicles), "tailgating pairs"
    stopped = generate_situation("stopped", 5, 3)
    assert all(60.0 <= v.dwell_s <= 180.0 for v in stopped.vehicles)
    handed = generate_situation("handed_back", 30, 3)
    epcs = [{c.epc for c in v.cards} for v in handed.vehicles]
    assert any(a & b for a, b in itertools.pairwise(epcs)), "a card handed back"
    with pytest.raises(ValueError, match="unknown situation 'fog'"):
        generate_situation("fog", 3, 1)
