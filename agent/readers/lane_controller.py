"""The project's lane controller as a reader family (``[reader] type = "lane_controller"``).

The controller speaks firmware_bridge/PROTOCOL.md over a serial line;
:class:`~firmware_bridge.link.ControllerLink` owns the port and its thread (framing, ACKs,
de-duplication, resends, reopening). This module is what the lane needs on top of it: each HELLO
names the controller's boot, each HEARTBEAT (once a second) gives the clock a reading of the
controller's uptime, and each TAG_READ or LOOP becomes a lane input stamped with the
controller's own timestamp, mapped to lane time. An event of a boot whose clock is not known yet
is deferred: the link keeps it unacknowledged and offers it again, and the controller resends it.

The resume token is the controller's boot and the event's sequence number, as JSON: the link of
the next run skips an event the journal already holds when the controller resends it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from agent.config.readers import LaneControllerConfig
from agent.lane.events import LoopChanged, TagRead
from agent.readers.base import InputDeferred, InputSink, LaneSignal, ReaderInput
from agent.readers.clock import CLOCK_FAULT_CODES, ReaderClock, ReaderTimeMixin
from agent.readers.health import READER_DOWN, LinkHealth
from agent.status import iso_time
from firmware_bridge import codec
from firmware_bridge.link import (
    ControllerEvent,
    ControllerLink,
    EventDeferred,
    EventOrigin,
    LinkDown,
    LinkDownReason,
    LinkMessage,
    LinkStats,
    LinkUp,
    SignalAcked,
    SignalFailed,
)

logger = logging.getLogger(__name__)

FAMILY = "lane_controller"
_SIGNALS = {
    LaneSignal.OFF: codec.SignalState.OFF,
    LaneSignal.PROCEED: codec.SignalState.PROCEED,
    LaneSignal.STOP: codec.SignalState.STOP,
    LaneSignal.MANUAL: codec.SignalState.MANUAL,
}


def resume_token(origin: EventOrigin) -> str:
    """The journal's note of where a controller event came from."""
    return json.dumps({"boot_id": origin.boot_id, "seq": origin.seq}, sort_keys=True)


def resume_origin(token: str | None) -> EventOrigin | None:
    """The origin a token names (None: no token, or one this family cannot read)."""
    if not token:
        return None
    try:
        fields = json.loads(token)
        return EventOrigin(int(fields["boot_id"]), int(fields["seq"]))
    except (ValueError, TypeError, KeyError) as error:
        logger.warning("resume token not from the lane controller (%s): starting afresh", error)
        return None


