"""Composition root: builds the adapters, runs the lane engine, shuts down cleanly.

Threads and who owns what:

* the reader family's thread (:mod:`agent.readers`: the lane controller on its serial port, or an
  LLRP reader over TCP) owns the device; it journals each input through the service's sink and
  enqueues it;
* the uplink's publisher thread owns the MQTT session: it drives paho's socket itself, reads the
  outbox and hands acknowledged rows to a small marker thread that marks them sent; paho
  callbacks only record what happened;
* the engine thread (the caller of ``LaneService.run``) owns all lane state: it takes inputs
  from the one inbox, runs the pure lane core, looks cards up in the cache, commits each
  crossing to the outbox and only then wakes the publisher.

A crossing therefore exists on disk before anyone hears of it, and nothing but the engine
thread ever touches lane state.

Before that, every tag read and loop edge is journalled (``agent/state/journal.py``) on the
reader's thread before the device gets its ACK, stamped in lane time, and goes to the engine
with its journal id. Each committed crossing clears, in its own transaction, the journal
rows the engine had applied when it closed, together with a checkpoint of the engine's state. At
start the engine is restored from the last checkpoint and the rows after it are replayed with
their original times, before the link opens: the vehicle that was at the booth when the agent
died is back, and crossings the replay closes that were stored before are recognised by their
number and not stored again.

Every input is stamped in lane time (:mod:`agent.lane.clock`): the device's own timestamp,
mapped per device boot by the reader family, never the time it happened to arrive; an input of
a boot with no time base yet is deferred by the family (the lane controller keeps resending it). Time passing on a quiet lane is lane time too
(:meth:`~agent.lane.clock.ControllerClock.lane_now`): it stands still while the controller is not
heard and while it drains a backlog, so a restart or a cable pull is no idle time at the booth:
the controller's buffered events, resent, say what happened when. Without a controller no input
can arrive, so a restored vehicle waits for the link however long it takes (a stop meanwhile
leaves it in the journal). A controller that rebooted lost what it had not delivered; its new
boot's lane time simply goes on, and the restored crossing's timers close it.

A publisher that failed (``UplinkState.FAILED``) is rebuilt in-process a few times
(:meth:`~agent.delivery.Delivery.uplink_failed`); past that it would leave crossings piling
up unsent, and a link thread that ended would leave the lane deaf: the service stops and exits
non-zero (``EXIT_UPLINK_FAILED``, ``EXIT_LINK_FAILED``) so that systemd restarts it. Such a stop
leaves the crossing at the booth in the journal, like a crash, rather than closing it: the
journal and the outbox make the restart lose nothing, and the vehicle stays one crossing. A plain
stop (SIGTERM) closes and stores it (see ``docs/delivery.md``, stops and restarts).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.cache import CredentialCache
from agent.cache.channel import CacheChannel
from agent.config import AgentConfig
from agent.delivery import Delivery
from agent.lane.correlator import LoopFault
from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, LoopChanged, PlateSeen, TagRead, Tick, VisionChanged
from agent.lane.policy import Decision
from agent.live_publisher import LiveCrossingPublisher
from agent.readers import LaneReader, ReaderInput, open_reader
from agent.sdnotify import SystemdNotifier
from agent.state.journal import (
    ClosedCrossing,
    InputJournal,
    JournalError,
    JournalInput,
    JournalledEngine,
)
from agent.uplink.publisher import UplinkState
from agent.wire.crossing_event import (
    LaneIdentity,
    build_crossing_event,
    encode,
    plate_image,
    uuid7,
)
from agent.wire.live_event import crossing_id
from agent.wire.topics import Topics

if TYPE_CHECKING:
    from agent.page.lane_page import LanePage
    from agent.vision.capture import FrameSource

logger = logging.getLogger(__name__)

TICK_LAG_S = 0.02
"""Ticks run this far behind the controller's clock, so that an event still on the wire is not
overtaken by a tick (it would be applied out of order); one being journalled holds ticks back
itself (``_inputs_in_transit``). Each departure waits this long on top of its confirmation
before its crossing closes: part of the booth's departure → final crossing latency."""
STATUS_REFRESH_S = 1.0
"""How often the engine thread refreshes the lane's own faults (loop, controller clock)."""
EXIT_UPLINK_FAILED = 70
"""Exit status (EX_SOFTWARE) when the uplink's publisher thread failed: systemd restarts us."""
EXIT_LINK_FAILED = 70
"""Exit status (EX_SOFTWARE) when the reader's thread ended: systemd restarts us."""
LIVE_MIN_GAP_S = 0.005
LIVE_SHARE = 0.1
"""The open crossing is re-judged for the booth's live view after inputs or ticks, at least
``LIVE_MIN_GAP_S`` apart and spaced so that judging takes at most this share of the engine
thread's time: a judgement costs about a millisecond per thousand reads of the stay, and a
reader can deliver a thousand reads a second. A small crossing is shown within milliseconds of
the frame that changed it; under a flood of reads the booth's view lags rather than the lane."""
IDLE_CHECKPOINT_S = 10.0
"""While no crossing closes, the engine state is checkpointed this often (if inputs arrived), so
the journal stays short during a long stay at the booth or a burst of dropped reads."""


