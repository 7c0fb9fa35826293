"""Agent side of the serial link to the lane controller.

:class:`ControllerLink` owns the serial port and one thread that does all of the port's I/O:
it decodes frames, acknowledges and de-duplicates events, hands each new controller message to
the ``on_message`` callback in sequence order, pings the controller, notices silence, reopens
the port with back-off when it vanishes (a lane cable gets unplugged) and resends SET_SIGNAL
until the controller acknowledges it.

The callback runs on the link thread and must only enqueue (or, for ``on_event``, store the
event and enqueue): while it runs, nothing is read from the port. If it raises, the event is
kept and offered again on the next tick, so a full queue slows the controller down instead of
losing a read.

An event is acknowledged to the controller only after its callback has returned, never on
mere receipt: the controller keeps resending it until then. So an agent that stores each event
in its callback (the lane agent's input journal) never leaves an acknowledged event only in
memory, and an agent killed before the callback returned gets the event again from the
controller. ``on_event`` receives each controller event with its :class:`EventOrigin` (boot and
seq), and ``resume`` tells a new link which events of the current boot a previous run already
took, so those are acknowledged again but not delivered twice.

Everything the callback receives is one of :data:`LinkMessage`: the controller's own
:class:`TagRead`, :class:`Loop`, :class:`Fault` and :class:`Heartbeat` messages, and the link's
:class:`LinkUp`, :class:`LinkDown`, :class:`SignalAcked` and :class:`SignalFailed`.
"""

from __future__ import annotations

import enum
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import serial

from firmware_bridge.codec import (
    SEQ_MODULO,
    Ack,
    DecodedFrame,
    Fault,
    FirmwareBridgeError,
    FrameDecoder,
    Heartbeat,
    Hello,
    Loop,
    Message,
    Ping,
    PingFlags,
    Pong,
    SetSignal,
    SignalState,
    TagRead,
    encode_frame,
)
from firmware_bridge.repeats import RepeatedWarning

logger = logging.getLogger(__name__)

RECEIVE_WINDOW: Final = 64
REPEAT_WARNING_INTERVAL_S: Final = 60.0
"""A warning that can repeat per frame (far-ahead events) is logged at most this often, with
how many were left out; the counters in :class:`LinkStats` keep every one."""
"""Events accepted ahead of the next expected seq. A controller's send window must not exceed
it (PROTOCOL.md recommends 8); frames further ahead are dropped unacknowledged."""

_HALF_SEQ_SPACE: Final = SEQ_MODULO // 2


class EventDeferred(FirmwareBridgeError):
    """Raised by an event callback that cannot take the event yet (the agent has no time base
    for the controller's boot): the event is kept, offered again shortly and not acknowledged,
    so the controller keeps resending it. Counted, never logged as an error."""


class LinkClosedError(FirmwareBridgeError):
    """The link was used after :meth:`ControllerLink.close`."""

    def __init__(self, port: str):
        self.port = port
        super().__init__(f"link on {port} is closed")


class LinkDownReason(enum.StrEnum):
    """Why the link stopped being up."""

    SILENCE = "silence"
    """No valid frame for the silence timeout: controller hung, unpowered or cable cut."""
    PORT_ERROR = "port_error"
    """The serial port failed or vanished (USB adapter unplugged)."""
    CONTROLLER_RESTARTED = "controller_restarted"
    """A HELLO with a new boot id arrived: events the controller had not yet sent are lost."""
    CLOSED = "closed"
    """The agent closed the link."""


