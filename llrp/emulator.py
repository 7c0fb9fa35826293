"""An LLRP reader on a loopback TCP port, playing a lane scenario; built from the same codec.

:class:`LlrpReaderEmulator` accepts one client at a time (a second one gets a
ConnectionAttemptEvent "a client is already connected" and is closed), answers it through a
:class:`~llrp.reader_model.ReaderModel`, and plays a :class:`~firmware_bridge.scenario.Scenario`
in real time scaled by ``speed``, like :class:`~firmware_bridge.simulator.ControllerSimulator`:
card reads become tag reports on their antenna, loop ``n`` is GPI port ``n`` (occupied = high),
faults become ReaderExceptionEvents.

Time. The reader has two clocks, both running on scenario time (``speed`` times real time) with
the scenario clock's drift: uptime, microseconds since this emulated reader booted (restarts on
:meth:`reboot`), and UTC, starting at the wall clock when the emulator is made. Clock steps of
the scenario move UTC only: uptime is a monotonic counter, a step is a correction of the wall
clock. Keepalives are on real time, since they watch the network.

No buffering, on purpose: what happens while no client is connected, no ROSpec is running, an
input or event kind is disabled, or while rebooting is lost, and counted by reason
(:meth:`lost_events`, :meth:`stats`), like a real reader with no report buffering configured.
When the host reads too slowly, the emulator's clock does not wait: tag reports queue up to
``max_queued_bytes`` and the rest are dropped and counted (events and responses always queue).

Every state change happens on the emulator's thread under one lock; public methods post a
request and wake the thread through a self-pipe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO

from firmware_bridge.codec import Fault, Loop, TagRead
from firmware_bridge.scenario import Scenario, ScenarioError, load_scenario
from firmware_bridge.scenario_plan import SimEvent, plan_scenario
from firmware_bridge.simulator import truth_document
from llrp.codec import (
    FrameDecoder,
    LlrpDecodeError,
    StatusCode,
    UnknownMessageTypeError,
    UnsupportedVersionError,
    encode_message,
)
from llrp.messages import MESSAGE_CLASSES, ErrorMessage, Keepalive, KeepaliveAck, Message, Response
from llrp.parameters import ConnectionAttemptEvent, ConnectionAttemptStatus, LlrpStatus
from llrp.reader_model import (
    LossReason,
    Outgoing,
    ReaderIdentity,
    ReaderModel,
    ReaderTime,
    TimestampClock,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_QUEUED_BYTES: Final = 4 << 20
"""Send queue of tag reports for a host that reads too slowly; beyond it reports are dropped."""

_MAX_SELECT_S: Final = 0.05
_RECEIVE_CHUNK: Final = 65536


@dataclass(frozen=True, slots=True)
class SentEvent:
    """A lane event that reached the client: when it happened and when its frame was written."""

    event: SimEvent
    """With ``timestamp_ms`` = the reader's uptime in milliseconds (u32), like the simulator."""
    at_s: float | None
    """Scenario time; None for events injected by a test or a burst."""
    uptime_us: int
    utc_us: int
    written_at: float
    """``time.time()`` when the frame carrying it had been written to the socket."""


@dataclass(frozen=True, slots=True)
class GpoWrite:
    """A GPO write by the client (the lane signal), with the wall time it was applied."""

    port: int
    high: bool
    at: float


@dataclass(frozen=True, slots=True)
class EmulatorStats:
    connections_accepted: int
    connections_refused: int
    """Second clients turned away, and connections during a reboot."""
    connections_dropped_silent: int
    """Clients dropped for not answering keepalives."""
    boots: int
    messages_received: int
    messages_sent: int
    undecodable_received: int
    keepalives_sent: int
    keepalive_acks: int
    reads_sent: int
    events_sent: int
    """GPI and reader-exception events of the scenario that were written."""
    lost: dict[str, int]
    """Lane events that never reached a client, by :class:`LossReason` value."""
    queue_high_water_bytes: int


@dataclass(slots=True)
class _Record:
    event: SimEvent
    at_s: float | None
    time: ReaderTime
    written_at: float | None = None
    lost: LossReason | None = None


@dataclass(slots=True)
class _Frame:
    data: bytes
    tokens: tuple[int, ...]
    offset: int = 0


