"""Scenario files: loading, error messages, generation, writing back and the event plan."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.codec import FaultCode, Loop, TagRead
from firmware_bridge.scenario import (
    CardPass,
    FaultInjection,
    LinkMisbehaviour,
    Scenario,
    ScenarioError,
    StrayRead,
    Vehicle,
    generate_scenario,
    load_scenario,
    parse_scenario,
)
from firmware_bridge.scenario_dump import dump_scenario
from firmware_bridge.scenario_plan import plan_scenario
from tests.firmware_bridge.conftest import KNOWN_REFS

SCENARIOS = Path(__file__).parents[2] / "config" / "scenarios"
MINIMAL = '[scenario]\nname = "t"\n\n[[vehicles]]\ndwell_s = 1.0\n'


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_load_and_survive_a_write_and_read_back(path: Path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert parse_scenario(dump_scenario(scenario)) == scenario


def test_shipped_scenarios_use_only_the_refs_listed_in_basic_toml():
    header = (SCENARIOS / "basic.toml").read_text().split("[scenario]")[0]
    known, unknown = header.split("does NOT know")
    listed_known = set(re.findall(r"[0-9A-F]{24}", known))
    listed_unknown = set(re.findall(r"[0-9A-F]{24}", unknown))
    assert listed_known == set(KNOWN_REFS)
    generated_unknown = set()
    for path in SCENARIOS.glob("*.toml"):
        scenario = load_scenario(path)
        cards = [c for v in scenario.vehicles for c in v.cards]
        cards += [s.card for s in scenario.stray_reads]
        for card in cards:
            if card.epc not in listed_known | listed_unknown:
                generated_unknown.add((path.name, card.epc))
    # Only busy.toml, made by generate_scenario, carries random unknown refs.
    assert {name for name, _ in generated_unknown} <= {"busy.toml"}


def test_basic_scenario_has_the_kinds_of_vehicle_the_demo_needs():
    scenario = load_scenario(SCENARIOS / "basic.toml")
    card_counts = [len(v.cards) for v in scenario.vehicles]
    assert 0 in card_counts
    assert max(card_counts) >= 3
    assert all(v.plate and v.jurisdiction for v in scenario.vehicles)
    assert load_scenario(SCENARIOS / "noisy_link.toml").link.drop_probability > 0


def test_a_minimal_file_gets_the_documented_defaults():
    scenario = parse_scenario(MINIMAL + '[[vehicles.cards]]\nepc = "e2801160"\n')
    assert scenario.vehicles == (Vehicle(dwell_s=1.0, cards=(CardPass("E2801160"),)),)
    card = scenario.vehicles[0].cards[0]
    assert (card.reads, card.rssi_dbm, card.antennas) == (5, (-70.0, -50.0), (1,))
    assert scenario.link == LinkMisbehaviour()
    assert scenario.controller_id == "LANE-SIM"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[vehicles]]\ndwell_s = 1.0\n",
            "lane.toml: scenario.name: required key is missing",
        ),
        (
            MINIMAL.replace("dwell_s = 1.0", "dwell_s = 0"),
            "lane.toml: vehicles[0].dwell_s = 0: expected a number greater than 0 and at most 3600",
        ),
        (
            MINIMAL.replace("dwell_s = 1.0", 'dwell_s = "long"'),
            "lane.toml: vehicles[0].dwell_s = 'long': expected a number",
        ),
        (
            MINIMAL + "dwel_s = 2.0\n",
            "lane.toml: vehicles[0].dwel_s: unknown key "
            "(expected one of: cards, dwell_s, gap_s, jurisdiction, loop_id, plate)",
        ),
        (
            MINIMAL + '[[vehicles.cards]]\nepc = "E28G"\n',
            "lane.toml: vehicles[0].cards[0].epc = 'E28G': "
            "expected an even number of hex digits, 2..124",
        ),
        (
            MINIMAL + '[[vehicles.cards]]\nepc = "E280"\nrssi_dbm = [-40.0, -60.0]\n',
            "lane.toml: vehicles[0].cards[0].rssi_dbm = [-40.0, -60.0]: "
            "expected [weakest, strongest] in dBm, -120 <= weakest <= strongest <= 0",
        ),
        (
            MINIMAL + '[[vehicles.cards]]\nepc = "E280"\nantennas = []\n',
            "lane.toml: vehicles[0].cards[0].antennas = []: "
            "expected a non-empty array of antenna numbers 0..255",
        ),
        (
            MINIMAL + '[[faults]]\nat_s = 1.0\ncode = "ON_FIRE"\n',
            "lane.toml: faults[0].code = 'ON_FIRE': expected an integer or one of "
            "READER_NO_RESPONSE, ANTENNA_VSWR, LOOP_DETECTOR, EVENT_QUEUE_OVERFLOW, "
            "HOST_SILENT, SIGNAL_LAMP, WATCHDOG_RESET",
        ),
        (
            MINIMAL + "[link]\ndrop_probability = 1.0\n",
            "lane.toml: link.drop_probability = 1.0: expected a number at least 0 and at most 0.9",
        ),
        (
            MINIMAL.replace('name = "t"', 'name = "t"\nfirmware = "1.4"'),
            "lane.toml: scenario.firmware = '1.4': expected MAJOR.MINOR.PATCH, each 0..255",
        ),
        (
            '[scenario]\nname = "t"\n',
            "lane.toml: vehicles: expected at least one vehicle, stray read or fault",
        ),
        (
            MINIMAL + "[[vehicles.cards]]\nreads = 3\n",
            "lane.toml: vehicles[0].cards[0].epc: required key is missing",
        ),
    ],
)
def test_errors_name_the_file_the_key_and_the_value(text: str, message: str):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "lane.toml")
    assert str(caught.value) == message


def test_invalid_toml_names_the_file_and_the_line(tmp_path: Path):
    path = tmp_path / "broken.toml"
    path.write_text('[scenario]\nname = "t"\ngap_s = = 2\n')
    with pytest.raises(ScenarioError, match=r"broken\.toml: invalid TOML: .*line 3"):
        load_scenario(path)


def test_a_missing_file_is_named(tmp_path: Path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_generated_scenarios_are_repeatable_and_mix_known_unknown_and_cardless_vehicles():
    scenario = generate_scenario(200, KNOWN_REFS, seed=42)
    assert scenario == generate_scenario(200, KNOWN_REFS, seed=42)
    assert scenario != generate_scenario(200, KNOWN_REFS, seed=43)

    counts = [len(v.cards) for v in scenario.vehicles]
    epcs = [c.epc for v in scenario.vehicles for c in v.cards]
    assert len(scenario.vehicles) == 200
    assert set(counts) == {0, 1, 2, 3}
    assert {e for e in epcs if e in KNOWN_REFS} == set(KNOWN_REFS)
    unknown = [e for e in epcs if e not in KNOWN_REFS]
    assert 0 < len(unknown) < len(epcs) / 2
    assert all(re.fullmatch(r"[0-9A-F]{24}", e) for e in unknown)
    assert all(len({c.epc for c in v.cards}) == len(v.cards) for v in scenario.vehicles)
    assert all(v.plate and v.jurisdiction for v in scenario.vehicles)
    assert parse_scenario(dump_scenario(scenario)) == scenario


def test_generation_with_fewer_refs_than_cards_falls_back_to_unknown_cards():
    scenario = generate_scenario(30, KNOWN_REFS[:1], seed=1, unknown_card_ratio=0.0)
    assert all(len({c.epc for c in v.cards}) == len(v.cards) for v in scenario.vehicles)


hex_ref = st.binary(min_size=1, max_size=62).map(lambda b: b.hex().upper())
finite = st.floats(0.0, 100.0, allow_nan=False, allow_infinity=False)
cards = st.builds(
    CardPass,
    epc=hex_ref,
    reads=st.integers(1, 50),
    rssi_dbm=st.tuples(st.floats(-120.0, -60.0), st.floats(-60.0, 0.0)),
    antennas=st.lists(st.integers(0, 255), min_size=1, max_size=4).map(tuple),
    tid=st.none() | hex_ref,
    straggler_reads=st.integers(0, 3),
)
plain_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
scenarios = st.builds(
    Scenario,
    name=plain_text,
    vehicles=st.lists(
        st.builds(
            Vehicle,
            dwell_s=st.floats(0.01, 600.0),
            gap_s=finite,
            loop_id=st.integers(0, 255),
            cards=st.lists(cards, max_size=3).map(tuple),
            plate=st.none() | plain_text,
            jurisdiction=st.none() | st.sampled_from(["CA", "MX-BCN"]),
        ),
        min_size=1,
        max_size=4,
    ).map(tuple),
    seed=st.integers(0, 2**63 - 1),
    description=st.text(max_size=40),
    controller_id=plain_text,
    firmware=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    stray_reads=st.lists(st.builds(StrayRead, finite, cards, finite), max_size=2).map(tuple),
    faults=st.lists(
        st.builds(FaultInjection, finite, st.integers(0, 0xFFFF), plain_text), max_size=2
    ).map(tuple),
    link=st.builds(
        LinkMisbehaviour,
        drop_probability=st.floats(0, 0.9),
        garbage_max_bytes=st.integers(1, 4096),
    ),
)


@given(scenarios)
def test_dump_and_parse_round_trip_any_scenario(scenario: Scenario):
    assert parse_scenario(dump_scenario(scenario)) == scenario


def test_plan_puts_reads_between_loop_occupied_and_clear_and_stragglers_after():
    vehicle = Vehicle(
        dwell_s=2.0,
        gap_s=1.0,
        loop_id=4,
        cards=(CardPass("E280AA", reads=7, rssi_dbm=(-60.0, -40.0), straggler_reads=2),),
    )
    scenario = Scenario(
        "plan", (vehicle,), seed=9, faults=(FaultInjection(0.5, FaultCode.LOOP_DETECTOR),)
    )
    plan = plan_scenario(scenario)

    kinds = [type(p.message).__name__ for p in plan]
    assert kinds == ["Fault", "Loop", *["TagRead"] * 7, "Loop", "TagRead", "TagRead"]
    occupied, clear = plan[1], plan[9]
    assert occupied.message == Loop(0, 4, occupied=True)
    assert clear.message == Loop(0, 4, occupied=False)
    assert (occupied.at_s, clear.at_s) == (1.0, 3.0)
    reads = [p for p in plan if isinstance(p.message, TagRead)]
    assert all(1.0 < p.at_s < 3.0 for p in reads[:7])
    assert all(3.0 < p.at_s < 4.0 for p in reads[7:])
    assert all(-600 <= p.message.rssi_deci_dbm <= -400 for p in reads[:7])
    # Stragglers fade from the card's weakest as the vehicle drives off.
    assert all(-680 <= p.message.rssi_deci_dbm <= -600 for p in reads[7:])
    assert plan_scenario(scenario) == plan