@dataclass(frozen=True, slots=True)
class LinkUp:
    """The controller is talking: port open, its HELLO known, frames arriving."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class LinkDown:
    """The link stopped being up; it reopens by itself and a LinkUp follows on recovery."""

    reason: LinkDownReason
    detail: str


@dataclass(frozen=True, slots=True)
class SignalAcked:
    """The controller acknowledged the lane signal state the agent set."""

    state: SignalState


@dataclass(frozen=True, slots=True)
class SignalFailed:
    """The controller did not acknowledge a SET_SIGNAL after ``attempts`` sends.

    The link sends the state again whenever the link next comes up; until then the agent must
    assume the signal shows something else.
    """

    state: SignalState
    attempts: int


@dataclass(frozen=True, slots=True)
class EventOrigin:
    """Where a controller event came from: the controller's boot and the event's seq in it.

    A store that records the origin of the last event it took can hand it to the next link as
    ``resume``, so that an event stored just before the agent died (its ACK never sent) is not
    delivered a second time when the controller resends it.
    """

    boot_id: int
    seq: int


LinkEvent = LinkUp | LinkDown | SignalAcked | SignalFailed
ControllerEvent = TagRead | Loop | Fault
"""Controller messages delivered exactly once, in the order the controller sent them."""
LinkMessage = TagRead | Loop | Fault | Heartbeat | LinkEvent
"""Everything ``on_message`` receives."""

_SequencedMessage = Hello | TagRead | Loop | Fault


class Offer(enum.Enum):
    """What the receive side decided about one event frame."""

    NEW = "new"
    """Accepted: acknowledge; it is delivered once every earlier seq has been."""
    DUPLICATE = "duplicate"
    """Seen before (our ACK was lost): acknowledge again, deliver nothing."""
    OUT_OF_WINDOW = "out_of_window"
    """Too far ahead to hold: drop without ACK, the controller resends it later."""
    NOT_SYNCED = "not_synced"
    """No HELLO yet on this link, so no seq to count from: drop without ACK."""


class EventSequencer:
    """Receive side of the controller's event stream: de-duplication and in-order release.

    Events carry consecutive seqs (u16, wrapping). Within one controller boot every seq is
    delivered exactly once and in order: frames that arrive early are held until the gap before
    them is filled by a resend. A HELLO with a new ``boot_id`` restarts counting at its
    ``resume_seq``; anything held from the old boot is released first, gaps and all, because a
    rebooted controller never resends it.

    ``resume`` is the last event a previous run of the agent took from this controller: when
    the first HELLO is of that boot and that event lies between the HELLO's ``resume_seq`` and
    the HELLO itself (the controller still holds it unacknowledged), counting starts after it,
    so the resent copy counts as a duplicate.
    """

    def __init__(self, window: int = RECEIVE_WINDOW, *, resume: EventOrigin | None = None):
        if not 1 <= window < _HALF_SEQ_SPACE:
            raise ValueError(f"window must be 1..{_HALF_SEQ_SPACE - 1}, got {window}")
        self.window = window
        self.boot_id: int | None = None
        self.next_seq = 0
        self.events_lost = 0
        self._held: dict[int, _SequencedMessage] = {}
        self._resume = resume

    @property
    def synced(self) -> bool:
        return self.boot_id is not None

    @property
    def held_count(self) -> int:
        return len(self._held)

    def hello(self, seq: int, hello: Hello) -> tuple[Offer, list[_SequencedMessage], bool]:
        """Take a HELLO: its offer, events orphaned by a reboot (to deliver now) and whether
        it starts a new boot."""
        orphans: list[_SequencedMessage] = []
        new_boot = self.boot_id != hello.boot_id
        if new_boot:
            orphans = self._release_all()
            self.boot_id = hello.boot_id
            self.next_seq = hello.resume_seq
            resume, self._resume = self._resume, None
            if resume is not None and resume.boot_id == hello.boot_id:
                after = (resume.seq + 1) % SEQ_MODULO
                # Only within what the controller still holds, up to this HELLO: a resume point it
                # has moved past says nothing, and one beyond the HELLO is from another power-up
                # that happened to draw the same boot id.
                if (after - hello.resume_seq) % SEQ_MODULO <= (seq - hello.resume_seq) % SEQ_MODULO:
                    self.next_seq = after
        return self.offer(seq, hello), orphans, new_boot

    def is_delivered(self, seq: int) -> bool:
        """``seq`` lies before ``next_seq``: delivered (or skipped at resume), so safe to ACK."""
        return self.boot_id is not None and (seq - self.next_seq) % SEQ_MODULO >= _HALF_SEQ_SPACE

    def offer(self, seq: int, event: _SequencedMessage) -> Offer:
        if self.boot_id is None:
            return Offer.NOT_SYNCED
        ahead = (seq - self.next_seq) % SEQ_MODULO
        if ahead >= _HALF_SEQ_SPACE or seq in self._held:
            return Offer.DUPLICATE
        if ahead >= self.window:
            return Offer.OUT_OF_WINDOW
        self._held[seq] = event
        return Offer.NEW

    def next_ready(self) -> _SequencedMessage | None:
        """The event with the next expected seq, if it has arrived."""
        return self._held.get(self.next_seq)

    def advance(self) -> None:
        """Mark :meth:`next_ready` delivered."""
        del self._held[self.next_seq]
        self.next_seq = (self.next_seq + 1) % SEQ_MODULO

    def _release_all(self) -> list[_SequencedMessage]:
        released: list[_SequencedMessage] = []
        while self._held:
            event = self._held.pop(self.next_seq, None)
            if event is None:
                self.events_lost += 1
            else:
                released.append(event)
            self.next_seq = (self.next_seq + 1) % SEQ_MODULO
        return released


@dataclass(frozen=True, slots=True)
class LinkStats:
    """A snapshot of the link's counters since it was created."""

    up: bool
    port_open: bool
    port_opens: int
    open_failures: int
    port_errors: int
    silences: int
    link_ups: int
    controller_restarts: int
    frames_ok: int
    crc_errors: int
    framing_errors: int
    version_errors: int
    unknown_types: int
    payload_errors: int
    bytes_discarded: int
    unexpected_messages: int
    events_delivered: int
    heartbeats_delivered: int
    duplicates: int
    out_of_window: int
    events_before_hello: int
    events_lost: int
    acks_sent: int
    pings_sent: int
    pongs_received: int
    last_rtt_s: float | None
    signal_frames_sent: int
    signals_acked: int
    signals_failed: int
    callback_errors: int
    deliveries_deferred: int = 0
    last_problem: str | None = None
    """The latest reason the port could not be opened, failed or went silent (kept after the
    link recovers: it says what happened last)."""


