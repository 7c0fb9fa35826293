"""The seeded situation suites through the lane core: one right crossing per vehicle, and never
an EXPEDITE on a card that is not in the vehicle, whatever the situation. (The full suite runs
end to end in bench/bench_fusion.py; these are small enough for every CI run.)"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.dev.scoring import (
    SituationScore,
    from_decision,
    replay_through_core,
    score,
    valid_credentials,
)
from agent.lane.correlator import CorrelationSettings
from agent.lane.credentials import Program
from agent.lane.policy import LanePolicy, LaneType
from firmware_bridge.scenario import Scenario
from firmware_bridge.scenario_plan import scenario_truth
from firmware_bridge.situations import SITUATIONS, generate_situation, suite_cards

ORIGIN = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC).timestamp()
POLICY = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}))


def through_the_core(scenario: Scenario) -> SituationScore:
    credentials = valid_credentials(
        suite_cards(scenario), dt.datetime.fromtimestamp(ORIGIN, dt.UTC)
    )
    decisions = replay_through_core(
        scenario, CorrelationSettings(), POLICY, credentials.get, origin=ORIGIN
    )
    return score(scenario_truth(scenario), [from_decision(d, ORIGIN) for d in decisions])


@pytest.mark.parametrize("situation", list(SITUATIONS))
def test_every_vehicle_of_a_situation_is_one_right_crossing(situation: str) -> None:
    result = through_the_core(generate_situation(situation, 16, seed=1))
    assert result.failures == []
    assert result.correct == result.vehicles == len(generate_situation(situation, 16, 1).vehicles)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from(list(SITUATIONS)), st.integers(0, 2**31))
def test_no_situation_ever_earns_an_expedite_with_a_card_not_in_the_vehicle(
    situation: str, seed: int
) -> None:
    result = through_the_core(generate_situation(situation, 5, seed))
    assert result.wrong_expedite == 0, result.failures
    assert result.no_vehicle_crossings == 0, result.failures
