"""A simulated lane controller on a pseudo-terminal, built from the same codec as the link.

:class:`ControllerSimulator` plays the controller side of PROTOCOL.md: it says HELLO, plays a
:class:`~firmware_bridge.scenario.Scenario` in real time (scaled by ``speed``), keeps a window
of unacknowledged events and resends them, answers PING, applies and acknowledges SET_SIGNAL,
sends HEARTBEAT, and can misbehave like a bad cable (drop, corrupt, inject garbage). Tests and
the ``lane-agent simulate`` demo point a real :class:`~firmware_bridge.link.ControllerLink` at
its pty slave path.

All of the simulator's state is changed by its own thread under one lock; the public methods
only set requests and wait for the thread to carry them out, so file descriptors are opened and
closed by the thread that selects on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import select
import signal
import sys
import threading
import time
import tty
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

from firmware_bridge.codec import (
    PROTOCOL_VERSION,
    SEQ_MODULO,
    Ack,
    Fault,
    FaultCode,
    FrameDecoder,
    Heartbeat,
    Hello,
    Message,
    Ping,
    PingFlags,
    Pong,
    SetSignal,
    SignalState,
    TagRead,
    build_frame,
    cobs_encode,
)
from firmware_bridge.scenario import Scenario, ScenarioError, load_scenario
from firmware_bridge.scenario_plan import (
    SimEvent,
    controller_offset_ms,
    plan_scenario,
    scenario_truth,
)

logger = logging.getLogger(__name__)

DEFAULT_WINDOW: Final = 8
"""Unacknowledged events in flight, as PROTOCOL.md recommends for firmware."""

DEFAULT_RESEND_TIMEOUT_S: Final = 0.2
OUTPUT_BUFFER_LIMIT: Final = 16_384
"""Bytes queued for a pty nobody reads; beyond it frames are dropped like on a dead UART."""

_MAX_SELECT_S: Final = 0.05


@dataclass(slots=True)
class _InFlight:
    message: Hello | SimEvent
    last_sent_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class SimulatorStats:
    """What the simulated controller did on the wire."""

    frames_sent: int
    frames_dropped: int
    frames_corrupted: int
    garbage_injections: int
    frames_lost_offline: int
    frames_lost_overflow: int
    resends: int
    frames_received: int
    frames_dropped_incoming: int
    rx_errors: int
    acks_received: int
    pings_answered: int
    hello_requests: int
    events_lost_on_reboot: int
    failsafe_activations: int


@dataclass(slots=True)
class _Counters:
    frames_sent: int = 0
    frames_dropped: int = 0
    frames_corrupted: int = 0
    garbage_injections: int = 0
    frames_lost_offline: int = 0
    frames_lost_overflow: int = 0
    resends: int = 0
    frames_received: int = 0
    frames_dropped_incoming: int = 0
    acks_received: int = 0
    pings_answered: int = 0
    hello_requests: int = 0
    events_lost_on_reboot: int = 0
    failsafe_activations: int = 0


class ControllerSimulator:
    """A lane controller on a pty. ``device_path`` is what the agent opens.

    ``link_path``, when given, is kept as a symlink to the current pty slave (like socat's
    ``link=``), so that :meth:`unplug` and :meth:`replug` behave like a USB cable: the path
    vanishes and comes back. With ``start_on_host`` the scenario clock starts once the agent has
    acknowledged the boot HELLO; otherwise at :meth:`start`.
    """

    def __init__(
        self,
        scenario: Scenario,
        *,
        speed: float = 1.0,
        window: int = DEFAULT_WINDOW,
        resend_timeout_s: float = DEFAULT_RESEND_TIMEOUT_S,
        heartbeat_interval_s: float | None = None,
        host_timeout_s: float | None = 10.0,
        start_on_host: bool = True,
        link_path: Path | None = None,
        boot_id: int | None = None,
    ):
        if not speed > 0:
            raise ValueError(f"speed must be greater than 0, got {speed}")
        if not 1 <= window <= 64:
            raise ValueError(f"window must be 1..64, got {window}")
        self.scenario = scenario
        self.speed = speed
        self.window = window
        self.resend_timeout_s = resend_timeout_s
        # Every second of the controller's clock (PROTOCOL.md), which runs ``speed`` times faster.
        self.heartbeat_interval_s = (
            heartbeat_interval_s if heartbeat_interval_s is not None else 1.0 / speed
        )
        self.host_timeout_s = host_timeout_s
        self.start_on_host = start_on_host
        self.link_path = link_path

        # Re-entrant, so that wait_for() predicates may use the public properties.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        # A self-pipe wakes the thread out of select() when a request arrives.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_pipe_open = True

        self._link_rng = random.Random(scenario.seed ^ 0x5EED_11CC)
        self._plan = plan_scenario(scenario)
        self._plan_index = 0
        self._clock_started_at: float | None = None
        self._created_at = time.monotonic()
        self._started_elapsed_ms = 0
        """Controller milliseconds since the simulator was made, when the scenario clock started."""
        self._boot_elapsed_ms = 0

        self._master_fd: int | None = None
        self._slave_fd: int | None = None
        self._tty_path = ""
        self._want_plugged = True
        self._silent = False
        self._reboot_requested = False
        self._decoder = FrameDecoder(name="simulator")
        self._out = bytearray()
        self._counters = _Counters()

        self._boot_id = 0
        self._boot_started_at = 0.0
        self._next_seq = 0
        self._hello_acked = False
        self._pending: deque[SimEvent] = deque()
        self._in_flight: dict[int, _InFlight] = {}
        self._sent_events: list[SimEvent] = []
        self._sent_at: list[float] = []
        self._tag_reads = 0
        self._next_heartbeat_at = 0.0
        self._host_seen_at: float | None = None
        self._failsafe_active = False
        self._signal_history: list[SignalState] = []
        self._last_signal_command: tuple[int, SignalState] | None = None
        self._current_signal = SignalState.OFF

        self._open_pty()
        self._boot(time.monotonic(), boot_id)

    # --- public API ---

    @property
    def device_path(self) -> str:
        """The path the agent opens: ``link_path`` if given, else the pty slave."""
        with self._lock:
            return str(self.link_path) if self.link_path is not None else self._tty_path

    @property
    def boot_id(self) -> int:
        with self._lock:
            return self._boot_id

    @property
    def current_signal(self) -> SignalState:
        with self._lock:
            return self._current_signal

    @property
    def signal_history(self) -> list[SignalState]:
        """Signal states commanded by the agent, once per SET_SIGNAL (resends not repeated)."""
        with self._lock:
            return list(self._signal_history)

    def sent_events(self) -> list[SimEvent]:
        """Every TAG_READ, LOOP and FAULT given a seq so far, in seq order, as sent."""
        with self._lock:
            return list(self._sent_events)

    def sent_log(self) -> list[tuple[SimEvent, float]]:
        """:meth:`sent_events` with the wall-clock time (``time.time()``) each was first written
        to the pty: where a latency measurement starts."""
        with self._lock:
            return list(zip(self._sent_events, self._sent_at, strict=True))

    @property
    def played(self) -> bool:
        """The whole scenario has been emitted (not necessarily acknowledged)."""
        with self._lock:
            return self._plan_index == len(self._plan) and self._clock_started_at is not None

    @property
    def unacknowledged(self) -> int:
        """Events queued or in flight."""
        with self._lock:
            return len(self._pending) + len(self._in_flight)

    def stats(self) -> SimulatorStats:
        with self._lock:
            c = self._counters
            return SimulatorStats(
                frames_sent=c.frames_sent,
                frames_dropped=c.frames_dropped,
                frames_corrupted=c.frames_corrupted,
                garbage_injections=c.garbage_injections,
                frames_lost_offline=c.frames_lost_offline,
                frames_lost_overflow=c.frames_lost_overflow,
                resends=c.resends,
                frames_received=c.frames_received,
                frames_dropped_incoming=c.frames_dropped_incoming,
                rx_errors=self._decoder.counters.frames_rejected,
                acks_received=c.acks_received,
                pings_answered=c.pings_answered,
                hello_requests=c.hello_requests,
                events_lost_on_reboot=c.events_lost_on_reboot,
                failsafe_activations=c.failsafe_activations,
            )

    def start(self) -> None:
        """Run the simulator on its own thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._thread = threading.Thread(target=self.run, name="controller simulator", daemon=True)
        self._thread.start()

    def run(self) -> None:
        """Run in the calling thread until :meth:`stop` is called from another thread."""
        with self._lock:
            now = time.monotonic()
            if not self.start_on_host:
                self._start_clock(now)
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    timeout = self._step(time.monotonic())
                    master_fd = self._master_fd
                    wants_write = bool(self._out) and not self._silent
                readers = [self._wake_r] + ([master_fd] if master_fd is not None else [])
                writers = [master_fd] if master_fd is not None and wants_write else []
                select.select(readers, writers, [], timeout)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
        finally:
            with self._lock:
                self._close_pty()
                self._changed.notify_all()

    def stop(self) -> None:
        """Stop the thread, close the pty and remove ``link_path``."""
        with self._lock:
            self._stopping = True
            self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._lock:
            self._close_pty()
            if self._wake_pipe_open:
                self._wake_pipe_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def wait_done(self, timeout: float) -> bool:
        """Wait until the whole scenario has been sent and every event acknowledged."""
        with self._changed:
            return self._changed.wait_for(self._is_done, timeout)

    def wait_for(self, predicate: Callable[[ControllerSimulator], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds; it is re-checked whenever the state changes."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def wait_signal(self, state: SignalState, timeout: float) -> bool:
        """Wait until the lane signal shows ``state``."""
        with self._changed:
            return self._changed.wait_for(lambda: self._current_signal == state, timeout)

    def set_silent(self, silent: bool) -> None:
        """Go quiet like a hung controller or a cut cable: nothing sent, everything ignored.

        The scenario keeps playing; its events are delivered after the link recovers.
        """
        with self._lock:
            self._silent = silent
            self._wake()

    def unplug(self, timeout: float = 5.0) -> None:
        """Close the pty (the agent's reads fail) and remove ``link_path``."""
        self._request_plug(False, timeout)

    def replug(self, timeout: float = 5.0) -> None:
        """Open a fresh pty and point ``link_path`` at it; the controller state is kept."""
        self._request_plug(True, timeout)

    def reboot(self, timeout: float = 5.0) -> None:
        """Restart the controller: new boot id, seq from 0, queued events lost, HELLO first."""
        with self._changed:
            self._reboot_requested = True
            self._wake()
            if not self._changed.wait_for(lambda: not self._reboot_requested, timeout):
                raise TimeoutError("simulator did not reboot in time (is it running?)")

    # --- the simulator thread ---

    def _request_plug(self, plugged: bool, timeout: float) -> None:
        with self._changed:
            self._want_plugged = plugged
            self._wake()
            done = self._changed.wait_for(lambda: (self._master_fd is not None) == plugged, timeout)
            if not done:
                raise TimeoutError("simulator did not change plug state in time (is it running?)")

    def _wake(self) -> None:
        # A full pipe already holds a wake-up; a closed one has nobody left to wake.
        if self._wake_pipe_open:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\x01")

    def _open_pty(self) -> None:
        master_fd, slave_fd = os.openpty()
        tty.setraw(slave_fd)
        os.set_blocking(master_fd, False)
        self._master_fd = master_fd
        # Holding the slave open keeps the master usable while the agent reopens the port.
        self._slave_fd = slave_fd
        self._tty_path = os.ttyname(slave_fd)
        self._decoder.reset()
        self._out.clear()
        if self.link_path is not None:
            temporary = self.link_path.with_name(self.link_path.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(self._tty_path)
            temporary.replace(self.link_path)
        logger.info("simulator: controller on %s", self.device_path)

    def _close_pty(self) -> None:
        if self.link_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link_path.unlink()
        for fd in (self._master_fd, self._slave_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master_fd = None
        self._slave_fd = None

    def _boot(self, now: float, boot_id: int | None = None) -> None:
        # Differs on every power-up, as PROTOCOL.md requires (two simulators playing the same
        # scenario are two controllers), so not drawn from the scenario's seeded generators.
        self._boot_id = random.SystemRandom().getrandbits(32) if boot_id is None else boot_id
        self._boot_started_at = now
        self._boot_elapsed_ms = self._elapsed_ms(now)
        self._next_seq = 0
        self._hello_acked = False
        self._counters.events_lost_on_reboot += len(self._pending) + sum(
            1 for f in self._in_flight.values() if not isinstance(f.message, Hello)
        )
        self._pending.clear()
        self._in_flight.clear()
        self._current_signal = SignalState.OFF
        self._next_heartbeat_at = now
        self._send_hello(now)

    def _elapsed_ms(self, now: float) -> int:
        """Controller milliseconds since the simulator was made, on scenario time: ``speed``
        times faster than real time from the start (a time-lapse of the lane), with the
        scenario's drift and steps once it plays, so that the agent sees the lane's timing as
        written at any speed."""
        started = self._clock_started_at
        if started is None:
            return round((now - self._created_at) * 1000 * self.speed)
        return self._started_elapsed_ms + controller_offset_ms(
            self.scenario.clock, (now - started) * self.speed
        )

    def _uptime_ms(self, elapsed_ms: int) -> int:
        return max(0, elapsed_ms - self._boot_elapsed_ms) & 0xFFFFFFFF

    def _now_ms(self, now: float) -> int:
        return self._uptime_ms(self._elapsed_ms(now))

    def _stamp(self, at_s: float) -> int:
        """The controller timestamp of something planned at scenario time ``at_s``."""
        return self._uptime_ms(
            self._started_elapsed_ms + controller_offset_ms(self.scenario.clock, at_s)
        )

    def _start_clock(self, now: float) -> None:
        self._started_elapsed_ms = self._elapsed_ms(now)
        self._clock_started_at = now

    @property
    def wall_time_origin(self) -> float | None:
        """The agent-clock (Unix) time at which the scenario clock started (None before)."""
        with self._lock:
            started = self._clock_started_at
            if started is None:
                return None
            return time.time() - (time.monotonic() - started)

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq = (self._next_seq + 1) % SEQ_MODULO
        return seq

    def _send_hello(self, now: float) -> None:
        seq = self._take_seq()
        resume_seq = next(iter(self._in_flight), seq)
        major, minor, patch = self.scenario.firmware
        hello = Hello(
            PROTOCOL_VERSION,
            major,
            minor,
            patch,
            self._boot_id,
            resume_seq,
            self.scenario.controller_id,
        )
        self._in_flight[seq] = _InFlight(hello, now, 1)
        self._transmit(hello, seq)

    def _step(self, now: float) -> float:
        """One turn of the controller's main loop; returns how long it may sleep."""
        if self._reboot_requested:
            logger.info("simulator: rebooting")
            self._boot(now)
            self._reboot_requested = False
            self._changed.notify_all()
        if self._want_plugged != (self._master_fd is not None):
            if self._want_plugged:
                self._open_pty()
            else:
                logger.info("simulator: unplugged")
                self._close_pty()
            self._changed.notify_all()
        self._receive(now)
        self._play(now)
        self._send_new_events(now)
        self._resend(now)
        if now >= self._next_heartbeat_at:
            self._heartbeat(now)
        self._check_host(now)
        self._flush_output()
        if self._is_done():
            self._changed.notify_all()
        return self._sleep_time(now)

    def _sleep_time(self, now: float) -> float:
        wake_at = min(now + _MAX_SELECT_S, self._next_heartbeat_at)
        if self._in_flight:
            oldest = min(f.last_sent_at for f in self._in_flight.values())
            wake_at = min(wake_at, oldest + self.resend_timeout_s)
        if self._clock_started_at is not None and self._plan_index < len(self._plan):
            due = self._clock_started_at + self._plan[self._plan_index].at_s / self.speed
            wake_at = min(wake_at, due)
        return max(0.0, wake_at - now)

    def _is_done(self) -> bool:
        return (
            self._clock_started_at is not None
            and self._plan_index == len(self._plan)
            and not self._pending
            and not self._in_flight
        )

    def _receive(self, now: float) -> None:
        if self._master_fd is None:
            return
        while True:
            try:
                data = os.read(self._master_fd, 4096)
            except BlockingIOError:
                return
            except OSError as exc:
                logger.debug("simulator: read failed: %s", exc)
                return
            if not data:
                return
            if self._silent:
                continue
            for frame in self._decoder.feed(data):
                self._on_host_frame(frame.seq, frame.message, now)

    def _on_host_frame(self, seq: int, message: Message, now: float) -> None:
        link = self.scenario.link
        if link.drop_incoming_probability and (
            self._link_rng.random() < link.drop_incoming_probability
        ):
            self._counters.frames_dropped_incoming += 1
            return
        self._counters.frames_received += 1
        self._host_seen_at = now
        self._failsafe_active = False
        match message:
            case Ack():
                self._on_ack(message.acked_seq, now)
            case Ping():
                self._counters.pings_answered += 1
                self._transmit(Pong(message.nonce), 0)
                if PingFlags.HELLO_REQUEST in message.flags:
                    self._counters.hello_requests += 1
                    if not any(isinstance(f.message, Hello) for f in self._in_flight.values()):
                        self._send_hello(now)
            case SetSignal():
                self._transmit(Ack(seq), 0)
                if self._last_signal_command != (seq, message.state):
                    self._last_signal_command = (seq, message.state)
                    self._signal_history.append(message.state)
                self._current_signal = message.state
                self._changed.notify_all()
            case _:
                logger.debug("simulator: ignoring %s from host", type(message).__name__)

    def _on_ack(self, acked_seq: int, now: float) -> None:
        in_flight = self._in_flight.pop(acked_seq, None)
        if in_flight is None:
            return
        self._counters.acks_received += 1
        if isinstance(in_flight.message, Hello) and not self._hello_acked:
            self._hello_acked = True
            if self._clock_started_at is None:
                self._start_clock(now)
        self._changed.notify_all()

    def _play(self, now: float) -> None:
        if self._clock_started_at is None:
            return
        scenario_time = (now - self._clock_started_at) * self.speed
        while self._plan_index < len(self._plan):
            planned = self._plan[self._plan_index]
            if planned.at_s > scenario_time:
                break
            self._plan_index += 1
            event = dataclasses.replace(planned.message, timestamp_ms=self._stamp(planned.at_s))
            if isinstance(event, TagRead):
                self._tag_reads += 1
            self._pending.append(event)

    def _send_new_events(self, now: float) -> None:
        # After boot, nothing but HELLO until the agent has acknowledged it (PROTOCOL.md).
        if not self._hello_acked:
            return
        while self._pending and len(self._in_flight) < self.window:
            event = self._pending.popleft()
            seq = self._take_seq()
            self._in_flight[seq] = _InFlight(event, now, 1)
            self._sent_events.append(event)
            self._transmit(event, seq)
            self._flush_output()  # written now, not at the end of the step: timed from here
            self._sent_at.append(time.time())

    def _resend(self, now: float) -> None:
        for seq, in_flight in self._in_flight.items():
            if now - in_flight.last_sent_at >= self.resend_timeout_s:
                in_flight.last_sent_at = now
                in_flight.attempts += 1
                self._counters.resends += 1
                message = in_flight.message
                if isinstance(message, Hello):
                    # resume_seq is the oldest unacknowledged seq when this copy is sent
                    # (PROTOCOL.md §3): a stale one would point a new agent at acknowledged seqs.
                    message = dataclasses.replace(message, resume_seq=next(iter(self._in_flight)))
                self._transmit(message, seq)

    def _heartbeat(self, now: float) -> None:
        self._next_heartbeat_at = now + self.heartbeat_interval_s
        heartbeat = Heartbeat(
            uptime_ms=self._now_ms(now),
            tag_reads=self._tag_reads & 0xFFFFFFFF,
            events_pending=min(len(self._pending) + len(self._in_flight), 0xFFFF),
            resends=self._counters.resends & 0xFFFFFFFF,
            rx_errors=self._decoder.counters.frames_rejected & 0xFFFFFFFF,
        )
        self._transmit(heartbeat, 0)

    def _check_host(self, now: float) -> None:
        if (
            self.host_timeout_s is None
            or self._host_seen_at is None
            or self._failsafe_active
            or now - self._host_seen_at < self.host_timeout_s
        ):
            return
        self._failsafe_active = True
        self._counters.failsafe_activations += 1
        logger.warning("simulator: host silent for %.1f s; signal to MANUAL", self.host_timeout_s)
        self._current_signal = SignalState.MANUAL
        self._pending.append(
            Fault(self._now_ms(now), FaultCode.HOST_SILENT, "host silent; signal MANUAL")
        )
        self._changed.notify_all()

    def _transmit(self, message: Message, seq: int) -> None:
        if self._master_fd is None or self._silent:
            self._counters.frames_lost_offline += 1
            return
        link = self.scenario.link
        rng = self._link_rng
        if link.drop_probability and rng.random() < link.drop_probability:
            self._counters.frames_dropped += 1
            return
        frame = bytearray(build_frame(message, seq))
        if link.corrupt_probability and rng.random() < link.corrupt_probability:
            # One flipped bit inside the CRC-protected frame: CRC-16 always detects it.
            bit = rng.randrange(len(frame) * 8)
            frame[bit // 8] ^= 1 << (bit % 8)
            self._counters.frames_corrupted += 1
        wire = b"\x00" + cobs_encode(bytes(frame)) + b"\x00"
        if link.garbage_probability and rng.random() < link.garbage_probability:
            garbage = rng.randbytes(rng.randint(1, link.garbage_max_bytes))
            wire = garbage + wire
            self._counters.garbage_injections += 1
        if len(self._out) + len(wire) > OUTPUT_BUFFER_LIMIT:
            self._counters.frames_lost_overflow += 1
            return
        self._out += wire
        self._counters.frames_sent += 1

    def _flush_output(self) -> None:
        if self._master_fd is None or not self._out:
            return
        try:
            written = os.write(self._master_fd, self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            logger.debug("simulator: write failed: %s", exc)
            self._out.clear()
            return
        del self._out[:written]


def truth_document(scenario: Scenario, speed: float, wall_origin: float) -> dict[str, Any]:
    """What ``lane-agent simulate --truth FILE`` writes once the scenario clock has started.

    Scenario times convert to the crossing event's times (the agent's wall clock) as
    ``wall_time_origin + s / speed``: the simulated controller's clock runs ``speed`` times
    faster than real time, and the agent converts what it correlated on that clock back to its
    own.
    """
    truth = scenario_truth(scenario)
    return {
        "scenario": scenario.name,
        "format": scenario.format,
        "speed": speed,
        "wall_time_origin": round(wall_origin, 3),
        "shift_s": truth.shift_s,
        "vehicles": [
            {
                "index": vehicle.index,
                "arrive_s": round(vehicle.arrive_s, 3),
                "depart_s": round(vehicle.depart_s, 3),
                "arrive_at": round(wall_origin + vehicle.arrive_s / speed, 3),
                "depart_at": round(wall_origin + vehicle.depart_s / speed, 3),
                "cards": list(vehicle.cards),
                "expected_cards": list(vehicle.expected_cards),
                "plate": vehicle.plate,
                "jurisdiction": vehicle.jurisdiction,
                "loop_fault": vehicle.loop_fault,
            }
            for vehicle in truth.vehicles
        ],
        "stray_cards": list(truth.stray_cards),
    }


def run_simulator_cli(
    scenario_path: Path,
    speed: float,
    out: TextIO,
    *,
    err: TextIO | None = None,
    drain_timeout_s: float = 30.0,
    truth_path: Path | None = None,
) -> int:
    """``lane-agent simulate``: print the pty path, play the scenario, exit when acknowledged.

    With ``truth_path``, the scenario's truth (:func:`truth_document`) is written there as JSON
    as soon as the agent has taken the controller's HELLO and the scenario clock starts.

    Exit status: 0 when every event was acknowledged, 1 when the agent had not acknowledged
    them ``drain_timeout_s`` after the scenario ended, 2 for a bad scenario or speed, and
    128 + signal number after SIGINT or SIGTERM (the pty is closed cleanly either way).
    """
    err = err if err is not None else sys.stderr
    if not speed > 0:
        print(f"error: --speed must be greater than 0, got {speed}", file=err)
        return 2
    try:
        scenario = load_scenario(scenario_path)
    except ScenarioError as exc:
        print(f"error: {exc}", file=err)
        return 2

    stop_requested = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop_requested.set()

    previous_handlers: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous_handlers[signum] = signal.signal(signum, on_signal)

    simulator = ControllerSimulator(scenario, speed=speed)
    truth_written = truth_path is None
    try:
        simulator.start()
        print(simulator.device_path, file=out, flush=True)
        played_at: float | None = None
        while not stop_requested.is_set():
            done = simulator.wait_done(0.1)
            if not truth_written and truth_path is not None:
                truth_written = _write_truth(simulator, truth_path)
            if done:
                return 0
            if played_at is None and simulator.played:
                played_at = time.monotonic()
            if played_at is not None and time.monotonic() - played_at > drain_timeout_s:
                print(
                    f"error: {simulator.unacknowledged} events still unacknowledged "
                    f"{drain_timeout_s:g} s after the scenario ended; is lane-agent reading "
                    f"{simulator.device_path}?",
                    file=err,
                )
                return 1
        return 128 + received[0] if received else 0
    finally:
        simulator.stop()
        for handled, handler in previous_handlers.items():
            signal.signal(handled, handler)


def _write_truth(simulator: ControllerSimulator, path: Path) -> bool:
    wall_origin = simulator.wall_time_origin
    if wall_origin is None:
        return False
    document = truth_document(simulator.scenario, simulator.speed, wall_origin)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return True
