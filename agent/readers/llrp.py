"""An off-the-shelf LLRP reader as a reader family (``[reader] type = "llrp"``).

Impinj Speedway/R700 and Zebra FX readers speak LLRP over TCP (port 5084). The lane's loop
detectors are wired to the reader's general-purpose inputs (GPI) and the lane signal to one of
its outputs (GPO). This family owns one connection at a time (the :mod:`llrp.client` thread
reads the socket and only queues what arrives) and a session thread of its own that:

1. connects, reads the reader's capabilities and refuses, loudly and with the numbers, a lane
   configured with antennas or GPI/GPO ports the reader does not have (``reader_config_refused``
   on the status topic; retried at the longest back-off, for a technician may fix either side);
2. configures it: keepalives, GPI events for the loop ports, reader exceptions, one ROSpec that
   inventories the lane's antennas for ever and reports every read (antenna, peak RSSI, first
   and last seen), an AccessSpec reading each tag's TID when asked for;
3. asks for the loops' current state, so that an edge lost while the connection was down is
   not lost for the lane (it is stamped when the state was learnt, and logged);
4. turns reports into :class:`~agent.lane.events.TagRead` and GPI events into
   :class:`~agent.lane.events.LoopChanged`, stamped on the reader's clock, and hands every burst
   of them to the agent's sink at once (one journal transaction for a whole burst: at the
   reader's full rate, about 1,100 reads/s, one fsync per read would be most of a core);
5. drives the signal GPO, notices silence (no keepalive, report or event for
   ``silence_timeout_s``) and reconnects with a growing, jittered back-off.

LLRP carries no sequence numbers and a reader holds nothing for a client that is away (unless
told to, and then replays it at an unknown time): reads made while the agent is disconnected are
lost, as with any reader. What survives a restart of the agent is what the journal holds.

Reader time. Every report and event carries the reader's timestamp in microseconds: its uptime
(preferred: it never steps) or its UTC clock. Each message's latest timestamp, against the moment
it arrived, is a reading of the reader's clock; once a second the least delayed of them is given
to the family's :class:`~agent.readers.clock.ReaderClock` as a heartbeat, and every keepalive
tells it the reader is still there. A boot of the reader is recognised by its uptime: a new
connection whose uptime runs on from the journal's last input, as much as the agent's clock did,
is the same boot; anything else is a restart, and lane time goes on from the new boot's clock.
The resume token says which boot and clock the journal's last input came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.config.readers import LlrpReaderConfig
from agent.lane.events import LoopChanged, TagRead
from agent.logs import RateLimitedLog
from agent.readers.base import InputSink, LaneSignal, ReaderInput
from agent.readers.clock import CLOCK_FAULT_CODES, ReaderClock, ReaderTimeMixin
from agent.readers.health import READER_DOWN, LinkHealth
from agent.readers.llrp_time import LlrpReaderTime
from agent.status import iso_time
from llrp.client import LlrpClient, LlrpStatusError, Received
from llrp.codec import LlrpError
from llrp.messages import (
    AddAccessSpec,
    AddROSpec,
    DeleteAccessSpec,
    DeleteROSpec,
    EnableAccessSpec,
    EnableROSpec,
    GetReaderCapabilities,
    GetReaderConfig,
    Keepalive,
    ReaderEventNotification,
    ROAccessReport,
    SetReaderConfig,
    StartROSpec,
)
from llrp.parameters import (
    ConnectionAttemptStatus,
    EventNotificationState,
    EventsAndReports,
    EventType,
    GpiPortCurrentState,
    GpiState,
    GpoWriteData,
    KeepaliveSpec,
    KeepaliveTriggerType,
    ReaderEventNotificationData,
    ReaderEventNotificationSpec,
)
from llrp.specs import TagReportContentSelector, TagReportData, lane_rospec, tid_access_spec

logger = logging.getLogger(__name__)

FAMILY = "llrp"
FAULT_CONFIG_REFUSED = "reader_config_refused"
ROSPEC_ID = 0x4C41  # "LA": the lane agent's, so that another client's specs are told apart
ACCESS_SPEC_ID = 0x4C41
_REQUEST_TIMEOUT_S = 5.0
_STABLE_SESSION_S = 30.0
_GPI_STATE_REQUEST = 9  # GET_READER_CONFIG RequestedData: GPI current state
_MAX_BATCH = 512
"""Inputs handed to the sink (one journal transaction) at most at once."""
_GATHER_S = 0.02
"""Reads arriving within this long of the first of a batch are journalled with it: at a
reader's full rate one transaction (and fsync) per read would cost more than the reading."""
_NOTHING: Any = object()


