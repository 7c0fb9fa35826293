"""What an LLRP reader's timestamps mean: which boot and clock they are on, how they become lane
time, and what the journal keeps to continue them after a restart.

Every report and event carries the reader's timestamps in microseconds: its UTC clock, its
uptime, or both. A connection follows one of them (the one the reader stamps its events with,
unless the config says otherwise); a stamp on the other is converted once reads stamped on both
have said how the two relate. Each message's newest stamp, against the moment it arrived, is a
reading of the reader's clock: once a second the least delayed reading goes to the
:class:`~agent.readers.clock.ReaderClock` as its heartbeat (a message only ever arrives late,
never early).

Boots: a UTC clock is one clock for ever (its steps are the clock watch's business). An uptime
clock starts again at each reboot: a new connection whose uptime ran on from the last stamp as
much as the agent's clock did is the same boot, anything else a restart, and lane time goes on
from the new boot's clock, never back. The resume token (the last stamp, its boot, when it
arrived) lets a restarted agent make the same call against what its journal holds.
"""

from __future__ import annotations

import json
import logging
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from agent.readers.clock import ReaderClock

logger = logging.getLogger(__name__)

FAMILY = "llrp"
WRAP = 1 << 32
SAMPLE_EVERY_S = 1.0
"""A clock reading goes to the clock once a second: the least delayed of the second's."""
WARM_UP_S = 3.0
WARM_UP_SAMPLE_EVERY_S = 0.25
"""For the first seconds of a boot, four readings a second: the clock's rate is measured over
1.5 s of heartbeats, and conversions until then assume one reader second per second."""
SAME_BOOT_SLACK = 0.05
"""Uptime that ran on within 5 % (+ a second) of the agent's clock is the same boot."""


@dataclass(frozen=True, slots=True)
class Boot:
    """Which reader boot (and which of its clocks) timestamps come from."""

    boot_id: int
    clock: str
    """``uptime`` or ``utc``."""


@dataclass(frozen=True, slots=True)
class Stamp:
    """The last stamp turned into lane time: its boot, its value (µs), when it arrived."""

    boot: Boot
    stamp_us: int
    received_at: float


