"""Controller time: the lane as the controller saw it, not as the agent happened to receive it.

Every tag read and loop edge carries the controller's own ``timestamp_ms`` (milliseconds since
the controller booted, a u32 that wraps after 49.7 days). The lane core correlates on *lane
time*: that timestamp, unwrapped, in seconds, plus a **base** fixed once per controller boot, so
that lane time reads like Unix time. Intervals in lane time are the controller's intervals,
whatever the agent was doing: a busy engine, a journal replayed after a crash, or events the
controller buffered while the agent was down and resent later all land where they happened.

The base of a boot comes from a HEARTBEAT: it is sent fresh every second and never resent, so
``received_at - uptime`` is the boot's wall time plus a few milliseconds of transit. An event is
no good for that (it may have waited in the controller for minutes), so an event of a boot whose
base is not known yet is refused (:class:`ClockNotSynced`) and the link offers it again shortly;
only a controller that sends no heartbeat for :attr:`ClockSettings.base_wait_s` has its base
taken from an event, as an upper bound.

What the agent does with lane time:

* **correlation** (the lane core) uses it as it is;
* **ticks** (time passing on a quiet lane) come from heartbeats that report nothing pending, and
  between heartbeats from :meth:`ControllerClock.lane_now`, an extrapolation from the last
  heartbeat that never runs more than :attr:`ClockSettings.max_extrapolation_s` ahead of it: when
  the link is down, lane time stands still, because the controller is buffering what happens;
* **reported times** (crossing events) and **camera frames** (stamped with the agent's clock)
  convert through the current *offset* between the two clocks (:meth:`ControllerClock.to_wall`,
  :meth:`ControllerClock.from_wall`), so a drifting controller crystal never shifts what central
  sees.

A controller clock is watched, never silently trusted: the **rate** of lane time against the
agent's clock is measured over a sliding window of heartbeats (``drift_ppm``), and a **step** —
an event from the future, an event older than the one before it in the same boot, or
heartbeats that jump away from the prediction — is taken out (the base moves so that lane time
stays continuous), counted and reported. Both are faults on the status topic
(:meth:`ControllerClock.faults`). A simulated controller that plays a scenario faster than real
time shows up as a drift of ``(speed - 1) * 1e6`` ppm, which is what it is.

Everything here is plain arithmetic on numbers passed in; the service feeds it from the link
thread and keeps its state in the input journal, so a restarted agent maps the same boot the
same way.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

WRAP_MS = 1 << 32
"""The controller's ``timestamp_ms`` is a u32: it wraps after 2**32 ms (49.7 days)."""


class ClockNotSynced(Exception):
    """An event of a controller boot arrived before any heartbeat of that boot: try again soon."""

    def __init__(self, boot_id: int) -> None:
        super().__init__(f"no heartbeat yet from controller boot {boot_id:#010x}")
        self.boot_id = boot_id


class ClockFault(enum.StrEnum):
    """What is wrong with the controller's clock (status-topic fault codes)."""

    DRIFT = "controller_clock_drift"
    STEP = "controller_clock_step"


@dataclass(frozen=True, slots=True)
class ClockSettings:
    """Tolerances of the controller clock watch (validated by the config layer)."""

    max_drift_ppm: float = 1000.0
    """Rate error beyond which the clock is reported as drifting (crystals are within 100 ppm)."""
    step_tolerance_s: float = 1.0
    """A jump larger than this between the controller's clock and the agent's is a step."""
    max_extrapolation_s: float = 2.5
    """Lane time never runs further than this ahead of the last heartbeat (link down: it stops)."""
    base_wait_s: float = 3.0
    """How long events wait for a heartbeat before their boot's base is taken from an event."""
    rate_window_s: float = 300.0
    """Heartbeats of this long a window measure the drift that is reported."""
    rate_fit_s: float = 10.0
    """Heartbeats of this long a window give the rate that extrapolation uses."""
    step_fault_hold_s: float = 600.0
    """A step stays an active fault this long after it was taken out."""


@dataclass(slots=True)
class _Boot:
    boot_id: int
    base: float
    """Lane time of controller timestamp 0 (unwrapped), in Unix seconds."""
    wraps: int = 0
    last_event_ms: int | None = None
    """Unwrapped timestamp of the latest event (not heartbeat) of this boot."""
    last_heartbeat_ms: int | None = None