class ReaderConfigRefusedError(Exception):
    """The reader cannot do what the lane's config asks (antennas, GPI/GPO ports, a spec)."""


class _SessionEnded(Exception):
    """The connection ended (the reader closed it, went silent, or the agent stops)."""


@dataclass(frozen=True, slots=True)
class _Closed:
    reason: BaseException | None


@dataclass(frozen=True, slots=True)
class _From:
    """Something a connection's client thread queued."""

    generation: int
    what: Received | _Closed


_Item = _From | LaneSignal | None
"""What the session thread takes: from a connection, a signal to show, or None (stop)."""


@dataclass(slots=True)
class _Counters:
    connects: int = 0
    connection_losses: int = 0
    reports: int = 0
    tag_reads: int = 0
    gpi_events: int = 0
    loop_states_recovered: int = 0
    reader_exceptions: int = 0
    keepalives: int = 0
    reads_without_timestamp: int = 0
    boots: int = 0
    messages: int = 0
    last_error: str | None = None
    last_read_at: float | None = None


class LlrpReader(ReaderTimeMixin):
    """An LLRP reader behind the reader seam."""

    family = FAMILY

    def __init__(
        self,
        config: LlrpReaderConfig,
        sink: InputSink,
        *,
        resume: str | None = None,
        clock_state: Mapping[str, Any] | None = None,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self._sink = sink
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        # Keepalives say the reader is there between reads: lane time runs on that long.
        settings = dataclasses.replace(
            config.clock_settings(),
            max_extrapolation_s=max(2.5, 1.5 * config.keepalive_s),
        )
        self.clock, problem = ReaderClock.restored(settings, clock_state)
        if problem is not None:
            logger.error("reader clock state not restorable (%s); mapping afresh", problem)
        self.time = LlrpReaderTime(
            self.clock,
            reader_key=f"{config.host}:{config.port}",
            resume=resume,
            clock_kind="uptime" if config.timestamps == "uptime" else "utc",
            rng=self._rng,
            on_boot=self._count_boot,
        )
        self._inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._generation = 0
        """Numbers connections: what an earlier connection's thread queued late is ignored."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._counters = _Counters()
        self._repeats = RateLimitedLog(logger)
        self._connected = False
        self.health = LinkHealth(wall_clock=wall_clock)
        self._identity: dict[str, Any] = {}
        self._config_refused: str | None = None
        self._signal = LaneSignal.OFF
        self._signal_warned = False
        self._loops: dict[int, bool] = _loops_in(resume)
        """GPI port → occupied, as last reported (the journal's at start: a restored vehicle on
        the loop is no new arrival when the reader says the loop is occupied)."""

    # --- the seam ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("LlrpReader.start() called twice")
        self._thread = threading.Thread(target=self._run, name="llrp-reader", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(_REQUEST_TIMEOUT_S + 5.0)
            if self._thread.is_alive():
                logger.error("LLRP reader thread still running after close()")

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def set_signal(self, signal: LaneSignal) -> None:
        self._inbox.put(signal)

    def faults(self, wall: float) -> Mapping[str, str]:
        found = self.clock.faults(wall)
        with self._lock:
            refused = self._config_refused
        if refused is not None:
            found[FAULT_CONFIG_REFUSED] = refused
        down = self.health.fault()
        if down is not None:
            found[READER_DOWN] = down
        return found

    def fault_codes(self) -> tuple[str, ...]:
        return (*CLOCK_FAULT_CODES, FAULT_CONFIG_REFUSED, READER_DOWN)

    def status(self) -> Mapping[str, Any]:
        with self._lock:
            c = self._counters
            return {
                "family": FAMILY,
                **self.health.status(),
                "reader": f"{self.config.host}:{self.config.port}",
                # LLRP names a reader by enterprise number and model number (no text).
                "reader_id": (
                    f"{self._identity['manufacturer']}/{self._identity['model']}"
                    if self._identity
                    else None
                ),
                **self._identity,
                # LLRP messages received; TCP checks its own segments, so a corrupt frame
                # cannot arrive (a message the codec refuses ends the connection instead).
                "frames": c.messages,
                "crc_errors": 0,
                "resyncs": c.connection_losses,
                "clock": self.time.clock_kind,
                "connects": c.connects,
                "connection_losses": c.connection_losses,
                "last_error": c.last_error,
                "reports": c.reports,
                "tag_reads": c.tag_reads,
                "gpi_events": c.gpi_events,
                "loop_states_recovered": c.loop_states_recovered,
                "reader_exceptions": c.reader_exceptions,
                "keepalives": c.keepalives,
                "reads_without_timestamp": c.reads_without_timestamp,
                "last_read_at": None if c.last_read_at is None else iso_time(c.last_read_at),
            }

    # --- the session thread -----------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._session()
            except ReaderConfigRefusedError as refused:
                failures = max(failures, 30)  # a technician has to act: retry slowly
                self._ended(f"configuration refused: {refused}", error=True)
                with self._lock:
                    self._config_refused = str(refused)
            except (LlrpError, OSError, _SessionEnded) as ended:
                self._ended(str(ended) or type(ended).__name__, error=False)
            except Exception:
                logger.exception("LLRP reader session failed; the reader thread ends")
                raise
            if self._stopping.is_set():
                return
            failures = 0 if time.monotonic() - started >= _STABLE_SESSION_S else failures + 1
            delay = _backoff(
                failures, self.config.reconnect_min_s, self.config.reconnect_max_s, self._rng
            )
            logger.warning(
                "LLRP reader %s:%d: reconnecting in %.1f s",
                self.config.host,
                self.config.port,
                delay,
            )
            self._stopping.wait(delay)

    def _ended(self, why: str, *, error: bool) -> None:
        with self._lock:
            was_up = self._connected
            self._connected = False
            self._counters.last_error = why
            self.health.down(why)
            if was_up:
                self._counters.connection_losses += 1
        if self._stopping.is_set():
            logger.info("LLRP reader %s:%d: closed", self.config.host, self.config.port)
            return
        log = logger.error if error else logger.warning
        log("LLRP reader %s:%d: %s", self.config.host, self.config.port, why)

    def _session(self) -> None:
        config = self.config
        self._generation += 1
        generation = self._generation
        client = LlrpClient(
            config.host,
            config.port,
            on_message=lambda received: self._inbox.put(_From(generation, received)),
            on_closed=lambda reason: self._inbox.put(_From(generation, _Closed(reason))),
        )
        try:
            client.connect(config.connect_timeout_s)
            loops = self._configure(client)
            with self._lock:
                self._connected = True
                self._config_refused = None
                self._counters.connects += 1
            self.health.up()
            logger.info(
                "LLRP reader %s:%d up: reading antennas %s, loops on GPI %s",
                config.host,
                config.port,
                ",".join(map(str, config.antennas)),
                ",".join(map(str, config.loop_gpi_ports)),
            )
            self._serve(client, loops)
        finally:
            if self._stopping.is_set():
                with contextlib.suppress(LlrpError, OSError):
                    client.close(_REQUEST_TIMEOUT_S)
            else:
                client.abort()

    def _configure(self, client: LlrpClient) -> tuple[Sequence[GpiPortCurrentState], float]:
        """Check the reader has what the lane needs, then set it up to read the lane; returns
        the loops' state as the reader read them, and when."""
        config = self.config
        capabilities = client.request(GetReaderCapabilities(), _REQUEST_TIMEOUT_S)
        general = capabilities.general_device_capabilities
        clock_kind = "uptime" if config.timestamps == "uptime" else "utc"
        if config.timestamps == "auto":
            # The clock the reader stamps its events with: UTC when it has one.
            has_utc = general is None or general.has_utc_clock_capability
            clock_kind = "utc" if has_utc else "uptime"
        self.time.connected(clock_kind)
        if general is not None:
            gpio = general.gpio_capabilities
            with self._lock:
                self._identity = {
                    "manufacturer": general.device_manufacturer_name,
                    "model": general.model_name,
                    "firmware": general.reader_firmware_version,
                    "antennas_supported": general.max_number_of_antenna_supported,
                    "gpis": gpio.num_gpis,
                    "gpos": gpio.num_gpos,
                }
            missing = [
                f"antenna {antenna}"
                for antenna in config.antennas
                if antenna > general.max_number_of_antenna_supported
            ]
            missing += [f"GPI {port}" for port in config.loop_gpi_ports if port > gpio.num_gpis]
            if config.signal_gpo_port is not None and config.signal_gpo_port > gpio.num_gpos:
                missing.append(f"GPO {config.signal_gpo_port}")
            if missing:
                raise ReaderConfigRefusedError(
                    f"the reader has {general.max_number_of_antenna_supported} antennas, "
                    f"{gpio.num_gpis} GPIs and {gpio.num_gpos} GPOs; the lane's config asks "
                    f"for {', '.join(missing)} (reader.antennas, reader.loop_gpi_ports, "
                    "reader.signal_gpo_port)"
                )
        try:
            if config.reset_on_connect:
                client.request(SetReaderConfig(reset_to_factory_default=True), _REQUEST_TIMEOUT_S)
            # Specs another client (or an earlier run) left would read and report too.
            client.request(DeleteAccessSpec(0), _REQUEST_TIMEOUT_S, check=False)
            client.request(DeleteROSpec(0), _REQUEST_TIMEOUT_S, check=False)
            events = (EventType.GPI, EventType.READER_EXCEPTION, EventType.ROSPEC)
            client.request(
                SetReaderConfig(
                    reader_event_notification_spec=ReaderEventNotificationSpec(
                        tuple(EventNotificationState(kind, True) for kind in events)
                    ),
                    keepalive_spec=KeepaliveSpec(
                        KeepaliveTriggerType.PERIODIC, round(config.keepalive_s * 1000)
                    ),
                    gpi_port_current_states=tuple(
                        GpiPortCurrentState(port, True) for port in config.loop_gpi_ports
                    ),
                    events_and_reports=EventsAndReports(False),
                ),
                _REQUEST_TIMEOUT_S,
            )
            content = TagReportContentSelector(enable_access_spec_id=config.read_tid)
            client.request(
                AddROSpec(
                    lane_rospec(
                        ROSPEC_ID,
                        config.antennas,
                        report_every_n_tags=config.report_every_n_tags,
                        content=content,
                    )
                ),
                _REQUEST_TIMEOUT_S,
            )
            if config.read_tid:
                client.request(
                    AddAccessSpec(
                        tid_access_spec(ACCESS_SPEC_ID, rospec_id=ROSPEC_ID, word_count=6)
                    ),
                    _REQUEST_TIMEOUT_S,
                )
                client.request(EnableAccessSpec(ACCESS_SPEC_ID), _REQUEST_TIMEOUT_S)
            client.request(EnableROSpec(ROSPEC_ID), _REQUEST_TIMEOUT_S)
            client.request(StartROSpec(ROSPEC_ID), _REQUEST_TIMEOUT_S)
            self._apply_signal(client)
            state = client.request(
                GetReaderConfig(requested_data=_GPI_STATE_REQUEST), _REQUEST_TIMEOUT_S
            )
        except LlrpStatusError as error:
            raise ReaderConfigRefusedError(str(error)) from error
        return state.gpi_port_current_states, self._wall_clock()

    def _serve(
        self, client: LlrpClient, loops: tuple[Sequence[GpiPortCurrentState], float]
    ) -> None:
        """Take what arrives until the connection ends or the agent stops. What arrived while
        configuring (the connection's event with the reader's time) goes first, then the loops'
        state as read at connecting."""
        silence = self.config.silence_timeout_s
        last_heard = time.monotonic()
        pending_loops: tuple[Sequence[GpiPortCurrentState], float] | None = loops
        gather_until: float | None = None
        while True:
            if self._stopping.is_set():
                raise _SessionEnded("the agent stops")
            try:
                item = self._inbox.get(
                    timeout=0.0
                    if pending_loops is not None
                    else max(0.0, last_heard + silence - time.monotonic())
                )
            except queue.Empty:
                if pending_loops is None:
                    raise _SessionEnded(f"nothing from the reader for {silence:g} s") from None
                item = _NOTHING
            batch: list[ReaderInput] = []
            while item is not _NOTHING:
                if item is None:
                    self._deliver(batch)
                    raise _SessionEnded("the agent stops")
                if isinstance(item, LaneSignal):
                    self._signal = item
                    self._deliver(batch)
                    batch = []
                    self._apply_signal(client)
                elif item.generation == self._generation:
                    what = item.what
                    if isinstance(what, _Closed):
                        self._deliver(batch)
                        raise _SessionEnded(f"the connection ended: {what.reason}")
                    last_heard = time.monotonic()
                    with self._lock:
                        self._counters.messages += 1
                    batch.extend(self._inputs_of(what))
                if len(batch) >= _MAX_BATCH:
                    break
                if batch and gather_until is None:
                    gather_until = time.monotonic() + _GATHER_S
                wait = 0.0 if gather_until is None else gather_until - time.monotonic()
                try:
                    item = self._inbox.get(timeout=wait) if wait > 0 else self._inbox.get_nowait()
                except queue.Empty:
                    break
            gather_until = None
            self._deliver(batch)
            if pending_loops is not None:
                states, read_at = pending_loops
                pending_loops = None
                self._recover_loops(states, read_at)

    def _deliver(self, batch: list[ReaderInput]) -> None:
        if not batch:
            return
        loops = {str(port): occupied for port, occupied in self._loops.items()}
        self._sink(batch, self.time.token(loops=loops), self.clock.export_state())

    # --- what the reader says ---------------------------------------------------------------

    def _inputs_of(self, received: Received) -> list[ReaderInput]:
        message = received.message
        if isinstance(message, ROAccessReport):
            with self._lock:
                self._counters.reports += 1
            # Tags of one report in the order they were seen: a reader that collects several
            # before reporting need not list them so.
            tags = sorted(
                message.tag_report_data,
                key=lambda tag: (
                    tag.first_seen_timestamp_uptime or tag.first_seen_timestamp_utc or 0
                ),
            )
            reads = [self._tag_read(tag, received) for tag in tags]
            return [read for read in reads if read is not None]
        if isinstance(message, ReaderEventNotification):
            return self._event(message.reader_event_notification_data, received)
        if isinstance(message, Keepalive):
            with self._lock:
                self._counters.keepalives += 1
            self.clock.on_heard(received.received_at)
        return []

    def _tag_read(self, tag: TagReportData, received: Received) -> TagRead | None:
        stamp = self.time.timestamp(
            uptime=tag.first_seen_timestamp_uptime, utc=tag.first_seen_timestamp_utc
        )
        latest = self.time.timestamp(
            uptime=tag.last_seen_timestamp_uptime, utc=tag.last_seen_timestamp_utc
        )
        at: float | None
        if stamp is None:
            # Not on the reader's clock: when it arrived will do.
            with self._lock:
                self._counters.reads_without_timestamp += 1
            at = self.clock.lane_now(received.received_at)
            if at is None:
                # Every read until the clock is known: a line a minute, counted.
                self._repeats.warning(
                    "LLRP read without a timestamp before the reader's clock is known"
                )
                return None
        else:
            at = self.time.lane_time(
                stamp, latest if latest is not None else stamp, received.received_at
            )
        tid = None
        for result in tag.read_results:
            if result.result == 0 and result.read_data:
                tid = result.read_data.hex().upper()
        with self._lock:
            self._counters.tag_reads += 1
            self._counters.last_read_at = received.received_at
        return TagRead(
            at=at,
            epc=tag.epc.hex().upper(),
            antenna=tag.antenna_id or 0,
            rssi_dbm=float(tag.peak_rssi) if tag.peak_rssi is not None else -100.0,
            tid=tid,
        )

    def _event(self, data: ReaderEventNotificationData, received: Received) -> list[ReaderInput]:
        stamp = self.time.timestamp(uptime=data.uptime, utc=data.utc_timestamp)
        at: float | None = None
        if stamp is not None:
            at = self.time.lane_time(stamp, stamp, received.received_at)
        attempt = data.connection_attempt_event
        if attempt is not None and attempt.status != ConnectionAttemptStatus.SUCCESS:
            logger.warning("LLRP reader refused the connection (status %d)", attempt.status)
        if data.reader_exception_event is not None:
            with self._lock:
                self._counters.reader_exceptions += 1
            self._repeats.warning("LLRP reader exception: %s", data.reader_exception_event.message)
        gpi = data.gpi_event
        if gpi is None or gpi.gpi_port_number not in self.config.loop_gpi_ports:
            return []
        with self._lock:
            self._counters.gpi_events += 1
        occupied = gpi.gpi_event == self.config.loop_occupied_when_high
        self._loops[gpi.gpi_port_number] = occupied
        if at is None:
            at = self.clock.lane_now(received.received_at)
            if at is None:
                logger.error("GPI event without a timestamp before the reader's clock is known")
                return []
        return [LoopChanged(at=at, loop_id=self._loop_id(gpi.gpi_port_number), occupied=occupied)]

    def _recover_loops(self, states: Sequence[GpiPortCurrentState], wall: float) -> None:
        """The loops as the reader reads them now: an edge missed while disconnected is
        delivered, stamped now (when it happened is not known)."""
        at = self.clock.lane_now(wall)
        changed: list[ReaderInput] = []
        for state in states:
            port = state.gpi_port_num
            if port not in self.config.loop_gpi_ports or state.state == GpiState.UNKNOWN:
                continue
            occupied = (state.state == GpiState.HIGH) == self.config.loop_occupied_when_high
            before = self._loops.get(port)
            self._loops[port] = occupied
            if before is None and not occupied:
                continue  # a clear loop at the first connect is the lane's initial state
            if before != occupied and at is not None:
                changed.append(LoopChanged(at=at, loop_id=self._loop_id(port), occupied=occupied))
                with self._lock:
                    self._counters.loop_states_recovered += 1
                logger.warning(
                    "loop %d (GPI %d) is %s on reconnecting: the edge was missed while the "
                    "reader was not connected; taken as of now",
                    self._loop_id(port),
                    port,
                    "occupied" if occupied else "clear",
                )
        self._deliver(changed)

    def _loop_id(self, port: int) -> int:
        return self.config.loop_gpi_ports.index(port) + 1

    def _count_boot(self) -> None:
        with self._lock:
            self._counters.boots += 1

    def _apply_signal(self, client: LlrpClient) -> None:
        port = self.config.signal_gpo_port
        if port is None:
            if self._signal is not LaneSignal.OFF and not self._signal_warned:
                self._signal_warned = True
                logger.error(
                    "lane signal %s asked for, but no GPO is wired (reader.signal_gpo_port)",
                    self._signal.name,
                )
            return
        high = self._signal is LaneSignal.MANUAL
        client.request(
            SetReaderConfig(gpo_write_data=(GpoWriteData(port, high),)), _REQUEST_TIMEOUT_S
        )
        if high:
            logger.warning("lane signal %s shown on GPO %d", self._signal.name, port)


def _loops_in(token: str | None) -> dict[int, bool]:
    """The loops' state a resume token of this family kept (none: nothing known)."""
    if not token:
        return {}
    try:
        fields = json.loads(token)
        loops = fields.get("loops", {}) if fields.get("family") == FAMILY else {}
        return {int(port): bool(occupied) for port, occupied in loops.items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def _backoff(attempt: int, minimum: float, maximum: float, rng: random.Random) -> float:
    """Exponential back-off with full jitter in its upper half."""
    ceiling = min(maximum, minimum * 2 ** min(attempt, 30))
    return rng.uniform(ceiling / 2, ceiling)