class LlrpReaderTime:
    """Reader time of one LLRP reader family (its session thread only)."""

    def __init__(
        self,
        clock: ReaderClock,
        *,
        reader_key: str,
        resume: str | None,
        clock_kind: str,
        rng: random.Random,
        on_boot: Callable[[], None] = lambda: None,
    ) -> None:
        self.clock = clock
        self.clock_kind = clock_kind
        """The reader clock lane time follows on this connection (``utc`` or ``uptime``)."""
        self._reader_key = reader_key
        self._rng = rng
        self._on_boot = on_boot
        self._last = parse_token(resume)
        """The last stamp made (the journal's, at start)."""
        self._boot: Boot | None = None
        self._reconnected = False
        self._utc_minus_uptime: int | None = None
        self._sample: tuple[float, int, float] | None = None
        self._sample_due = 0.0
        self._warm_until = 0.0
        self._last_input_ms: tuple[int, int] | None = None

    def connected(self, clock_kind: str) -> None:
        """A new connection, following ``clock_kind``: its first stamp says whether the reader
        booted meanwhile."""
        self.clock_kind = clock_kind
        self._utc_minus_uptime = None
        self._reconnected = True

    def token(self, **extra: object) -> str | None:
        """The resume token of the last stamp (None before any), with ``extra`` fields the
        family keeps beside it."""
        last = self._last
        if last is None:
            return None
        return json.dumps(
            {
                **extra,
                "family": FAMILY,
                "boot_id": last.boot.boot_id,
                "clock": last.boot.clock,
                "stamp_us": last.stamp_us,
                "received_at": last.received_at,
            },
            sort_keys=True,
        )

    def timestamp(self, *, uptime: int | None, utc: int | None) -> int | None:
        """The stamp on the connection's clock (µs): given, or converted from the other clock
        once reads stamped on both told how they relate; None: not on the reader's clock."""
        if uptime is not None and utc is not None:
            self._utc_minus_uptime = utc - uptime
        offset = self._utc_minus_uptime
        if self.clock_kind == "uptime":
            if uptime is not None:
                return uptime
            return None if utc is None or offset is None else utc - offset
        if utc is not None:
            return utc
        return None if uptime is None or offset is None else uptime + offset

    def lane_time(self, first_us: int, latest_us: int, received_at: float) -> float:
        """Lane time of reader time ``first_us``; ``latest_us`` (the message's newest stamp)
        against its arrival is a reading of the reader's clock."""
        boot = self._boot_of(latest_us, received_at)
        self._reading(latest_us, received_at)
        first_ms = _u32_ms(first_us)
        last = self._last_input_ms
        if last is not None and last[0] == boot.boot_id and 0 < (last[1] - first_ms) % WRAP <= 1000:
            # Seen a moment before the previous input (a report that collected several tags):
            # the same moment, not a step of the clock.
            first_ms = last[1]
        at = self.clock.stamp(boot.boot_id, first_ms, received_at)
        self._last_input_ms = (boot.boot_id, first_ms)
        self._last = Stamp(boot, latest_us, received_at)
        return at

    def _boot_of(self, stamp_us: int, received_at: float) -> Boot:
        """The boot ``stamp_us`` belongs to: the current one, the journal's, or a new one."""
        kind = self.clock_kind
        boot = self._boot
        last = self._last
        running_on = kind == "utc" or last is None or stamp_us >= last.stamp_us - 1_000_000
        if boot is not None and boot.clock == kind and not self._reconnected and running_on:
            return boot
        self._reconnected = False
        if kind == "utc":
            if boot is not None and boot.clock == "utc":
                return boot
            # One UTC clock for ever: its steps are the clock watch's business.
            boot = Boot(zlib.crc32(self._reader_key.encode()) or 1, "utc")
        elif (
            last is not None
            and last.boot.clock == kind
            and same_boot(last.stamp_us, last.received_at, stamp_us, received_at)
        ):
            boot = last.boot
        else:
            boot = Boot(self._rng.getrandbits(32) or 1, kind)
            if last is not None:
                logger.info(
                    "LLRP reader restarted (boot %08x, was %08x): lane time goes on from its "
                    "new clock",
                    boot.boot_id,
                    last.boot.boot_id,
                )
        self._on_boot()
        self._boot = boot
        self._sample = None
        self.clock.on_boot(boot.boot_id)
        self.clock.on_heartbeat(_u32_ms(stamp_us), received_at)  # the base, before any input
        self._sample_due = received_at + WARM_UP_SAMPLE_EVERY_S
        self._warm_until = received_at + WARM_UP_S
        return boot

    def _reading(self, stamp_us: int, received_at: float) -> None:
        """Keep the second's least delayed reading; hand it to the clock once a second."""
        key = received_at - stamp_us / 1e6
        if self._sample is None or key < self._sample[0]:
            self._sample = (key, stamp_us, received_at)
        if received_at >= self._sample_due:
            _, best_us, best_at = self._sample
            self.clock.on_heartbeat(_u32_ms(best_us), best_at)
            self._sample = None
            warming = received_at < self._warm_until
            self._sample_due = received_at + (WARM_UP_SAMPLE_EVERY_S if warming else SAMPLE_EVERY_S)


def _u32_ms(stamp_us: int) -> int:
    """A reader stamp as the clock takes device time: milliseconds in 32 bits (it counts the
    wraps, every 49.7 days, itself)."""
    return (stamp_us // 1000) % WRAP


def same_boot(last_us: int, last_at: float, stamp_us: int, received_at: float) -> bool:
    """Uptime ran on from ``last_us`` about as much as the agent's clock did since."""
    ran = (stamp_us - last_us) / 1e6
    elapsed = received_at - last_at
    return ran >= -1.0 and abs(ran - elapsed) <= 1.0 + SAME_BOOT_SLACK * max(elapsed, 0.0)


def parse_token(token: str | None) -> Stamp | None:
    """The stamp a resume token names (None: none, or not an LLRP reader's)."""
    if not token:
        return None
    try:
        fields = json.loads(token)
        if fields.get("family") != FAMILY:
            return None
        boot = Boot(int(fields["boot_id"]), str(fields["clock"]))
        return Stamp(boot, int(fields["stamp_us"]), float(fields["received_at"]))
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        logger.warning("resume token not from an LLRP reader (%s): starting afresh", error)
        return None
