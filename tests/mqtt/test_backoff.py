"""Jittered back-off: delays within bounds, growing and spread out; the reconnect back-off resets
only after a connection that lasted."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.mqtt import ReconnectBackoff, backoff_delay, paho_reconnect_delays


@given(
    attempt=st.integers(min_value=0, max_value=10_000),
    min_s=st.floats(min_value=0.001, max_value=10),
    spread=st.floats(min_value=1, max_value=1000),
    seed=st.integers(),
)
def test_backoff_delay_always_stays_within_min_and_max(
    attempt: int, min_s: float, spread: float, seed: int
) -> None:
    max_s = min_s * spread
    assert min_s <= backoff_delay(attempt, min_s, max_s, random.Random(seed)) <= max_s


def test_backoff_delays_grow_with_attempts_and_are_jittered() -> None:
    rng = random.Random(7)
    early = [backoff_delay(0, 1.0, 60.0, rng) for _ in range(200)]
    late = [backoff_delay(10, 1.0, 60.0, rng) for _ in range(200)]
    assert max(early) <= 2.0
    assert len(set(early)) > 100  # lanes do not retry in lock-step
    assert sum(late) / len(late) > 2 * sum(early) / len(early)


def test_each_failed_attempt_widens_the_window_the_next_delay_is_drawn_from() -> None:
    backoff = ReconnectBackoff(1.0, 60.0, random.Random(3))
    ceilings = [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    for failures, ceiling in enumerate(ceilings):
        assert backoff.failures == failures
        assert 1.0 <= backoff.next_delay() <= ceiling


def test_a_connection_that_stayed_up_starts_the_back_off_again_and_a_short_one_does_not() -> None:
    backoff = ReconnectBackoff(1.0, 60.0, random.Random(5), stable_after_s=30.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.connected(100.0)
    backoff.lost(129.9)  # up for less than 30 s: the broker may be dropping every connection
    assert backoff.failures == 5
    backoff.connected(200.0)
    backoff.lost(230.0)
    assert backoff.failures == 0
    assert backoff.next_delay() <= 2.0


def test_a_loss_without_a_connection_changes_nothing() -> None:
    """A failed attempt never reached CONNACK: only the connection established last counts, once."""
    backoff = ReconnectBackoff(1.0, 60.0, random.Random(9), stable_after_s=30.0)
    backoff.connected(0.0)
    backoff.lost(100.0)
    backoff.next_delay()
    backoff.next_delay()
    backoff.lost(500.0)
    assert backoff.failures == 2


@pytest.mark.parametrize(("min_s", "max_s"), [(0.0, 1.0), (-1.0, 1.0), (5.0, 1.0)])
def test_bounds_that_cannot_work_are_rejected(min_s: float, max_s: float) -> None:
    with pytest.raises(ValueError, match="min_s"):
        ReconnectBackoff(min_s, max_s, random.Random(1))


@pytest.mark.parametrize(
    ("min_s", "max_s", "expected"),
    [(0.05, 0.5, (1, 1)), (0.2, 2.0, (1, 2)), (1.0, 60.0, (1, 60)), (2.6, 90.4, (3, 90))],
)
def test_pahos_own_reconnect_gets_whole_seconds_and_at_least_one(
    min_s: float, max_s: float, expected: tuple[int, int]
) -> None:
    assert paho_reconnect_delays(min_s, max_s) == expected
