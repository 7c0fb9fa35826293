"""A warning that can repeat frame after frame, logged at most once per interval with a count.

A device that sends a stream of bad or unwanted frames must not turn into a log line per frame:
the first is logged at WARNING, later ones within the interval at DEBUG only, and the next
WARNING says how many were left out. Counters elsewhere keep every one. Shared by the reader
protocol libraries (they import nothing of the agent, which has its own keyed limiter).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RepeatedWarning:
    """One repetitive warning of one owner (not thread-safe: call it from the owner's thread)."""

    def __init__(
        self, logger: logging.Logger, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._clock = clock
        self._warned_at: float | None = None
        self._unreported = 0

    def warn(self, interval_s: float, message: str, *args: object) -> None:
        """Log ``message % args``: at WARNING unless one was logged less than ``interval_s``
        ago, then at DEBUG and counted for the next WARNING."""
        now = self._clock()
        if self._warned_at is not None and now - self._warned_at < interval_s:
            self._unreported += 1
            self._logger.debug(message, *args)
            return
        if self._unreported:
            self._logger.warning(
                message + " (%d more since the last report)", *args, self._unreported
            )
        else:
            self._logger.warning(message, *args)
        self._warned_at = now
        self._unreported = 0
