"""The lane engine: the one object that owns all lane state.

It feeds inputs to the correlator and turns each closed crossing into a ``Decision`` using an
injected credential lookup. The service runs it on a single thread; sources only enqueue.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.lane.correlator import CorrelationSettings, CrossingCorrelator
from agent.lane.credentials import Credential
from agent.lane.events import LaneInput
from agent.lane.policy import Decision, LanePolicy, decide


class LaneEngine:
    """Inputs in, decisions out; no I/O of its own."""

    def __init__(
        self,
        correlation: CorrelationSettings,
        policy: LanePolicy,
        lookup: Callable[[str], Credential | None],
        cache_fresh_at: Callable[[], float | None] = lambda: None,
    ) -> None:
        """``cache_fresh_at`` returns when the cache data was last vouched for (Unix seconds)."""
        self.correlator = CrossingCorrelator(correlation)
        self.policy = policy
        self._lookup = lookup
        self._cache_fresh_at = cache_fresh_at

    def handle(self, event: LaneInput) -> list[Decision]:
        """Apply one input; decide every crossing it closed."""
        return [
            decide(c, self._lookup, self.policy, self._cache_fresh_at())
            for c in self.correlator.handle(event)
        ]

    def shutdown(self, at: float) -> list[Decision]:
        """Close and decide whatever is open, so a clean stop loses no vehicle."""
        return [
            decide(c, self._lookup, self.policy, self._cache_fresh_at())
            for c in self.correlator.close_all(at)
        ]