class LlrpReaderEmulator:
    """An LLRP reader on ``host``:``port`` (0 = a free port; see :attr:`port`).

    ``scenario`` may be None for a reader driven only by :meth:`read_tag`, :meth:`set_gpi` and
    :meth:`burst`. With ``start_on_host`` the scenario clock starts when a connected client has
    a ROSpec running (the host is reading); otherwise at :meth:`start`.
    """

    def __init__(
        self,
        scenario: Scenario | None = None,
        *,
        speed: float = 1.0,
        identity: ReaderIdentity | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_on_host: bool = True,
        keepalive_misses_allowed: int | None = None,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        socket_send_buffer: int | None = None,
    ):
        """``socket_send_buffer`` sets SO_SNDBUF of client connections (a reader with little
        TCP buffering), so that a slow host is felt sooner."""
        if not speed > 0:
            raise ValueError(f"speed must be greater than 0, got {speed}")
        self.scenario = scenario
        self.speed = speed
        self.identity = identity if identity is not None else ReaderIdentity()
        self.start_on_host = start_on_host
        self.keepalive_misses_allowed = keepalive_misses_allowed
        self.max_queued_bytes = max_queued_bytes
        self.socket_send_buffer = socket_send_buffer
        self._plan = plan_scenario(scenario) if scenario is not None else []
        self._check_plan()

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._wake_open = True

        self._listener = socket.create_server((host, port), reuse_port=False)
        self._listener.setblocking(False)
        self.host = host
        self.port: int = self._listener.getsockname()[1]

        self.model = ReaderModel(self.identity)
        self._client: socket.socket | None = None
        self._decoder = FrameDecoder()
        self._queue: deque[_Frame] = deque()
        self._queued_bytes = 0
        self._close_after_flush = False
        self._next_message_id = 1

        self._created_at = time.monotonic()
        self._utc_origin_us = round(time.time() * 1e6)
        self._clock_started_at: float | None = None
        self._started_elapsed_us = 0
        self._boot_elapsed_us = 0
        self._boots = 1
        self._rebooting_until = 0.0
        self._plan_index = 0
        self._injected: deque[SimEvent] = deque()
        self._bursts: deque[tuple[float, TagRead]] = deque()

        self._records: list[_Record] = []
        self._written: list[int] = []
        self._gpo_history: list[GpoWrite] = []
        self._drop_requested = False
        self._reboot_requested: float | None = None
        self._keepalive_interval_ms: int | None = None
        self._next_keepalive_at = 0.0
        self._keepalives_unacked = 0
        self._counters: Counter[str] = Counter()
        self._queue_high_water = 0

    def _check_plan(self) -> None:
        name = self.scenario.name if self.scenario is not None else ""
        for planned in self._plan:
            message = planned.message
            if isinstance(message, Loop) and not 1 <= message.loop_id <= self.identity.gpis:
                raise ValueError(
                    f"scenario {name!r} has loop {message.loop_id}, but the reader has GPI ports "
                    f"1..{self.identity.gpis} (loop n is GPI port n)"
                )
            if isinstance(message, TagRead) and not 1 <= message.antenna <= self.identity.antennas:
                raise ValueError(
                    f"scenario {name!r} reads on antenna {message.antenna}, but the reader has "
                    f"antennas 1..{self.identity.antennas}"
                )

    # --- public API: lifecycle ---

    @property
    def address(self) -> str:
        """``host:port``, what the CLI prints."""
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        """Run the emulator on its own thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("emulator already started")
        self._thread = threading.Thread(target=self._run, name="llrp reader emulator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close every socket."""
        with self._lock:
            self._stopping = True
            self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._lock:
            self._close_client(abort=False)
            with contextlib.suppress(OSError):
                self._listener.close()
            if self._wake_open:
                self._wake_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def __enter__(self) -> LlrpReaderEmulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- public API: controls for tests ---

    def drop_connection(self, timeout: float = 5.0) -> None:
        """Close the client's connection abruptly (a TCP reset), like a cable pull."""
        with self._changed:
            self._drop_requested = True
            self._wake()
            if not self._changed.wait_for(lambda: not self._drop_requested, timeout):
                raise TimeoutError("emulator did not drop the connection in time (is it running?)")

    def reboot(self, downtime_s: float = 0.0, timeout: float = 5.0) -> None:
        """Power-cycle the reader: connection dropped, configuration, ROSpecs and AccessSpecs
        forgotten, outputs low, uptime from 0. For ``downtime_s`` it accepts no client and
        everything that happens is lost."""
        with self._changed:
            self._reboot_requested = downtime_s
            self._wake()
            if not self._changed.wait_for(lambda: self._reboot_requested is None, timeout):
                raise TimeoutError("emulator did not reboot in time (is it running?)")

    def refuse_config(self, refuse: bool) -> None:
        """Make every SET_READER_CONFIG fail (R_DeviceError) until called with False."""
        with self._lock:
            self.model.refuse_config = refuse

    def read_tag(
        self, epc: bytes, antenna: int = 1, rssi_dbm: float = -55.0, tid: bytes | None = None
    ) -> None:
        """A tag is read now (reported if a ROSpec over ``antenna`` is running)."""
        self._inject(TagRead(0, antenna, round(rssi_dbm * 10), epc, tid))

    def set_gpi(self, port: int, high: bool) -> None:
        """GPI ``port`` changes now (a loop: high = occupied)."""
        if not 1 <= port <= self.identity.gpis:
            raise ValueError(f"no GPI port {port} (1..{self.identity.gpis})")
        self._inject(Loop(0, port, high))

    def burst(
        self,
        count: int,
        reads_per_s: float,
        *,
        epcs: Sequence[bytes] | None = None,
        antennas: Sequence[int] = (1,),
        rssi_dbm: tuple[float, float] = (-70.0, -45.0),
        seed: int = 0,
    ) -> None:
        """``count`` tag reads from now, ``reads_per_s`` of them per real second (an Impinj
        R700 reads about 1,100 a second), cycling through ``epcs`` (default: 64 made-up
        96-bit EPCs) on ``antennas``. They go through the same reporting as any read."""
        if count < 0 or not reads_per_s > 0:
            raise ValueError("burst needs count >= 0 and reads_per_s > 0")
        rng = random.Random(seed)
        tags = (
            list(epcs)
            if epcs
            else [bytes.fromhex(f"E2801170000000000000{i:04X}") for i in range(64)]
        )
        with self._lock:
            start = max(time.monotonic(), self._bursts[-1][0] if self._bursts else 0.0)
            for index in range(count):
                read = TagRead(
                    0,
                    antennas[index % len(antennas)],
                    round(rng.uniform(*rssi_dbm) * 10),
                    tags[index % len(tags)],
                )
                self._bursts.append((start + index / reads_per_s, read))
            self._wake()

    # --- public API: what happened ---

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._client is not None

    @property
    def boots(self) -> int:
        with self._lock:
            return self._boots

    @property
    def played(self) -> bool:
        """The whole scenario has happened (not necessarily reached anyone)."""
        with self._lock:
            return self._clock_started_at is not None and self._plan_index == len(self._plan)

    @property
    def wall_time_origin(self) -> float | None:
        """The wall-clock (Unix) time at which the scenario clock started (None before)."""
        with self._lock:
            started = self._clock_started_at
            if started is None:
                return None
            return time.time() - (time.monotonic() - started)

    def reader_time(self) -> ReaderTime:
        """The reader's clocks now."""
        with self._lock:
            return self._time_now(time.monotonic())

    def sent_records(self) -> list[SentEvent]:
        """Every lane event written to a client, in the order written."""
        with self._lock:
            out = []
            for index in self._written:
                record = self._records[index]
                assert record.written_at is not None  # in _written only once written
                out.append(
                    SentEvent(
                        record.event,
                        record.at_s,
                        record.time.uptime_us,
                        record.time.utc_us,
                        record.written_at,
                    )
                )
            return out

    def sent_events(self) -> list[SimEvent]:
        """Every TagRead, Loop and Fault written to a client, in order (like the simulator)."""
        return [sent.event for sent in self.sent_records()]

    def sent_log(self) -> list[tuple[SimEvent, float]]:
        """:meth:`sent_events` with the wall time (``time.time()``) each frame was written."""
        return [(sent.event, sent.written_at) for sent in self.sent_records()]

    def lost_events(self) -> list[tuple[SimEvent, LossReason]]:
        with self._lock:
            return [(r.event, r.lost) for r in self._records if r.lost is not None]

    def gpo_history(self) -> list[GpoWrite]:
        """GPO writes made by clients, in order (the lane signal)."""
        with self._lock:
            return list(self._gpo_history)

    def gpo_state(self) -> dict[int, bool]:
        """Each output now (a reboot sets them all low)."""
        with self._lock:
            return dict(self.model.gpo_high)

    def stats(self) -> EmulatorStats:
        with self._lock:
            c = self._counters
            lost = Counter(r.lost.value for r in self._records if r.lost is not None)
            return EmulatorStats(
                connections_accepted=c["accepted"],
                connections_refused=c["refused"],
                connections_dropped_silent=c["dropped_silent"],
                boots=self._boots,
                messages_received=c["received"],
                messages_sent=c["sent"],
                undecodable_received=c["undecodable"],
                keepalives_sent=c["keepalives"],
                keepalive_acks=c["keepalive_acks"],
                reads_sent=c["reads_sent"],
                events_sent=c["events_sent"],
                lost=dict(lost),
                queue_high_water_bytes=self._queue_high_water,
            )

    def wait_for(self, predicate: Callable[[LlrpReaderEmulator], bool], timeout: float) -> bool:
        """Wait until ``predicate(self)`` holds; re-checked whenever the state changes."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def wait_done(self, timeout: float) -> bool:
        """Wait until the scenario, injected reads and bursts have all happened and nothing is
        waiting to be sent (reports still batched for their trigger count as waiting)."""
        with self._changed:
            return self._changed.wait_for(self._is_done, timeout)

    def wait_connected(self, timeout: float) -> bool:
        return self.wait_for(lambda e: e._client is not None, timeout)

    # --- the thread ---

    def _wake(self) -> None:
        if self._wake_open:
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"\x01")

    def _inject(self, event: SimEvent) -> None:
        with self._lock:
            self._injected.append(event)
            self._wake()

    def _is_done(self) -> bool:
        return (
            (self._clock_started_at is not None or not self._plan)
            and self._plan_index == len(self._plan)
            and not self._injected
            and not self._bursts
            and not self._queue
            and self.model.batched == 0
        )

    def _run(self) -> None:
        with self._lock:
            if not self.start_on_host:
                self._start_clock(time.monotonic())
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    timeout = self._step(time.monotonic())
                    client = self._client
                    wants_write = bool(self._queue)
                readers: list[Any] = [self._wake_r, self._listener]
                writers: list[Any] = []
                if client is not None:
                    readers.append(client)
                    if wants_write:
                        writers.append(client)
                with contextlib.suppress(OSError, ValueError):
                    select.select(readers, writers, [], timeout)
                with contextlib.suppress(BlockingIOError, OSError):
                    os.read(self._wake_r, 512)
        except Exception:
            logger.exception("llrp emulator: thread failed")
            raise
        finally:
            with self._lock:
                self._close_client(abort=False)
                self._changed.notify_all()

    def _step(self, now: float) -> float:
        """One turn of the reader's main loop; returns how long it may sleep."""
        if self._reboot_requested is not None:
            self._reboot(now, self._reboot_requested)
            self._reboot_requested = None
            self._changed.notify_all()
        if self._drop_requested:
            self._close_client(abort=True)
            self._drop_requested = False
            self._changed.notify_all()
        self._accept(now)
        self._receive(now)
        self._maybe_start_clock(now)
        self._play(now)
        for out in self.model.tick(self._time_now(now)):
            self._send(out.message, out.tokens, droppable=out.droppable)
        self._keepalive(now)
        self._flush()
        self._changed.notify_all()
        return self._sleep_time(now)

    def _sleep_time(self, now: float) -> float:
        wake_at = now + _MAX_SELECT_S
        if self._client is not None and self._keepalive_interval_ms:
            wake_at = min(wake_at, self._next_keepalive_at)
        if self._clock_started_at is not None and self._plan_index < len(self._plan):
            due = self._clock_started_at + self._plan[self._plan_index].at_s / self.speed
            wake_at = min(wake_at, due)
        if self._bursts:
            wake_at = min(wake_at, self._bursts[0][0])
        if self._injected:
            wake_at = now
        return max(0.0, wake_at - now)

    # --- clocks ---

    def _elapsed_us(self, now: float) -> int:
        """Reader microseconds since the emulator was made, on scenario time."""
        started = self._clock_started_at
        if started is None:
            return round((now - self._created_at) * self.speed * 1e6)
        return self._started_elapsed_us + self._drifted_us((now - started) * self.speed)

    def _drifted_us(self, scenario_s: float) -> int:
        drift = self.scenario.clock.drift_ppm if self.scenario is not None else 0.0
        return round(scenario_s * 1e6 * (1.0 + drift * 1e-6))

    def _steps_us(self, scenario_s: float | None) -> int:
        if self.scenario is None or scenario_s is None:
            return 0
        return sum(s.step_ms * 1000 for s in self.scenario.clock.steps if s.at_s <= scenario_s)

    def _time(self, elapsed_us: int, scenario_s: float | None) -> ReaderTime:
        return ReaderTime(
            uptime_us=max(0, elapsed_us - self._boot_elapsed_us),
            utc_us=max(0, self._utc_origin_us + elapsed_us + self._steps_us(scenario_s)),
        )

    def _time_now(self, now: float) -> ReaderTime:
        started = self._clock_started_at
        scenario_s = (now - started) * self.speed if started is not None else None
        return self._time(self._elapsed_us(now), scenario_s)

    def _time_planned(self, at_s: float) -> ReaderTime:
        return self._time(self._started_elapsed_us + self._drifted_us(at_s), at_s)

    def _start_clock(self, now: float) -> None:
        self._started_elapsed_us = self._elapsed_us(now)
        self._clock_started_at = now

    def _maybe_start_clock(self, now: float) -> None:
        if self._clock_started_at is None and self._client is not None and self.model.reading:
            self._start_clock(now)

    def _reboot(self, now: float, downtime_s: float) -> None:
        logger.info("llrp emulator: rebooting (down %.1f s)", downtime_s)
        self._close_client(abort=True)
        self._lose(self.model.reboot(), LossReason.DISCONNECTED)
        self._boot_elapsed_us = self._elapsed_us(now)
        self._boots += 1
        self._rebooting_until = now + downtime_s
        self._keepalive_interval_ms = None

    # --- the lane ---

    def _play(self, now: float) -> None:
        while self._injected:
            self._happen(self._injected.popleft(), None, self._time_now(now), now)
        while self._bursts and self._bursts[0][0] <= now:
            self._happen(self._bursts.popleft()[1], None, self._time_now(now), now)
        if self._clock_started_at is None:
            return
        scenario_time = (now - self._clock_started_at) * self.speed
        while self._plan_index < len(self._plan):
            planned = self._plan[self._plan_index]
            if planned.at_s > scenario_time:
                break
            self._plan_index += 1
            self._happen(planned.message, planned.at_s, self._time_planned(planned.at_s), now)

    def _happen(self, event: SimEvent, at_s: float | None, at: ReaderTime, now: float) -> None:
        stamped = replace(event, timestamp_ms=(at.uptime_us // 1000) & 0xFFFFFFFF)
        token = len(self._records)
        record = _Record(stamped, at_s, at)
        self._records.append(record)
        model = self.model
        reason: LossReason | None
        out: list[Outgoing] = []
        match event:
            case Loop():
                # The input follows the loop whatever happens to the connection.
                reason, out = model.gpi_change(event.loop_id, event.occupied, at)
            case TagRead() if self._client is not None and now >= self._rebooting_until:
                reason, out = model.tag_read(
                    token, event.epc, event.antenna, event.rssi_dbm, event.tid, at
                )
            case Fault() if self._client is not None and now >= self._rebooting_until:
                reason, out = model.reader_exception(f"{event.code_name}: {event.detail}", at)
            case _:
                reason = None
        if now < self._rebooting_until:
            reason, out = LossReason.REBOOTING, []
        elif self._client is None:
            reason, out = LossReason.NO_CLIENT, []
        record.lost = reason
        for item in out:
            tokens = item.tokens if isinstance(event, TagRead) else (token,)
            self._send(item.message, tokens, droppable=item.droppable)

    def _lose(self, tokens: Sequence[int], reason: LossReason) -> None:
        for token in tokens:
            self._records[token].lost = reason

    # --- the connection ---

    def _accept(self, now: float) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, OSError):
                return
            if now < self._rebooting_until:
                self._counters["refused"] += 1
                _abort_socket(conn)
                continue
            if self._client is not None:
                self._refuse(conn, now)
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.socket_send_buffer is not None:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
            self._client = conn
            self._decoder = FrameDecoder()
            self._close_after_flush = False
            self._keepalives_unacked = 0
            self._keepalive_interval_ms = None
            self._counters["accepted"] += 1
            self._send(self._connection_event(now, ConnectionAttemptStatus.SUCCESS), ())
            logger.info("llrp emulator: client connected")

    def _refuse(self, conn: socket.socket, now: float) -> None:
        """A second client: told why, then closed; the connected client hears of the attempt."""
        self._counters["refused"] += 1
        status = ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS
        refused = encode_message(self._connection_event(now, status), self._take_message_id())
        with contextlib.suppress(OSError):
            conn.settimeout(1.0)
            conn.sendall(refused)
        with contextlib.suppress(OSError):
            conn.close()
        attempt = ConnectionAttemptStatus.ANOTHER_CONNECTION_ATTEMPTED
        self._send(self._connection_event(now, attempt), ())

    def _connection_event(self, now: float, status: int) -> Message:
        return self.model.event_notification(
            self._time_now(now), connection_attempt_event=ConnectionAttemptEvent(status)
        )

    def _receive(self, now: float) -> None:
        client = self._client
        if client is None:
            return
        while self._client is client:
            try:
                data = client.recv(_RECEIVE_CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                logger.info("llrp emulator: client connection failed: %s", exc)
                self._close_client(abort=True)
                return
            if not data:
                logger.info("llrp emulator: client closed the connection")
                self._close_client(abort=False)
                return
            try:
                frames = self._decoder.feed(data)
            except LlrpDecodeError as exc:
                logger.warning("llrp emulator: closing an unframeable connection: %s", exc)
                self._close_client(abort=True)
                return
            for raw in frames:
                self._counters["received"] += 1
                try:
                    message = raw.decode()
                except LlrpDecodeError as exc:
                    self._counters["undecodable"] += 1
                    self._send(
                        _error_response(raw.message_type, exc), (), message_id=raw.message_id
                    )
                    continue
                self._on_message(message, raw.message_id, now)

    def _on_message(self, message: Message, message_id: int, now: float) -> None:
        if isinstance(message, KeepaliveAck):
            self._counters["keepalive_acks"] += 1
            self._keepalives_unacked = 0
        handled = self.model.handle(message, self._time_now(now))
        if handled.response is not None:
            self._send(handled.response, (), message_id=message_id)
        for out in handled.outgoing:
            self._send(out.message, out.tokens, droppable=out.droppable)
        wall = time.time()
        for port, high in handled.gpo_writes:
            self._gpo_history.append(GpoWrite(port, high, wall))
        if handled.close:
            self._close_after_flush = True

    def _keepalive(self, now: float) -> None:
        interval = self.model.keepalive_interval_ms if self._client is not None else None
        if interval != self._keepalive_interval_ms:
            self._keepalive_interval_ms = interval
            self._next_keepalive_at = now + (interval or 0) / 1000
            return
        if interval is None or now < self._next_keepalive_at:
            return
        self._next_keepalive_at = now + interval / 1000
        allowed = self.keepalive_misses_allowed
        if allowed is not None and self._keepalives_unacked > allowed:
            logger.info("llrp emulator: %d keepalives unanswered; dropping the client", allowed + 1)
            self._counters["dropped_silent"] += 1
            self._close_client(abort=True)
            return
        self._keepalives_unacked += 1
        self._counters["keepalives"] += 1
        self._send(Keepalive(), ())

    def _take_message_id(self) -> int:
        message_id = self._next_message_id
        self._next_message_id = (self._next_message_id + 1) & 0xFFFFFFFF
        return message_id

    def _send(
        self,
        message: Message,
        tokens: tuple[int, ...],
        *,
        droppable: bool = False,
        message_id: int | None = None,
    ) -> None:
        if self._client is None:
            self._lose(tokens, LossReason.DISCONNECTED)
            return
        data = encode_message(
            message, message_id if message_id is not None else self._take_message_id()
        )
        if droppable and self._queued_bytes + len(data) > self.max_queued_bytes:
            self._lose(tokens, LossReason.OVERFLOW)
            return
        self._queue.append(_Frame(data, tokens))
        self._queued_bytes += len(data)
        self._queue_high_water = max(self._queue_high_water, self._queued_bytes)

    def _flush(self) -> None:
        client = self._client
        while client is not None and self._queue:
            frame = self._queue[0]
            try:
                written = client.send(memoryview(frame.data)[frame.offset :])
            except BlockingIOError:
                return
            except OSError as exc:
                logger.info("llrp emulator: send failed: %s", exc)
                self._close_client(abort=True)
                return
            frame.offset += written
            self._queued_bytes -= written
            if frame.offset < len(frame.data):
                return
            self._queue.popleft()
            self._counters["sent"] += 1
            self._mark_written(frame.tokens)
        if client is not None and self._close_after_flush:
            self._close_client(abort=False)

    def _mark_written(self, tokens: tuple[int, ...]) -> None:
        if not tokens:
            return
        wall = time.time()
        for token in tokens:
            record = self._records[token]
            record.written_at = wall
            self._written.append(token)
            self._counters[
                "reads_sent" if isinstance(record.event, TagRead) else "events_sent"
            ] += 1

    def _close_client(self, *, abort: bool) -> None:
        client = self._client
        if client is None:
            return
        self._client = None
        for frame in self._queue:
            self._lose(frame.tokens, LossReason.DISCONNECTED)
        self._queue.clear()
        self._queued_bytes = 0
        self._lose(self.model.connection_ended(), LossReason.DISCONNECTED)
        if abort:
            _abort_socket(client)
        else:
            with contextlib.suppress(OSError):
                client.close()


def _abort_socket(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), like a reader that lost power."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _error_response(message_type: int, error: LlrpDecodeError) -> Response:
    """What a reader answers to a message it cannot take: the request's own response type
    when it knows it, else ERROR_MESSAGE."""
    if isinstance(error, UnknownMessageTypeError):
        return ErrorMessage(LlrpStatus(StatusCode.M_UNSUPPORTED_MESSAGE, str(error)))
    if isinstance(error, UnsupportedVersionError):
        return ErrorMessage(LlrpStatus(StatusCode.M_UNSUPPORTED_VERSION, str(error)))
    response_type: type[Response] = getattr(
        MESSAGE_CLASSES.get(message_type), "RESPONSE", ErrorMessage
    )
    return response_type(LlrpStatus(StatusCode.M_PARAMETER_ERROR, str(error)))


# --- the command line ---


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """``python -m llrp.emulator SCENARIO``: print ``127.0.0.1:<port>``, play the scenario once
    a client runs a ROSpec, exit when it has all been sent.

    Exit status: 0 when played and sent, 2 for a bad scenario or option, 128 + signal number
    after SIGINT or SIGTERM.
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = argparse.ArgumentParser(prog="python -m llrp.emulator", description=main.__doc__)
    parser.add_argument("scenario", type=Path, help="scenario TOML file (docs/scenarios.md)")
    parser.add_argument("--speed", type=float, default=1.0, help="scenario time per real second")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--antennas", type=int, default=4)
    parser.add_argument("--gpis", type=int, default=2)
    parser.add_argument("--gpos", type=int, default=4)
    parser.add_argument(
        "--timestamps", choices=[c.value for c in TimestampClock], default=TimestampClock.UTC.value
    )
    parser.add_argument("--truth", type=Path, help="write the scenario's truth here once it starts")
    parser.add_argument(
        "--linger-s", type=float, default=1.0, help="stay up this long after the end"
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return 2 if exit_.code else 0
    if not args.speed > 0:
        print(f"error: --speed must be greater than 0, got {args.speed}", file=err)
        return 2
    try:
        scenario = load_scenario(args.scenario)
        identity = ReaderIdentity(
            antennas=args.antennas,
            gpis=args.gpis,
            gpos=args.gpos,
            timestamps=TimestampClock(args.timestamps),
        )
        emulator = LlrpReaderEmulator(scenario, speed=args.speed, identity=identity, port=args.port)
    except (ScenarioError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=err)
        return 2

    stop_requested = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop_requested.set()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    truth_written = args.truth is None
    try:
        emulator.start()
        print(emulator.address, file=out, flush=True)
        while not stop_requested.is_set():
            done = emulator.wait_done(0.1)
            origin = emulator.wall_time_origin
            if not truth_written and origin is not None:
                document = truth_document(scenario, args.speed, origin)
                temporary = args.truth.with_name(args.truth.name + ".tmp")
                temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
                temporary.replace(args.truth)
                truth_written = True
            if done and emulator.played:
                stop_requested.wait(args.linger_s)
                break
        return 128 + received[0] if received else 0
    finally:
        emulator.stop()
        for handled, handler in previous.items():
            signal.signal(handled, handler)


if __name__ == "__main__":
    sys.exit(main())