class LaneControllerReader(ReaderTimeMixin):
    """The lane controller on a serial line, behind the reader seam."""

    family = FAMILY

    def __init__(
        self,
        config: LaneControllerConfig,
        sink: InputSink,
        *,
        resume: str | None = None,
        clock_state: Mapping[str, Any] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._sink = sink
        self._wall_clock = wall_clock
        self.clock, problem = ReaderClock.restored(config.clock_settings(), clock_state)
        if problem is not None:
            logger.error("controller clock state not restorable (%s); mapping afresh", problem)
        self._lock = threading.Lock()
        self._faults_received = 0
        self._last_fault: str | None = None
        self._last_read_at: float | None = None
        self.health = LinkHealth(wall_clock=wall_clock)
        self.link = ControllerLink(
            config.device,
            on_message=self._on_message,
            on_event=self._on_event,
            resume=resume_origin(resume),
            baudrate=config.baudrate,
            ping_interval_s=config.ping_interval_s,
            silence_timeout_s=config.silence_timeout_s,
            signal_retry_interval_s=config.signal_ack_timeout_s,
        )

    # --- the seam ---------------------------------------------------------------------------

    def start(self) -> None:
        self.link.start()

    def close(self) -> None:
        self.link.close()

    @property
    def is_running(self) -> bool:
        return self.link.is_running

    def set_signal(self, signal: LaneSignal) -> None:
        self.link.set_signal(_SIGNALS[signal])

    def faults(self, wall: float) -> Mapping[str, str]:
        found = self.clock.faults(wall)
        self._note_link(self.link.stats())
        down = self.health.fault()
        if down is not None:
            found[READER_DOWN] = down
        return found

    def fault_codes(self) -> tuple[str, ...]:
        return (*CLOCK_FAULT_CODES, READER_DOWN)

    def status(self) -> Mapping[str, Any]:
        stats = self.link.stats()
        self._note_link(stats)
        hello = self.link.hello
        with self._lock:
            faults, last_fault, last_read = (
                self._faults_received,
                self._last_fault,
                self._last_read_at,
            )
        return {
            "family": FAMILY,
            **self.health.status(),
            "device": self.link.port,
            "reader_id": hello.controller_id if hello else None,
            "firmware": (
                f"{hello.firmware_major}.{hello.firmware_minor}.{hello.firmware_patch}"
                if hello
                else None
            ),
            "frames": stats.frames_ok,
            "crc_errors": stats.crc_errors,
            # Each rejected frame makes the decoder resynchronise at the next delimiter.
            "resyncs": stats.framing_errors
            + stats.crc_errors
            + stats.version_errors
            + stats.unknown_types
            + stats.payload_errors,
            "last_read_at": None if last_read is None else iso_time(last_read),
            "link": {key: value for key, value in asdict(stats).items() if key != "up"},
            "controller_faults": faults,
            "last_controller_fault": last_fault,
        }

    def _note_link(self, stats: LinkStats) -> None:
        """Keep the reason the link is down current: before the first HELLO no LinkDown comes,
        only the link's own counters say why (the port cannot be opened, the line is silent)."""
        if stats.up:
            return
        if stats.port_open:
            reason = "port open, no HELLO from the controller yet"
            if stats.last_problem:
                reason = f"{reason} (before: {stats.last_problem})"
        else:
            reason = stats.last_problem or f"{self.link.port} not opened yet"
        self.health.down(reason)

    # --- the link thread --------------------------------------------------------------------

    def _on_message(self, message: LinkMessage) -> None:
        """Keep the clock current and say what happened to the link (never blocks); tag reads,
        loop edges and faults come through :meth:`_on_event`."""
        match message:
            case LinkUp(hello=hello):
                self.health.up()
                previous = self.clock.boot_id
                self.clock.on_boot(hello.boot_id)
                logger.info(
                    "controller link up: %s firmware %d.%d.%d",
                    hello.controller_id,
                    hello.firmware_major,
                    hello.firmware_minor,
                    hello.firmware_patch,
                )
                if previous is not None and previous != hello.boot_id:
                    logger.info(
                        "controller restarted (boot %08x, was %08x): what it had not delivered "
                        "is lost; lane time goes on from its new clock",
                        hello.boot_id,
                        previous,
                    )
            case codec.Heartbeat():
                self.clock.on_heartbeat(
                    message.uptime_ms, self._wall_clock(), message.events_pending
                )
            case LinkDown() if message.reason is LinkDownReason.CLOSED:
                self.health.down("closed by the agent")
                logger.info("controller link closed")
            case LinkDown():
                self.health.down(f"{message.reason.value}: {message.detail}")
                logger.warning(
                    "controller link down: %s (%s)", message.reason.value, message.detail
                )
            case SignalAcked():
                logger.info("lane signal %s acknowledged by the controller", message.state.name)
            case SignalFailed():
                logger.error(
                    "lane signal %s not acknowledged after %d attempts",
                    message.state.name,
                    message.attempts,
                )

    def _on_event(self, event: ControllerEvent, origin: EventOrigin | None) -> None:
        """A TAG_READ, LOOP or FAULT, once: stamp it in lane time and hand it to the sink."""
        if isinstance(event, codec.Fault):
            with self._lock:
                self._faults_received += 1
                self._last_fault = f"{event.code}: {event.detail}"
            logger.warning("controller fault %s: %s", event.code, event.detail)
            return
        received_at = self._wall_clock()
        boot_id = origin.boot_id if origin is not None else self.clock.boot_id
        if boot_id is None:  # an orphan of a boot never mapped: its arrival time
            at, clock_state = received_at, self.clock.export_state()
        else:
            try:
                at, clock_state = self.clock.lane_time(boot_id, event.timestamp_ms, received_at)
            except InputDeferred as waiting:
                raise EventDeferred(str(waiting)) from None
        lane_input: ReaderInput
        if isinstance(event, codec.TagRead):
            lane_input = TagRead(
                at=at,
                epc=event.epc_hex,
                antenna=event.antenna,
                rssi_dbm=event.rssi_deci_dbm / 10.0,
                tid=event.tid.hex().upper() if event.tid else None,
            )
            with self._lock:
                self._last_read_at = received_at
        else:
            lane_input = LoopChanged(at=at, loop_id=event.loop_id, occupied=event.occupied)
        self._sink([lane_input], None if origin is None else resume_token(origin), clock_state)
