"""Staleness: data older than max_cache_age withholds EXPEDITE, with the age passed in, not read."""

from __future__ import annotations

import dataclasses

import pytest

from agent.lane.correlator import CorrelationSettings
from agent.lane.engine import LaneEngine
from agent.lane.events import LoopChanged, Tick
from agent.lane.policy import LaneType, Reason, Recommendation, decide
from tests.lane.test_policy import CACHE, GENERAL, NOW, REVOKED, TRUSTED, VALID, crossing

DAY = 86400.0
POLICY = dataclasses.replace(TRUSTED, max_cache_age_s=DAY)


@pytest.mark.parametrize(
    ("fresh_at", "recommendation", "reasons"),
    [
        (NOW - DAY + 1, Recommendation.EXPEDITE, ()),
        (NOW - DAY, Recommendation.EXPEDITE, ()),
        (NOW - DAY - 1, Recommendation.PRIMARY, (Reason.CACHE_STALE,)),
        (None, Recommendation.PRIMARY, (Reason.CACHE_STALE,)),
    ],
)
def test_a_valid_card_is_expedited_only_while_the_cache_is_younger_than_the_limit(
    fresh_at: float | None, recommendation: Recommendation, reasons: tuple[Reason, ...]
) -> None:
    decision = decide(crossing(VALID.ref), CACHE.get, POLICY, fresh_at)
    assert decision.recommendation is recommendation
    assert decision.reasons == reasons


def test_the_decision_carries_the_cache_age_at_the_crossings_close() -> None:
    decision = decide(crossing(VALID.ref), CACHE.get, POLICY, NOW - 90.5)
    assert decision.cache_age_s == pytest.approx(90.5)
    assert decide(crossing(VALID.ref), CACHE.get, POLICY, None).cache_age_s is None


def test_stale_data_still_raises_an_alert_for_a_revoked_card() -> None:
    decision = decide(crossing(REVOKED.ref), CACHE.get, POLICY, None)
    assert decision.recommendation is Recommendation.ALERT
    assert Reason.CACHE_STALE in decision.reasons


def test_without_a_limit_the_age_is_reported_but_never_stale() -> None:
    decision = decide(crossing(VALID.ref), CACHE.get, TRUSTED, NOW - 400 * DAY)
    assert decision.recommendation is Recommendation.EXPEDITE
    assert decision.cache_age_s == pytest.approx(400 * DAY)


def test_a_general_lane_stays_primary_when_stale() -> None:
    policy = dataclasses.replace(GENERAL, max_cache_age_s=DAY)
    assert policy.lane_type is LaneType.GENERAL
    decision = decide(crossing(VALID.ref), CACHE.get, policy, None)
    assert decision.recommendation is Recommendation.PRIMARY


def test_the_engine_asks_for_freshness_at_each_decision() -> None:
    """The engine reads no clock: it calls the injected source each time a crossing closes."""
    fresh: list[float | None] = [NOW - 2 * DAY]
    engine = LaneEngine(CorrelationSettings(), POLICY, CACHE.get, lambda: fresh[0])
    engine.handle(LoopChanged(at=NOW - 20, loop_id=1, occupied=True))
    engine.handle(LoopChanged(at=NOW - 15, loop_id=1, occupied=False))
    stale = engine.handle(Tick(NOW - 14))  # the departure confirmed: the crossing closes
    fresh[0] = NOW - 60
    engine.handle(LoopChanged(at=NOW - 6, loop_id=1, occupied=True))
    engine.handle(LoopChanged(at=NOW - 1, loop_id=1, occupied=False))
    current = engine.handle(Tick(NOW))
    assert [Reason.CACHE_STALE in d.reasons for d in stale + current] == [True, False]