_LOOP_FAULT_CODES = tuple(fault.value for fault in LoopFault)
"""Faults the lane raises itself from the presence loop (the reader raises its own)."""


@dataclass(frozen=True, slots=True)
class ControllerInput:
    """A tag read or loop edge from the reader, on its way from the reader's thread to the engine.

    ``journal_id`` is its input-journal row; None when it could not be journalled
    (``journal_error`` says why) and lives in memory only.
    """

    lane_input: JournalInput
    journal_id: int | None
    journal_error: str = ""


@dataclass(frozen=True, slots=True)
class UplinkChanged:
    """The MQTT uplink changed state (enqueued from the uplink's callback)."""

    state: UplinkState


@dataclass(slots=True)
class ServiceCounters:
    """What the engine thread has done since start (logged on exit, shown on status)."""

    crossings: int = 0
    tag_reads: int = 0
    loop_events: int = 0
    replayed_inputs: int = 0
    """Journalled inputs replayed at start (the vehicle at the booth when the agent stopped)."""
    replayed_already_stored: int = 0
    """Crossings the replay closed again that had been stored before: not stored twice."""
    by_recommendation: dict[str, int] = field(default_factory=dict)


class LaneService:
    """One lane: reader → lane engine → outbox → MQTT uplink."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        clock: Callable[[], float] = time.time,
        notifier: SystemdNotifier | None = None,
        camera_source: FrameSource | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.camera_source = camera_source
        """Frames from this object instead of ``camera.source`` (the demo's synthetic camera)."""
        self.notifier = notifier or SystemdNotifier()
        self.counters = ServiceCounters()
        self.inbox: queue.Queue[object] = queue.Queue()
        self.ready = threading.Event()
        self.reader: LaneReader | None = None
        """The reader family (None until ``run``): inputs, lane time, the lane signal."""
        self.live: LiveCrossingPublisher | None = None
        """Live crossing events for the booth (None until ``run``, or with ``live.enabled`` off)."""
        self.page: LanePage | None = None
        """The lane page and /metrics (None until ``run``, or with ``page.enabled`` off)."""
        self._restored_open = False
        """A crossing open at the last stop was restored and no heartbeat has been heard since."""
        self._systemd_status = ""
        """The STATUS= line last sent to systemd (sent again only when it changes)."""
        self._inputs_in_transit = 0
        """Reader thread writes: inputs being journalled, not yet in the inbox. While any is, the
        engine applies no tick (the tick could overtake it); its arrival wakes the engine."""
        self._journal_recovering = False
        """Engine thread: an input was journalled again while the journal fault is raised."""
        self._exit_status = 0
        """Engine thread: non-zero once an adapter failed for good (the uplink reported FAILED,
        the link thread ended): the loop ends and run() returns it, for systemd to restart us."""
        self.topics = Topics(config.mqtt.topic_prefix, config.lane.port_id, config.lane.lane_id)
        self.identity = LaneIdentity(
            port_id=config.lane.port_id,
            lane_id=config.lane.lane_id,
            lane_type=config.lane.lane_type,
            agent_version=__version__,
        )

    def run(self, stop: threading.Event) -> int:
        """Run until ``stop`` is set; return the process exit code."""
        config = self.config
        page_settings = None
        if config.page.enabled:
            # Its credential and TLS files first: a config error stops us before anything opens.
            from agent.page.lane_page import page_settings as read_page_settings

            page_settings = read_page_settings(config.page)
        cache = CredentialCache.open(config.cache.path)
        # Freshness for the engine; with cache.trust_file, central's signed updates over MQTT.
        self.cache_channel = cache_channel = CacheChannel(config, cache, clock=self.clock)
        # Outbox, uplink, status and the fail-safe for crossings that cannot be stored.
        delivery = Delivery.open(
            config,
            self.topics,
            {"port_id": config.lane.port_id, "lane_id": config.lane.lane_id, "agent": __version__},
            on_state_change=lambda state: self.inbox.put_nowait(UplinkChanged(state)),
            clock=self.clock,
        )
        self.delivery = delivery
        delivery.board.contribute("cache", cache_channel.status)  # version, age, refusals
        outbox, journal = delivery.outbox, delivery.journal
        correlation, lane_policy = config.correlation_settings(), config.lane_policy()
        plates = None
        if config.camera.enabled:
            # cv2 and onnxruntime load only in a lane with a camera (docs/vision.md).
            from agent.vision.pipeline import build_plate_pipeline

            plates = build_plate_pipeline(
                config,
                self.inbox.put_nowait,
                board=delivery.board,
                clock=self.clock,
                source=self.camera_source,
            )

        def cache_fresh_at() -> float | None:
            fresh = cache_channel.fresh_at()  # the agent's clock; the engine works in lane time
            return None if fresh is None else self._from_wall(fresh)

        def make_engine(state: dict[str, Any] | None) -> LaneEngine:
            return LaneEngine(
                correlation,
                lane_policy,
                cache.lookup,
                cache_fresh_at,
                state=state,
            )

        # The engine as the journal left it: the last checkpoint, inputs after it still to replay.
        lane = JournalledEngine(journal, make_engine)
        reader = open_reader(
            config.reader,
            lambda inputs, resume, clock_state: self._take_inputs(
                journal, inputs, resume, clock_state
            ),
            resume=lane.resume,
            clock_state=lane.recovery.clock,
        )
        self.reader = reader
        if page_settings is not None:
            from agent.page.lane_page import start_page

            snapshot = None if plates is None else plates.snapshot_jpeg
            self.page = start_page(page_settings, delivery.board, snapshot=snapshot)
        page = None if self.page is None else self.page.feed
        live = (
            None
            if delivery.live is None and page is None
            else LiveCrossingPublisher(
                delivery.live, self.identity, cache_channel.cache_info, clock=self.clock, page=page
            )
        )
        self.live = live
        delivery.board.contribute("reader", reader.status)
        delivery.board.contribute("controller_clock", lambda: reader.clock_status(self.clock()))
        delivery.board.contribute("correlation", lambda: self._lane_status(lane))
        delivery.attach_signal(reader)
        # meta() reads a few rows; stats() would count 15 M credentials at every start.
        logger.info(
            "lane %s/%s (%s, reader %s) starting: cache data version %s, %d events waiting in "
            "outbox",
            config.lane.port_id,
            config.lane.lane_id,
            config.lane.lane_type.value,
            reader.family,
            cache.meta().get("data_version", "none"),
            outbox.stats().depth,
        )

        def commit(closed: ClosedCrossing) -> None:
            decision = closed.decision
            to_wall = reader.to_wall
            if lane.already_stored(closed):
                self.counters.replayed_already_stored += 1
                logger.info(
                    "crossing %d, closed again by the journal replay, was stored before the "
                    "restart: not stored twice",
                    closed.number,
                )
                return
            if live is not None:  # the booth hears "closed" before the final crossing
                live.closed(closed.number, decision, to_wall)
            committed_at = self.clock()
            event_id = uuid7()
            row = delivery.commit(
                lambda seq: encode(
                    build_crossing_event(
                        decision,
                        seq=seq,
                        event_id=event_id,
                        crossing_id=crossing_id(
                            self.identity.port_id,
                            self.identity.lane_id,
                            closed.number,
                            decision.crossing.opened_at,
                        ),
                        lane=self.identity,
                        cache=cache_channel.cache_info(),
                        committed_at=committed_at,
                        wall=to_wall,
                    )
                ),
                in_transaction=lane.on_commit(closed),
            )
            self._count(decision)
            if row is None:  # held in memory until the outbox takes it; the lane is on manual
                logger.error("crossing %s held: the outbox cannot store it", event_id)
                return
            if plates is not None:
                delivery.store_plate_image(decision)
            if page is not None:
                page.crossing(json.loads(row.payload), plate_crop=plate_image(decision))
            logger.info(
                "crossing seq=%d %s reasons=%s cards=%d closed_by=%s",
                row.seq,
                decision.recommendation.value,
                ",".join(r.value for r in decision.reasons) or "-",
                len(decision.matches),
                decision.crossing.closed_by.value,
            )
            for match in decision.matches:
                logger.debug(
                    "crossing seq=%d card %s: %s", row.seq, match.observation.ref, match.result
                )

        try:
            cache_channel.start()
            delivery.uplink.start()
            # Before the link opens: the vehicle at the booth comes back before its next input.
            for closed in lane.replay():
                commit(closed)
            self.counters.replayed_inputs = len(lane.recovery.entries)
            self._restored_open = lane.engine.correlator.has_open_crossing
            if live is not None:
                if self._restored_open:
                    live.resume(lane.engine.closed_count + 1)
                self._refresh_live(lane)
            reader.start()
            if plates is not None:
                plates.start()
            # READY=1: the lane runs — journal replayed, outbox and uplink started, the reader
            # opened. Not that the reader or the broker answers: a lane that cannot hear its
            # reader must still run and say so (READER_DOWN on the status topic, STATUS=), not
            # be restarted in a loop by a start timeout. STATUS= follows within a second.
            self._systemd_status = self._status_line()
            self.notifier.ready(self._systemd_status)
            self.ready.set()
            self._loop(stop, lane, commit)
        finally:
            self.notifier.stopping()
            if plates is not None:
                plates.stop()
            reader.close()
            # Inputs that arrived before the reader closed still belong to vehicles: apply them.
            self._drain(lane, commit)
            if self._keeps_open_crossing(lane):
                logger.info(
                    "the crossing at the booth stays in the input journal: the next start "
                    "restores it and the reader's later inputs continue it"
                )
            else:
                # Closed as of lane time now (the device's clock), like every other close.
                lane_now = self._lane_now()
                at = lane.now(lane_now) if lane_now is not None else lane.last_input_at
                for closed in lane.shutdown(at if at != float("-inf") else self.clock()):
                    commit(closed)
                self._refresh_live(lane)
            self._store_clock(lane)
            delivery.close(config.service.shutdown_flush_s)
            if self.page is not None:
                self.page.stop()
            cache_channel.stop()
            cache.close()
            logger.info(
                "lane stopped: %d crossings this run (%s)",
                self.counters.crossings,
                ", ".join(f"{k}={v}" for k, v in sorted(self.counters.by_recommendation.items()))
                or "-",
            )
        if self._exit_status:
            logger.error("lane agent exits with status %d to be restarted", self._exit_status)
        return self._exit_status

    def _keeps_open_crossing(self, lane: JournalledEngine) -> bool:
        """Leave the open crossing in the journal at this stop instead of closing it (SHUTDOWN).

        When the agent stops to be restarted (an adapter failed), or still holds a restored
        crossing the reader never got to continue, the next start restores it and the device,
        same boot, resends the rest: closing it now would make the vehicle's later reads a
        second crossing. A plain stop (SIGTERM) closes and stores it: a stop may be
        for good, and central must not depend on a next start to hear of a vehicle. Inputs
        held in memory only (the journal failed) cannot be restored: then it is closed anyway.
        """
        if lane.memory_only or not lane.engine.correlator.has_open_crossing:
            return False
        unheard = self.reader is None or not self.reader.time_known()
        return bool(self._exit_status) or (self._restored_open and unheard)

    def _loop(
        self,
        stop: threading.Event,
        lane: JournalledEngine,
        commit: Callable[[ClosedCrossing], None],
    ) -> None:
        tick = self.config.service.tick_interval_s
        watchdog_every = self.notifier.watchdog_interval_s
        next_watchdog = time.monotonic()
        next_checkpoint = time.monotonic() + IDLE_CHECKPOINT_S
        next_status = time.monotonic()
        next_live = time.monotonic()
        live_due = False
        reader = self.reader
        while not stop.is_set() and not self._exit_status:
            wait = self._wait_s(lane, tick)
            if live_due:
                wait = min(wait, max(0.0, next_live - time.monotonic()))
            try:
                item: object = self.inbox.get(timeout=wait)
            except queue.Empty:
                item = None
            closed_any = False
            for closed in self._apply(lane, item):
                commit(closed)
                closed_any = True
            live_due = True
            if closed_any or time.monotonic() >= next_live:
                started = time.monotonic()
                self._refresh_live(lane)
                cost = time.monotonic() - started
                next_live = started + max(LIVE_MIN_GAP_S, cost / LIVE_SHARE)
                live_due = False
            self._settle_journal(lane)
            self.delivery.tick()
            if reader is not None and not reader.is_running and not self._exit_status:
                # Its thread logged why it ended; no input would arrive any more and lane time
                # would stand still: stop for a restart.
                logger.error("reader thread ended; stopping for a restart")
                self._exit_status = EXIT_LINK_FAILED
            if time.monotonic() >= next_checkpoint:
                # While the journal fails, look again every second for it to work again.
                next_checkpoint = time.monotonic() + (
                    STATUS_REFRESH_S if self.delivery.journal_failing else IDLE_CHECKPOINT_S
                )
                lane.idle_checkpoint(held=self.delivery.committer.held)
                if self.delivery.journal_failing and lane.memory_only:
                    # A quiet lane must not wait for its next vehicle to learn that the journal
                    # works again (space freed): the lane would show MANUAL to that vehicle.
                    self._journal_recovering = True
                    self._settle_journal(lane)
                self._store_clock(lane)
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_REFRESH_S
                self._refresh_faults(lane)
            if watchdog_every is not None and time.monotonic() >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = time.monotonic() + watchdog_every

    def _drain(self, lane: JournalledEngine, commit: Callable[[ClosedCrossing], None]) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            for closed in self._apply(lane, item):
                commit(closed)
            self._settle_journal(lane)

    def _settle_journal(self, lane: JournalledEngine) -> None:
        """Clear the journal fault once inputs are journalled again and none lives in memory only.

        Called after the crossings an input closed were stored: the checkpoint that covers the
        inputs the journal missed must not clear the rows of a crossing still to be stored.
        """
        if not self._journal_recovering:
            return
        if lane.secure_memory_inputs(held=self.delivery.committer.held):
            self._journal_recovering = False
            self.delivery.journal_recovered()

    def _take_inputs(
        self,
        journal: InputJournal,
        inputs: Sequence[ReaderInput],
        resume: str | None,
        clock_state: dict[str, Any] | None,
    ) -> None:
        """Reader thread (the family's sink): journal tag reads and loop edges, then enqueue
        them; the reader acknowledges them to its device after this returns.

        Inputs that cannot be journalled still go to the engine (the lane keeps working on them
        from memory, on manual processing) rather than stopping the lane.
        """
        self._inputs_in_transit += 1
        try:
            try:
                ids: list[int | None] = list(journal.append_many(inputs, resume, clock_state))
                error = ""
            except JournalError as failed:
                ids, error = [None] * len(inputs), failed.detail
            for lane_input, journal_id in zip(inputs, ids, strict=True):
                self.inbox.put_nowait(ControllerInput(lane_input, journal_id, error))
        finally:
            self._inputs_in_transit -= 1

    def _apply(self, lane: JournalledEngine, item: object) -> list[ClosedCrossing]:
        if isinstance(item, ControllerInput):
            if isinstance(item.lane_input, TagRead):
                self.counters.tag_reads += 1
                if self.page is not None and self.reader is not None:
                    read = item.lane_input
                    self.page.feed.read(
                        {
                            "ref": read.epc,
                            "antenna": read.antenna,
                            "rssi_dbm": read.rssi_dbm,
                            "at": self.reader.to_wall(read.at),
                        }
                    )
            elif isinstance(item.lane_input, LoopChanged):
                self.counters.loop_events += 1
            if item.journal_id is None:
                self._journal_recovering = False
                self.delivery.journal_failed(item.journal_error)
            elif self.delivery.journal_failing:
                # Not cleared yet: inputs the journal missed are in memory only until
                # _settle_journal has stored a checkpoint that covers them.
                self._journal_recovering = True
            return lane.handle(item.lane_input, item.journal_id)
        # Engine-thread times are lane time, TICK_LAG_S behind the reader's clock and never
        # behind an input already applied; with the reader not heard they stand still.
        lane_now = self._lane_now(TICK_LAG_S)
        now = lane.now(lane_now) if lane_now is not None else None
        lane_input = self._lane_input(item, now)
        if lane_input is not None:
            return lane.handle(lane_input)
        if now is None or self._inputs_in_transit:
            return []  # no lane time yet, or an input on its way to the inbox comes first
        return lane.handle(Tick(now))

    def _lane_input(self, item: object, now: float | None) -> LaneInput | None:
        """Translate an adapter message into a core input (None: nothing for the core)."""
        match item:
            case PlateSeen():
                # Stamped by the plate thread with its frame's capture time, on the agent's clock.
                return dataclasses.replace(item, at=self._from_wall(item.at))
            case VisionChanged():
                return dataclasses.replace(item, at=now if now is not None else item.at)
            case UplinkChanged() if item.state is UplinkState.FAILED:
                # Rebuilt in-process a few times; past that, crossings would keep committing and
                # nothing would be sent: restart the agent instead.
                if not self.delivery.uplink_failed():
                    logger.error(
                        "uplink failed: nothing is published any more; stopping for a restart"
                    )
                    self._exit_status = EXIT_UPLINK_FAILED
            case UplinkChanged():
                logger.info("uplink %s", item.state.value)
            case None:
                pass
            case _:
                logger.debug("ignored %r", item)
        return None

    def _lane_now(self, lag_s: float = 0.0) -> float | None:
        return None if self.reader is None else self.reader.lane_now(self.clock(), lag_s)

    def _from_wall(self, wall: float) -> float:
        return wall if self.reader is None else self.reader.from_wall(wall)

    def _wait_s(self, lane: JournalledEngine, tick: float) -> float:
        """How long the engine may wait for an input: the tick, or less when a timer of the lane
        (a departure to confirm, a tail to decide) falls due sooner."""
        deadline = lane.engine.correlator.next_deadline()
        if deadline is None:
            return tick
        if self.reader is None:
            return tick
        due = self.reader.to_wall(deadline + TICK_LAG_S)
        return min(tick, max(0.001, due - self.clock()))

    def _refresh_faults(self, lane: JournalledEngine) -> None:
        """Raise and clear the reader's faults (its clock among them) and the presence loop's on
        the status board."""
        board = self.delivery.board
        reader = self.reader
        wanted: dict[str, str] = {}
        codes: tuple[str, ...] = _LOOP_FAULT_CODES
        if reader is not None:
            wanted.update(reader.faults(self.clock()))
            codes = (*reader.fault_codes(), *codes)
        lane_now = self._lane_now()
        at = lane.now(lane_now) if lane_now is not None else lane.last_input_at
        if at != float("-inf"):  # no lane time yet: nothing to judge the loop by
            wanted.update(
                {
                    fault.value: text
                    for fault, text in lane.engine.correlator.loop_faults(at).items()
                }
            )
        for code in codes:
            if code in wanted:
                board.raise_fault(code, wanted[code])
            else:
                board.clear_fault(code)
        line = self._status_line()
        if line != self._systemd_status:
            self._systemd_status = line
            self.notifier.status(line)

    def _status_line(self) -> str:
        """systemd's STATUS=: the lane, its reader link and its active faults, at a glance."""
        config, reader = self.config, self.reader
        parts = [f"lane {config.lane.port_id}/{config.lane.lane_id} running"]
        if reader is not None:
            link = reader.health.state()
            if link.up:
                parts.append("reader up")
            elif link.is_fault:
                parts.append(f"READER DOWN ({link.reason})")
            else:
                parts.append(f"reader connecting ({link.reason})")
        faults = sorted(self.delivery.board.active_faults())
        if faults:
            parts.append("faults: " + ", ".join(faults))
        parts.append(f"{self.counters.crossings} crossings")
        return "; ".join(parts)

    def _refresh_live(self, lane: JournalledEngine) -> None:
        """Show the booth the open crossing as of the latest input or tick applied."""
        at = lane.engine.correlator.last_at
        if self.live is None or self.reader is None or at is None:
            return
        self.live.refresh(lane.engine, at, self.reader.to_wall)

    def _store_clock(self, lane: JournalledEngine) -> None:
        """Keep the reader clock's state in the journal (a failure waits for the next)."""
        state = None if self.reader is None else self.reader.clock_state()
        if state is None:
            return
        try:
            lane.journal.store_clock(state)
        except JournalError as error:
            logger.warning("reader clock state not stored (%s)", error.detail)

    def _lane_status(self, lane: JournalledEngine) -> dict[str, Any]:
        counters = lane.engine.correlator.counters
        return dataclasses.asdict(counters)

    def _count(self, decision: Decision) -> None:
        self.counters.crossings += 1
        key = decision.recommendation.value
        self.counters.by_recommendation[key] = self.counters.by_recommendation.get(key, 0) + 1