@dataclass(slots=True)
class _Counters:
    port_opens: int = 0
    open_failures: int = 0
    port_errors: int = 0
    silences: int = 0
    link_ups: int = 0
    controller_restarts: int = 0
    unexpected_messages: int = 0
    events_delivered: int = 0
    heartbeats_delivered: int = 0
    duplicates: int = 0
    out_of_window: int = 0
    events_before_hello: int = 0
    acks_sent: int = 0
    pings_sent: int = 0
    pongs_received: int = 0
    signal_frames_sent: int = 0
    signals_acked: int = 0
    signals_failed: int = 0
    callback_errors: int = 0
    deliveries_deferred: int = 0
    last_problem: str | None = None


@dataclass(slots=True)
class _SignalCycle:
    """One SET_SIGNAL being resent until ACKed: the readable ACK/retransmit loop's state."""

    state: SignalState
    seq: int
    attempts: int = 0
    next_send_at: float = 0.0
    finished: bool = False


class ControllerLink:
    """The agent's end of the serial line to one lane controller.

    ``port`` is a device path (``/dev/ttyUSB0``, a udev symlink, or a pty slave in tests); it is
    opened with an exclusive lock so that ModemManager and friends keep off it. Timeouts are in
    seconds. Call :meth:`start` once, :meth:`close` at shutdown (or use ``with``).

    ``on_event``, when given, receives the controller's TAG_READ, LOOP and FAULT events instead
    of ``on_message``, each with its :class:`EventOrigin` (None for events released by a
    controller reboot, which the controller never resends: the link keeps those and offers them
    again until the callback takes them, ahead of the new boot's events). ``resume`` is the
    origin of the last event a previous run took (see :class:`EventSequencer`).
    """

    def __init__(
        self,
        port: str,
        on_message: Callable[[LinkMessage], None],
        *,
        on_event: Callable[[ControllerEvent, EventOrigin | None], None] | None = None,
        resume: EventOrigin | None = None,
        baudrate: int = 115_200,
        ping_interval_s: float = 1.0,
        silence_timeout_s: float = 3.5,
        signal_retry_interval_s: float = 0.25,
        signal_max_attempts: int = 8,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        poll_interval_s: float = 0.05,
        write_timeout_s: float = 1.0,
    ):
        if silence_timeout_s <= ping_interval_s:
            raise ValueError(
                f"silence_timeout_s ({silence_timeout_s}) must exceed ping_interval_s "
                f"({ping_interval_s}): a PONG must be able to arrive in time"
            )
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError(
                f"expected 0 < reconnect_min_s <= reconnect_max_s, got {reconnect_min_s} and "
                f"{reconnect_max_s}"
            )
        if signal_max_attempts < 1:
            raise ValueError(f"signal_max_attempts must be >= 1, got {signal_max_attempts}")
        self.port = port
        self._on_message = on_message
        self._event_callback = on_event
        self._baudrate = baudrate
        self._ping_interval_s = ping_interval_s
        self._silence_timeout_s = silence_timeout_s
        self._signal_retry_interval_s = signal_retry_interval_s
        self._signal_max_attempts = signal_max_attempts
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._poll_interval_s = poll_interval_s
        self._write_timeout_s = write_timeout_s

        self._stopping = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._signal_lock = threading.Lock()
        self._signal_request: SignalState | None = None

        # Below: touched only by the link thread (stats() reads ints, which is safe to race).
        self._serial: serial.Serial | None = None
        self._decoder = FrameDecoder(name=port)
        self._sequencer = EventSequencer(resume=resume)
        self._orphans: deque[ControllerEvent] = deque()
        """Events of a previous controller boot, released by its reboot, not yet delivered."""
        self._counters = _Counters()
        self._hello: Hello | None = None
        self._up = False
        self._last_rx_at = 0.0
        self._next_ping_at = 0.0
        self._ping_nonce = random.getrandbits(32)
        self._ping_sent_at: dict[int, float] = {}
        self._last_rtt_s: float | None = None
        self._reopen_at = 0.0
        self._backoff_s = reconnect_min_s
        self._outage_logged = False
        self._out_of_window_warning = RepeatedWarning(logger)
        self._delivery_failing = False
        self._signal_seq = 0
        self._wanted_signal: SignalState | None = None
        self._signal: _SignalCycle | None = None

    # --- public API ---

    def start(self) -> None:
        """Start the link thread; it opens the port and keeps it open until :meth:`close`."""
        if self._closed:
            raise LinkClosedError(self.port)
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"link {self.port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and close the port. Returns within about a poll interval."""
        self._closed = True
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._write_timeout_s + 5 * self._poll_interval_s + 1.0)
            if thread.is_alive():
                logger.error("link %s: thread did not stop", self.port)

    def set_signal(self, state: SignalState) -> None:
        """Ask the controller to show ``state``; resent until ACKed or the attempts run out.

        The result arrives through the callback as :class:`SignalAcked` or
        :class:`SignalFailed`. A newer call supersedes a pending one.
        """
        if self._closed:
            raise LinkClosedError(self.port)
        with self._signal_lock:
            self._signal_request = SignalState(state)

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def is_running(self) -> bool:
        """The link thread is alive: False before start(), after close() or if it crashed."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def hello(self) -> Hello | None:
        """The controller's HELLO for its current boot, once received."""
        return self._hello

    def stats(self) -> LinkStats:
        c = self._counters
        d = self._decoder.counters
        return LinkStats(
            up=self._up,
            port_open=self._serial is not None,
            port_opens=c.port_opens,
            open_failures=c.open_failures,
            port_errors=c.port_errors,
            silences=c.silences,
            link_ups=c.link_ups,
            controller_restarts=c.controller_restarts,
            frames_ok=d.frames_ok,
            crc_errors=d.crc_errors,
            framing_errors=d.framing_errors,
            version_errors=d.version_errors,
            unknown_types=d.unknown_types,
            payload_errors=d.payload_errors,
            bytes_discarded=d.bytes_discarded,
            unexpected_messages=c.unexpected_messages,
            events_delivered=c.events_delivered,
            heartbeats_delivered=c.heartbeats_delivered,
            duplicates=c.duplicates,
            out_of_window=c.out_of_window,
            events_before_hello=c.events_before_hello,
            events_lost=self._sequencer.events_lost,
            acks_sent=c.acks_sent,
            pings_sent=c.pings_sent,
            pongs_received=c.pongs_received,
            last_rtt_s=self._last_rtt_s,
            signal_frames_sent=c.signal_frames_sent,
            signals_acked=c.signals_acked,
            signals_failed=c.signals_failed,
            callback_errors=c.callback_errors,
            deliveries_deferred=c.deliveries_deferred,
            last_problem=c.last_problem,
        )

    def __enter__(self) -> ControllerLink:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the link thread ---

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if self._serial is None and now >= self._reopen_at:
                    self._open(now)
                if self._serial is None:
                    self._service_signal(now)
                    self._stopping.wait(max(0.0, min(self._poll_interval_s, self._reopen_at - now)))
                    continue
                self._read_once()
                self._service(time.monotonic())
        except Exception:
            logger.exception("link %s: thread failed", self.port)
            raise
        finally:
            self._close_port()
            self._go_down(LinkDownReason.CLOSED, "link closed")
            self._drop_orphans()

    def _drop_orphans(self) -> None:
        """At the end of the thread: orphans of a reboot the callback never took are lost.

        Nobody will offer them again (the rebooted controller does not resend them), so they
        count in ``events_lost`` like a gap a reboot leaves, and are logged.
        """
        if not self._orphans:
            return
        lost = len(self._orphans)
        self._orphans.clear()
        self._sequencer.events_lost += lost
        logger.error(
            "link %s: %d events of a previous controller boot were never taken by the callback "
            "and are lost",
            self.port,
            lost,
        )

    def _open(self, now: float) -> None:
        try:
            port = serial.Serial(
                port=self.port,
                baudrate=self._baudrate,
                timeout=self._poll_interval_s,
                write_timeout=self._write_timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            self._counters.open_failures += 1
            self._counters.last_problem = f"cannot open {self.port}: {exc}"
            if self._outage_logged:
                logger.debug("link %s: cannot open: %s", self.port, exc)
            else:
                logger.warning("link %s: cannot open, will keep trying: %s", self.port, exc)
                self._outage_logged = True
            self._schedule_reopen(now)
            return
        self._serial = port
        self._decoder.reset()
        self._counters.port_opens += 1
        self._last_rx_at = now
        self._next_ping_at = now
        logger.info("link %s: port open", self.port)

    def _schedule_reopen(self, now: float) -> None:
        # Full jitter keeps a row of lanes that lost power together from retrying in lock-step.
        self._reopen_at = now + random.uniform(0.5, 1.0) * self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self._reconnect_max_s)

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as exc:
                logger.debug("link %s: error while closing: %s", self.port, exc)

    def _port_failed(self, detail: str) -> None:
        self._counters.port_errors += 1
        self._counters.last_problem = f"port {self.port} failed: {detail}"
        logger.warning("link %s: %s", self.port, detail)
        self._outage_logged = True
        self._close_port()
        self._go_down(LinkDownReason.PORT_ERROR, detail)
        self._schedule_reopen(time.monotonic())

    def _read_once(self) -> None:
        port = self._serial
        assert port is not None
        try:
            data: bytes = port.read(max(1, port.in_waiting))
        except (serial.SerialException, OSError) as exc:
            self._port_failed(f"read failed: {exc}")
            return
        if not data:
            return
        now = time.monotonic()
        frames = 0
        for frame in self._decoder.feed(data):
            self._handle(frame, now)
            frames += 1
        self._deliver_ready()
        if frames:
            # The time our own callback took (the agent stores each event before its ACK) is no
            # silence of the controller: count from the end of the delivery, or a slow disk makes
            # the link reopen the port while frames are waiting in it.
            self._last_rx_at = max(self._last_rx_at, time.monotonic())

    def _send(self, message: Message, seq: int = 0) -> bool:
        port = self._serial
        if port is None:
            return False
        try:
            port.write(encode_frame(message, seq))
        except (serial.SerialException, OSError) as exc:
            self._port_failed(f"write failed: {exc}")
            return False
        return True

    def _handle(self, frame: DecodedFrame, now: float) -> None:
        self._last_rx_at = now
        self._backoff_s = self._reconnect_min_s
        self._outage_logged = False
        # Any valid frame from a controller whose HELLO we know means the link is up again.
        self._go_up()
        message = frame.message
        match message:
            case Hello():
                self._on_hello(frame.seq, message)
                self._go_up()
            case TagRead() | Loop() | Fault():
                self._on_event(frame.seq, message)
            case Heartbeat():
                # Before the HELLO we do not know whose heartbeat this is: not delivered.
                if self._up and self._emit(message):
                    self._counters.heartbeats_delivered += 1
            case Ack():
                self._on_ack(message)
            case Pong():
                self._counters.pongs_received += 1
                sent_at = self._ping_sent_at.pop(message.nonce, None)
                if sent_at is not None:
                    self._last_rtt_s = now - sent_at
            case SetSignal() | Ping():
                # Agent-only messages coming back: a loopback plug or crossed wiring.
                self._counters.unexpected_messages += 1

    def _on_hello(self, seq: int, hello: Hello) -> None:
        offer, orphans, new_boot = self._sequencer.hello(seq, hello)
        # Acknowledged in seq order like every event (when it is its turn, in _deliver_ready):
        # the controller's unacknowledged events then always form one run of seqs, so the next
        # agent, starting at resume_seq, never waits for a seq that will not be resent.
        if offer is Offer.DUPLICATE and self._sequencer.is_delivered(seq):
            self._send_ack(seq)
        if not new_boot:
            return
        # The rebooted controller will never resend these (no origin to resume at): they are
        # kept until the callback takes them, ahead of the new boot's events.
        self._orphans.extend(event for event in orphans if not isinstance(event, Hello))
        self._deliver_orphans()
        restarted = self._hello is not None
        self._hello = hello
        logger.info(
            "link %s: controller %s firmware %s boot %08x",
            self.port,
            hello.controller_id,
            hello.firmware_version,
            hello.boot_id,
        )
        if restarted:
            self._counters.controller_restarts += 1
            self._go_down(LinkDownReason.CONTROLLER_RESTARTED, f"new boot id {hello.boot_id:08x}")

    def _on_event(self, seq: int, event: ControllerEvent) -> None:
        offer = self._sequencer.offer(seq, event)
        if offer is Offer.NOT_SYNCED:
            self._counters.events_before_hello += 1
        elif offer is Offer.OUT_OF_WINDOW:
            self._counters.out_of_window += 1
            self._warn_out_of_window(seq)
        elif offer is Offer.DUPLICATE:
            self._counters.duplicates += 1
            # Our ACK was lost: send it again, but only for an event already handed over. A copy
            # of one still held (waiting for a gap to fill) is acknowledged when it is delivered.
            if self._sequencer.is_delivered(seq):
                self._send_ack(seq)

    def _warn_out_of_window(self, seq: int) -> None:
        # A controller that lost many ACKs can send a whole buffer ahead of the window, frame
        # after frame: one line per interval with the count, the per-frame detail at DEBUG.
        self._out_of_window_warning.warn(
            REPEAT_WARNING_INTERVAL_S,
            "link %s: event seq %d is more than %d ahead of %d; dropped unacknowledged",
            self.port,
            seq,
            self._sequencer.window,
            self._sequencer.next_seq,
        )

    def _send_ack(self, seq: int) -> None:
        if self._send(Ack(seq)):
            self._counters.acks_sent += 1

    def _deliver_orphans(self) -> bool:
        """Offer the orphans of a reboot in order; True once none is left."""
        while self._orphans:
            if not self._emit_event(self._orphans[0], None):
                return False
            self._orphans.popleft()
            self._counters.events_delivered += 1
        return True

    def _deliver_ready(self) -> None:
        # A new boot's events wait behind the previous boot's orphans (and stay unacknowledged,
        # so the controller keeps them) until the callback has taken every orphan.
        if not self._deliver_orphans():
            return
        while (event := self._sequencer.next_ready()) is not None:
            seq = self._sequencer.next_seq
            if isinstance(event, Hello):  # it delivers nothing
                self._sequencer.advance()
                self._send_ack(seq)
                continue
            boot_id = self._sequencer.boot_id
            assert boot_id is not None  # nothing is held before a HELLO
            if not self._emit_event(event, EventOrigin(boot_id, seq)):
                return  # not acknowledged: kept, offered again, and resent by the controller
            self._counters.events_delivered += 1
            self._sequencer.advance()
            self._send_ack(seq)

    def _emit_event(self, event: ControllerEvent, origin: EventOrigin | None) -> bool:
        """Hand a tag read or loop edge on; one that is refused is kept and offered again."""
        if self._event_callback is None:
            return self._emit(event, retried=True)
        on_event = self._event_callback
        return self._call(lambda: on_event(event, origin), event, retried=True)

    def _emit(self, message: LinkMessage, *, retried: bool = False) -> bool:
        return self._call(lambda: self._on_message(message), message, retried=retried)

    def _call(self, deliver: Callable[[], None], message: LinkMessage, *, retried: bool) -> bool:
        try:
            deliver()
        except EventDeferred:
            self._counters.deliveries_deferred += 1
            return False
        except Exception:
            self._counters.callback_errors += 1
            if not self._delivery_failing:
                logger.exception(
                    "link %s: on_message failed for %s%s",
                    self.port,
                    type(message).__name__,
                    "; it is kept and offered again" if retried else "",
                )
            self._delivery_failing = True
            return False
        self._delivery_failing = False
        return True

    def _go_up(self) -> None:
        if self._up or self._serial is None or self._hello is None:
            return
        self._up = True
        self._counters.link_ups += 1
        logger.info("link %s: up", self.port)
        self._emit(LinkUp(self._hello))
        # The controller may have rebooted or fallen back to MANUAL while the link was down.
        if self._wanted_signal is not None:
            self._start_signal_cycle(self._wanted_signal, time.monotonic())

    def _go_down(self, reason: LinkDownReason, detail: str) -> None:
        if not self._up:
            return
        self._up = False
        level = logging.INFO if reason is LinkDownReason.CLOSED else logging.WARNING
        logger.log(level, "link %s: down (%s): %s", self.port, reason, detail)
        self._emit(LinkDown(reason, detail))

    def _service(self, now: float) -> None:
        if now - self._last_rx_at >= self._silence_timeout_s:
            self._counters.silences += 1
            detail = f"no valid frame for {self._silence_timeout_s:g} s"
            self._counters.last_problem = (
                f"no valid frame from the controller for {self._silence_timeout_s:g} s"
            )
            logger.info("link %s: %s; reopening the port", self.port, detail)
            self._go_down(LinkDownReason.SILENCE, detail)
            self._close_port()
            self._schedule_reopen(now)
            return
        if now >= self._next_ping_at:
            self._ping(now)
        self._service_signal(now)
        self._deliver_ready()

    def _ping(self, now: float) -> None:
        self._ping_nonce = (self._ping_nonce + 1) & 0xFFFFFFFF
        flags = PingFlags.HELLO_REQUEST if self._hello is None else PingFlags.NONE
        self._next_ping_at = now + self._ping_interval_s
        # Keep only recent nonces: a PONG older than the silence timeout says nothing.
        horizon = now - self._silence_timeout_s
        self._ping_sent_at = {n: t for n, t in self._ping_sent_at.items() if t >= horizon}
        if self._send(Ping(self._ping_nonce, flags)):
            self._ping_sent_at[self._ping_nonce] = now
            self._counters.pings_sent += 1

    def _start_signal_cycle(self, state: SignalState, now: float) -> None:
        self._signal = _SignalCycle(state, self._signal_seq, next_send_at=now)
        self._signal_seq = (self._signal_seq + 1) % SEQ_MODULO

    def _service_signal(self, now: float) -> None:
        with self._signal_lock:
            request, self._signal_request = self._signal_request, None
        if request is not None:
            self._wanted_signal = request
            self._start_signal_cycle(request, now)
        cycle = self._signal
        if cycle is None or cycle.finished or now < cycle.next_send_at:
            return
        if cycle.attempts >= self._signal_max_attempts:
            cycle.finished = True
            self._counters.signals_failed += 1
            logger.warning(
                "link %s: signal %s not acknowledged after %d sends",
                self.port,
                cycle.state.name,
                cycle.attempts,
            )
            self._emit(SignalFailed(cycle.state, cycle.attempts))
            return
        cycle.attempts += 1
        cycle.next_send_at = now + self._signal_retry_interval_s
        if self._send(SetSignal(cycle.state), cycle.seq):
            self._counters.signal_frames_sent += 1

    def _on_ack(self, ack: Ack) -> None:
        cycle = self._signal
        if cycle is None or cycle.finished or ack.acked_seq != cycle.seq:
            return
        cycle.finished = True
        self._counters.signals_acked += 1
        logger.info("link %s: signal %s acknowledged", self.port, cycle.state.name)
        self._emit(SignalAcked(cycle.state))
