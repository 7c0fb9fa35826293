"""A clean stop: flush what can be flushed in the time given, say ``stopped``, disconnect.

``MqttUplink.stop(timeout_s)`` sets a deadline; the publisher loop then goes through three phases:

1. flushing: rows, live events and marks go on as usual until nothing is left or three quarters
   of the time (at least all but one second of it) has passed;
2. saying stopped: the retained availability becomes ``stopped``; once the broker acknowledged it
   (or the deadline passed) the uplink sends DISCONNECT. A normal DISCONNECT discards the will;
   without ``stopped`` delivered it asks for the ``offline`` will instead, so the retained
   availability never claims ``online`` for a stopped agent;
3. disconnecting: the broker closes the connection; past ``_DISCONNECT_GRACE_S`` after the
   deadline the client is dropped anyway.

Then the marker gets ``_SETTLE_AT_STOP_S`` to commit the last batch. Rows not acknowledged, or not
marked, by then stay in the outbox for the next run (sent again: a duplicate, never a loss).
``stop()`` waits ``STOP_JOIN_GRACE_S`` beyond its timeout for the thread, which keeps within the
first two allowances.
"""

from __future__ import annotations

import enum

import paho.mqtt.client as mqtt

from agent.mqtt import DISCONNECT_WITH_WILL
from agent.uplink.control import ControlMessages

_DISCONNECT_GRACE_S = 1.0  # after the stop deadline, for the DISCONNECT to reach the broker
SETTLE_AT_STOP_S = 2.0  # then, for the last mark to commit; unmarked rows are sent again
STOP_JOIN_GRACE_S = _DISCONNECT_GRACE_S + SETTLE_AT_STOP_S + 2.0
"""How long stop() waits beyond its timeout for the thread: the two steps above, plus a margin for
a busy machine."""


class _Phase(enum.Enum):
    FLUSHING = enum.auto()
    SAYING_STOPPED = enum.auto()
    DISCONNECTING = enum.auto()


class Stopping:
    """Where a requested stop is, and what its next step is."""

    def __init__(self, deadline: float, now: float) -> None:
        self.deadline = deadline
        # Keep a quarter of the time, at most a second, for 'stopped' and the DISCONNECT.
        self._flush_until = deadline - min(1.0, max(0.0, deadline - now) / 4)
        self._phase = _Phase.FLUSHING

    def sending(self) -> bool:
        """Whether rows and live events may still go out."""
        return self._phase is _Phase.FLUSHING

    def timers(self, now: float) -> list[float]:
        """The moments a step may become due (monotonic), for the publisher's wait."""
        steps = (self._flush_until, self.deadline, self.deadline + _DISCONNECT_GRACE_S)
        return [step for step in steps if step > now]

    def thread_deadline(self) -> float:
        """When the publisher thread must have ended (monotonic).

        stop() joins for its timeout plus STOP_JOIN_GRACE_S, and the caller closes the outbox next:
        the thread gives up on the marker by then rather than outlive the join.
        """
        return self.deadline + _DISCONNECT_GRACE_S + SETTLE_AT_STOP_S

    def advance(
        self,
        now: float,
        client: mqtt.Client,
        control: ControlMessages,
        *,
        session_up: bool,
        drained: bool,
    ) -> bool:
        """Take the steps that are due; True when the DISCONNECT did not get through in time and
        the client must be dropped."""
        flushed = now >= self._flush_until or (session_up and drained)
        if self._phase is _Phase.FLUSHING and flushed:
            self._phase = _Phase.SAYING_STOPPED
        if self._phase is _Phase.SAYING_STOPPED:
            if session_up:
                control.say_stopped(client)
            if control.stopped_acknowledged or not session_up or now >= self.deadline:
                self._phase = _Phase.DISCONNECTING
                # A normal DISCONNECT discards the will; without 'stopped' delivered, ask for the
                # will instead.
                client.disconnect(None if control.stopped_acknowledged else DISCONNECT_WITH_WILL)
        return self._phase is _Phase.DISCONNECTING and now >= self.deadline + _DISCONNECT_GRACE_S