@dataclass(frozen=True, slots=True)
class _Sample:
    received_at: float
    lane: float


@dataclass(slots=True)
class ClockCounters:
    """What the clock watch has seen since start (status topic)."""

    boots: int = 0
    steps: int = 0
    refused_unsynced: int = 0
    bases_from_events: int = 0
    stale_heartbeats: int = 0


@dataclass(slots=True)
class _Step:
    at: float
    size_s: float


class ControllerClock:
    """Maps controller timestamps to lane time and watches the controller's clock."""

    def __init__(self, settings: ClockSettings | None = None) -> None:
        self.settings = settings or ClockSettings()
        self.counters = ClockCounters()
        self._boot: _Boot | None = None
        self._pending_boot: int | None = None
        """A boot announced by HELLO whose base is not known yet."""
        self._waiting_since: float | None = None
        self._samples: deque[_Sample] = deque()
        """Recent heartbeats, over ``rate_fit_s``: the rate extrapolation uses."""
        self._history: deque[_Sample] = deque()
        """One heartbeat every few seconds over ``rate_window_s``: the drift reported."""
        self._anchor: _Sample | None = None
        """The latest heartbeat: how long the controller has not been heard is counted from it."""
        self._rate = 1.0
        """Lane seconds per agent second, measured at each heartbeat (:attr:`rate`)."""
        self._reference: _Sample | None = None
        """The heartbeat of the last ``rate_fit_s`` that arrived soonest after it was sent: lane
        and agent time convert through it. A heartbeat only ever arrives late (the link thread
        was journalling a burst of reads, or waited for the CPU), never early, so the least
        delayed one maps best; anchoring on the latest would move every deadline by its delay."""
        self._heard_at: float | None = None
        """When the device was last heard (agent clock), with or without a timestamp."""
        self._step_misses = 0
        self._last_step: _Step | None = None
        self._drift_ppm: float | None = None
        self._backlog = False
        """The last heartbeat reported events pending: lane time must not run past them."""
        self._last_event_lane: float | None = None
        self._floor = float("-inf")
        """The latest lane time handed out: a new boot's lane time never starts before it."""
        self._carried: tuple[_Sample, float] | None = None
        """The last heartbeat and rate of a previous run (restored): where lane time stood, so
        that a new boot continues it across the agent's downtime. Never used for ticks."""

    # --- state kept across restarts -------------------------------------------------------

    def export_state(self) -> dict[str, Any] | None:
        """The current boot's mapping as plain data (None before any boot is known)."""
        boot = self._boot
        if boot is None:
            return None
        anchor = self._anchor
        return {
            "boot_id": boot.boot_id,
            "base": boot.base,
            "wraps": boot.wraps,
            "last_event_ms": boot.last_event_ms,
            "floor": None if self._floor == float("-inf") else self._floor,
            "anchor": None if anchor is None else [anchor.received_at, anchor.lane],
            "rate": self.rate,
        }

    @classmethod
    def restore(
        cls, state: Mapping[str, Any] | None, settings: ClockSettings | None = None
    ) -> ControllerClock:
        """A clock that maps the boot ``state`` describes as before; ValueError if malformed."""
        clock = cls(settings)
        if state is None:
            return clock
        try:
            last = state.get("last_event_ms")
            clock._boot = _Boot(
                boot_id=int(state["boot_id"]),
                base=float(state["base"]),
                wraps=int(state["wraps"]),
                last_event_ms=None if last is None else int(last),
            )
            floor = state.get("floor")
            clock._floor = float("-inf") if floor is None else float(floor)
            anchor = state.get("anchor")
            if anchor is not None:
                clock._carried = (
                    _Sample(float(anchor[0]), float(anchor[1])),
                    float(state.get("rate", 1.0)),
                )
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise ValueError(f"controller clock state is malformed: {error!r}") from error
        return clock

    # --- inputs from the link ---------------------------------------------------------------

    @property
    def boot_id(self) -> int | None:
        """The boot whose timestamps are being mapped (None before the first)."""
        return self._boot.boot_id if self._boot else None

    def on_hello(self, boot_id: int) -> None:
        """A connection's HELLO named its boot: a different boot needs a base of its own."""
        if self._boot is not None and self._boot.boot_id == boot_id:
            self._pending_boot = None
            return
        if self._pending_boot != boot_id:
            self._pending_boot = boot_id
            self._waiting_since = None

    def on_heartbeat(
        self, uptime_ms: int, received_at: float, events_pending: int = 0
    ) -> float | None:
        """A HEARTBEAT arrived at ``received_at`` (agent clock): its lane time, None if stale.

        The first heartbeat of a new boot fixes that boot's base. Later ones measure the rate
        and reveal a clock that stepped while no event arrived: three heartbeats in a row away
        from the prediction (one late heartbeat is a stalled thread, not a step). While the
        controller reports ``events_pending`` (a backlog after an outage), lane time for ticks
        does not run past the last event delivered (:meth:`lane_now`).
        """
        self._backlog = events_pending > 0
        self._heard_at = received_at
        if self._pending_boot is not None:
            self._begin_boot(self._pending_boot, uptime_ms, received_at)
        boot = self._boot
        if boot is None:
            return None  # no HELLO yet: the heartbeat's boot is unknown
        unwrapped = self._unwrap(boot, uptime_ms, boot.last_heartbeat_ms)
        lane = boot.base + unwrapped / 1000.0
        # Judged against a prediction only once the rate is measured (three heartbeats): a
        # clock running at another rate is drift, learnt, not a string of steps.
        predicted = self.lane_estimate(received_at) if self._rate_measured else None
        went_back = boot.last_heartbeat_ms is not None and unwrapped < boot.last_heartbeat_ms
        if went_back or (
            predicted is not None and abs(lane - predicted) > self.settings.step_tolerance_s
        ):
            self._step_misses += 1
            if went_back:
                self.counters.stale_heartbeats += 1
            if self._step_misses < 3 or predicted is None:
                return None
            lane = self._take_step(boot, observed=lane, continued=predicted, at=received_at)
        self._step_misses = 0
        boot.last_heartbeat_ms = unwrapped
        self._add_sample(_Sample(received_at, lane))
        self._floor = max(self._floor, lane)
        return lane

    def on_heard(self, received_at: float) -> None:
        """The device was heard at ``received_at`` with nothing that carries its time (an LLRP
        keepalive): lane time may run on from the last mapping as after a heartbeat."""
        if self._anchor is not None:
            self._heard_at = max(self._heard_at or received_at, received_at)

    def lane_time(self, boot_id: int, timestamp_ms: int, received_at: float) -> float:
        """The lane time of an event of ``boot_id`` stamped ``timestamp_ms``, received now.

        Raises :class:`ClockNotSynced` while that boot has no base yet (its first heartbeat is
        due within a second); past :attr:`ClockSettings.base_wait_s` the event itself gives the
        base. A timestamp older than the previous event's of the same boot, or one from the
        future, is a step: taken out so that lane time stays continuous, and reported.
        """
        boot = self._boot
        if boot is None or boot.boot_id != boot_id:
            if self._pending_boot != boot_id:
                self._pending_boot = boot_id
                self._waiting_since = None
            if self._waiting_since is None:
                self._waiting_since = received_at
            if received_at - self._waiting_since < self.settings.base_wait_s:
                self.counters.refused_unsynced += 1
                raise ClockNotSynced(boot_id)
            self.counters.bases_from_events += 1
            boot = self._begin_boot(boot_id, timestamp_ms, received_at)
        unwrapped = self._unwrap(boot, timestamp_ms, boot.last_event_ms)
        lane = boot.base + unwrapped / 1000.0
        if boot.last_event_ms is not None and unwrapped < boot.last_event_ms:
            # Events of one boot arrive in seq order, which is the order they happened in.
            previous = boot.base + boot.last_event_ms / 1000.0
            lane = self._take_step(boot, observed=lane, continued=previous, at=received_at)
        else:
            predicted = self._confident_estimate(received_at)
            if predicted is not None and lane - predicted > self.settings.step_tolerance_s:
                # Nothing is received before it happens: the controller's clock jumped ahead.
                lane = self._take_step(boot, observed=lane, continued=predicted, at=received_at)
        boot.last_event_ms = unwrapped
        self._last_event_lane = lane
        self._floor = max(self._floor, lane)
        return lane

    # --- what the rest of the agent asks ------------------------------------------------------

    def lane_estimate(self, wall: float) -> float | None:
        """Lane time corresponding to agent clock ``wall``, from the recent heartbeats (None:
        none yet)."""
        reference = self._reference
        if reference is None:
            return None
        return reference.lane + (wall - reference.received_at) * self.rate

    @property
    def anchored(self) -> bool:
        """A heartbeat of the current boot has been heard since start (ticks can run)."""
        return self._anchor is not None

    def lane_now(self, wall: float, lag_s: float = 0.0) -> float | None:
        """Lane time for a tick at agent clock ``wall``, ``lag_s`` behind; None before any
        heartbeat. It stops ``max_extrapolation_s`` past the last heartbeat (the controller is
        not heard: it keeps what happens), and at the last event while a backlog drains."""
        anchor = self._anchor
        estimate = self.lane_estimate(wall - lag_s)
        if anchor is None or estimate is None:
            return None
        heard = anchor.received_at if self._heard_at is None else self._heard_at
        heard_lane = max(anchor.lane, self.lane_estimate(max(heard, anchor.received_at)) or 0.0)
        now = min(estimate, heard_lane + self.settings.max_extrapolation_s * self.rate)
        if self._backlog:
            # Events the controller still holds happened before its heartbeat's time: no tick
            # may overtake them (after a restart, before the first one arrives, none at all).
            if self._last_event_lane is None:
                return None
            now = min(now, self._last_event_lane)
        return now

    def to_wall(self, lane: float) -> float:
        """The agent-clock time of lane time ``lane`` (reported times); identity before sync."""
        reference = self._reference
        if reference is None:
            return lane
        return reference.received_at + (lane - reference.lane) / self.rate

    def from_wall(self, wall: float) -> float:
        """The lane time of agent-clock time ``wall`` (camera frames); identity before sync."""
        estimate = self.lane_estimate(wall)
        return wall if estimate is None else estimate

    @property
    def rate(self) -> float:
        """Lane seconds per agent second, over the last ``rate_fit_s`` of heartbeats (1.0 until
        measured): what extrapolation and conversions use, quick to follow a change."""
        return self._rate

    @staticmethod
    def _rate_of(samples: Sequence[_Sample]) -> float:
        """The clock rate the samples show, through the least delayed heartbeat of each half
        (a late one would tilt a line through the first and the last by its delay over the
        span: 40 ms late over 10 s is 4 ms off a second later)."""
        if len(samples) < 2:
            return 1.0
        first, last = samples[0], samples[-1]
        span = last.received_at - first.received_at
        if span < 1.5:
            return 1.0
        rate = (last.lane - first.lane) / span
        if rate <= 0:
            return 1.0
        middle = first.received_at + span / 2
        early = [s for s in samples if s.received_at <= middle]
        late = [s for s in samples if s.received_at > middle]
        for _ in range(2):  # the delays are judged against the rate: refine it once
            slope = rate
            a = min(early, key=lambda s: s.received_at - s.lane / slope)
            b = min(late, key=lambda s: s.received_at - s.lane / slope)
            if b.received_at - a.received_at < 1.0:
                break
            fitted = (b.lane - a.lane) / (b.received_at - a.received_at)
            if fitted <= 0:
                break
            rate = fitted
        return rate

    @property
    def drift_ppm(self) -> float | None:
        """Rate error of the controller's clock against the agent's (None until measured)."""
        return self._drift_ppm

    def faults(self, now: float) -> dict[ClockFault, str]:
        """Active clock faults with a message each (no card data in them)."""
        found: dict[ClockFault, str] = {}
        drift = self._drift_ppm
        if drift is not None and abs(drift) > self.settings.max_drift_ppm:
            found[ClockFault.DRIFT] = (
                f"controller clock runs {drift:+.0f} ppm against the agent's "
                f"(rate {1 + drift / 1e6:.4f}); correlation follows the controller's clock"
            )
        step = self._last_step
        if step is not None and now - step.at < self.settings.step_fault_hold_s:
            found[ClockFault.STEP] = (
                f"controller clock stepped {step.size_s:+.3f} s; the step was taken out "
                f"({self.counters.steps} steps since start)"
            )
        return found

    def status(self, now: float) -> dict[str, Any]:
        """The ``controller_clock`` section of the status document."""
        reference = self._reference
        return {
            "boot_id": None if self._boot is None else f"{self._boot.boot_id:#010x}",
            "synced": reference is not None,
            "offset_s": (
                None if reference is None else round(reference.received_at - reference.lane, 3)
            ),
            "drift_ppm": None if self._drift_ppm is None else round(self._drift_ppm, 1),
            "boots": self.counters.boots,
            "steps": self.counters.steps,
            "last_step_s": None if self._last_step is None else round(self._last_step.size_s, 3),
            "events_held_for_sync": self.counters.refused_unsynced,
        }

    # --- internals ----------------------------------------------------------------------------

    def _begin_boot(self, boot_id: int, uptime_ms: int, received_at: float) -> _Boot:
        """Map a new boot so that ``uptime_ms`` reads as now. Now is the agent's clock, or,
        when lane time ran at another rate before (a controller clock that drifts, a
        simulation played fast), where that lane time has got to; never before the latest
        lane time handed out."""
        now = received_at
        if self._anchor is not None:
            now = self.lane_estimate(received_at) or received_at
        elif self._carried is not None:
            anchor, rate = self._carried
            now = anchor.lane + (received_at - anchor.received_at) * rate
        now = max(now, self._floor)
        self._carried = None
        self._boot = _Boot(boot_id=boot_id, base=now - uptime_ms / 1000.0)
        self._pending_boot = None
        self._waiting_since = None
        self._samples.clear()
        self._history.clear()
        self._anchor = self._reference = None
        self._heard_at = None
        self._rate = 1.0
        self._step_misses = 0
        self.counters.boots += 1
        return self._boot

    def _unwrap(self, boot: _Boot, timestamp_ms: int, previous: int | None) -> int:
        """``timestamp_ms`` continued across u32 wraps, relative to the latest seen."""
        value = boot.wraps * WRAP_MS + (timestamp_ms % WRAP_MS)
        if previous is not None and previous - value > WRAP_MS // 2:
            boot.wraps += 1
            value += WRAP_MS
        return value

    def _take_step(self, boot: _Boot, *, observed: float, continued: float, at: float) -> float:
        """The clock reads ``observed`` where it should read ``continued``: move the base so
        that it reads on from ``continued``, count and remember the step; returns ``continued``.
        """
        size = observed - continued
        boot.base -= size
        self.counters.steps += 1
        self._last_step = _Step(at, size)
        self._step_misses = 0
        return continued

    def _confident_estimate(self, wall: float) -> float | None:
        """:meth:`lane_estimate`, but only from a recent heartbeat with a measured rate."""
        anchor = self._anchor
        if anchor is None or not self._rate_measured or wall - anchor.received_at > 2.0:
            return None
        return self.lane_estimate(wall)

    @property
    def _rate_measured(self) -> bool:
        """Three heartbeats over 1.5 s or more: the rate is the clock's, not the default."""
        samples = self._samples
        return len(samples) >= 3 and samples[-1].received_at - samples[0].received_at >= 1.5

    def _add_sample(self, sample: _Sample) -> None:
        samples = self._samples
        samples.append(sample)
        self._anchor = sample
        while samples and sample.received_at - samples[0].received_at > self.settings.rate_fit_s:
            samples.popleft()
        self._rate = rate = self._rate_of(samples)
        self._reference = min(samples, key=lambda s: s.received_at - s.lane / rate)
        history = self._history
        if not history or sample.received_at - history[-1].received_at >= 5.0:
            history.append(sample)
            while (
                history
                and sample.received_at - history[0].received_at > self.settings.rate_window_s
            ):
                history.popleft()
        if len(history) >= 3 and sample.received_at - history[0].received_at >= 30.0:
            # Drift over the whole window: transit jitter averages out over minutes.
            self._drift_ppm = (self._rate_of(history) - 1.0) * 1e6
