"""How long a client waits before trying again: jittered exponential delays.

A fleet of lanes that lost the broker together must not come back together: paho's own
reconnect back-off has no jitter (FACTS.md), so clients that reconnect themselves draw every
delay at random from a window that doubles with each failed attempt (:func:`backoff_delay`), and
:class:`ReconnectBackoff` starts again from the shortest delay only once a connection stayed up
for a while, so a broker that accepts and then drops every connection still sees the delays grow.
"""

from __future__ import annotations

import random

DEFAULT_STABLE_AFTER_S = 30.0
"""A connection that lasted this long resets the reconnect back-off."""


def backoff_delay(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (from 0): exponential, jittered, within [min_s, max_s].

    The jitter is drawn from the whole window ``[min_s, min_s * 2**(attempt+1)]`` so that even the
    first retries of many lanes spread out instead of landing together.
    """
    ceiling = min(max_s, min_s * 2.0 ** min(attempt + 1, 62))
    return rng.uniform(min_s, ceiling)


class ReconnectBackoff:
    """Counts connection attempts since the last connection that stayed up, and draws the delay
    before the next one."""

    def __init__(
        self,
        min_s: float,
        max_s: float,
        rng: random.Random,
        *,
        stable_after_s: float = DEFAULT_STABLE_AFTER_S,
    ) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError(f"need 0 < min_s <= max_s, got {min_s!r} and {max_s!r}")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng
        self._stable_after_s = stable_after_s
        self.failures = 0
        """Attempts that failed (or connections that did not last) since the last stable one."""
        self._connected_at: float | None = None

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more failure."""
        delay = backoff_delay(self.failures, self.min_s, self.max_s, self._rng)
        self.failures += 1
        return delay

    def connected(self, now: float) -> None:
        """A connection was established at ``now`` (monotonic)."""
        self._connected_at = now

    def lost(self, now: float) -> None:
        """The connection established last ended at ``now``: if it lasted, start over."""
        connected_at, self._connected_at = self._connected_at, None
        if connected_at is not None and now - connected_at >= self._stable_after_s:
            self.failures = 0  # a short-lived connection keeps the back-off growing


def paho_reconnect_delays(min_s: float, max_s: float) -> tuple[int, int]:
    """``(min_delay, max_delay)`` for paho's own reconnect (``reconnect_delay_set``), which takes
    whole seconds, at least one."""
    return max(1, round(min_s)), max(1, round(max_s))
