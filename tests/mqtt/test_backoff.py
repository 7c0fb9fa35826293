"""Jittered back-off: delays within bounds, growing and spread out."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from agent.mqtt import backoff_delay


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
