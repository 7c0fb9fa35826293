"""The lane engine: the one object that owns all lane state.

It feeds inputs to the correlator and turns each closed crossing into a ``Decision`` using an
injected credential lookup. The service runs it on a single thread; sources only enqueue.

Its state is the correlator's, exported as plain data (:meth:`LaneEngine.export_state`) and
restored at construction, so the service can checkpoint it with each committed crossing and,
after a crash, rebuild the lane from the checkpoint and the journalled inputs after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agent.lane.correlator import CorrelationSettings, Crossing, CrossingCorrelator
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
        *,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        """``cache_fresh_at`` returns when the cache data was last vouched for (Unix seconds).

        ``state`` is what :meth:`export_state` returned earlier (raises ``ValueError`` if it
        cannot be restored); without it the lane starts empty.
        """
        self.correlator = (
            CrossingCorrelator(correlation)
            if state is None
            else CrossingCorrelator.restore(correlation, state)
        )
        self.policy = policy
        self._lookup = lookup
        self._cache_fresh_at = cache_fresh_at

    def handle(self, event: LaneInput) -> list[Decision]:
        """Apply one input; decide every crossing it closed."""
        return self._decide(self.correlator.handle(event))

    def current(self, at: float) -> tuple[int, Decision] | None:
        """The open crossing decided as if it closed at ``at``, with the number it will close
        under (None: no vehicle at the booth). Provisional: for the booth, never stored."""
        crossing = self.correlator.current(at)
        if crossing is None:
            return None
        return self.correlator.closed_count + 1, self._decide([crossing])[0]

    @property
    def closed_count(self) -> int:
        """Crossings closed so far, across restores: the n-th decision is crossing number n."""
        return self.correlator.closed_count

    def export_state(self) -> dict[str, Any]:
        """The lane's state as plain JSON-compatible data (see the correlator)."""
        return self.correlator.export_state()

    def shutdown(self, at: float) -> list[Decision]:
        """Close and decide whatever is open, so a clean stop loses no vehicle."""
        return self._decide(self.correlator.close_all(at))

    def _decide(self, crossings: list[Crossing]) -> list[Decision]:
        return [decide(c, self._lookup, self.policy, self._cache_fresh_at()) for c in crossings]
