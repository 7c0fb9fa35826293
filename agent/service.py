"""Composition root: builds the adapters, runs the lane engine, shuts down cleanly.

Threads and who owns what:

* the controller link's reader thread owns the serial port and only enqueues messages;
* paho's network thread and the uplink's publisher thread own the MQTT session and read the
  outbox; paho callbacks only enqueue;
* the engine thread (the caller of ``LaneService.run``) owns all lane state: it takes inputs
  from the one inbox, runs the pure lane core, looks cards up in the cache, commits each
  crossing to the outbox and only then wakes the publisher.

A crossing therefore exists on disk before anyone hears of it, and nothing but the engine
thread ever touches lane state.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent import __version__
from agent.cache import CredentialCache
from agent.cache.channel import CacheChannel
from agent.config import AgentConfig
from agent.crossing_event import LaneIdentity, build_crossing_event, encode, uuid7
from agent.lane.engine import LaneEngine
from agent.lane.events import LaneInput, LoopChanged, PlateSeen, TagRead, Tick, VisionChanged
from agent.lane.policy import Decision
from agent.sdnotify import SystemdNotifier
from agent.uplink.delivery import Delivery
from agent.uplink.publisher import UplinkState
from agent.uplink.topics import Topics
from firmware_bridge import codec
from firmware_bridge.link import (
    ControllerLink,
    LinkDown,
    LinkDownReason,
    LinkStats,
    LinkUp,
    SignalAcked,
    SignalFailed,
)

if TYPE_CHECKING:
    from agent.vision.capture import FrameSource

logger = logging.getLogger(__name__)


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
    controller_faults: int = 0
    link_downs: int = 0
    by_recommendation: dict[str, int] = field(default_factory=dict)


class LaneService:
    """One lane: controller link → lane engine → outbox → MQTT uplink."""

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
        self._link: ControllerLink | None = None
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
        outbox, uplink = delivery.outbox, delivery.uplink
        link = ControllerLink(
            config.controller.device,
            on_message=self.inbox.put_nowait,
            baudrate=config.controller.baudrate,
            ping_interval_s=config.controller.ping_interval_s,
            silence_timeout_s=config.controller.silence_timeout_s,
            signal_retry_interval_s=config.controller.signal_ack_timeout_s,
        )
        self._link = link
        delivery.attach_signal(link)
        correlation, lane_policy = config.lane.correlation.settings(), config.lane.policy()
        plates = None
        if config.camera.enabled:
            # cv2 and onnxruntime load only in a lane with a camera (docs/vision.md).
            from agent.vision.pipeline import build_plate_pipeline

            correlation, lane_policy = config.vision.with_plates(correlation, lane_policy)
            plates = build_plate_pipeline(
                config,
                self.inbox.put_nowait,
                board=delivery.board,
                clock=self.clock,
                source=self.camera_source,
            )
        engine = LaneEngine(
            correlation,
            cache_channel.policy(lane_policy),
            cache.lookup,
            cache_channel.fresh_at,
        )
        # meta() reads a few rows; stats() would count 15 M credentials at every start.
        logger.info(
            "lane %s/%s (%s) starting: cache data version %s, %d events waiting in outbox",
            config.lane.port_id,
            config.lane.lane_id,
            config.lane.lane_type.value,
            cache.meta().get("data_version", "none"),
            outbox.stats().depth,
        )

        def commit(decision: Decision) -> None:
            committed_at = self.clock()
            event_id = uuid7()
            row = delivery.commit(
                lambda seq: encode(
                    build_crossing_event(
                        decision,
                        seq=seq,
                        event_id=event_id,
                        lane=self.identity,
                        cache=cache_channel.cache_info(),
                        committed_at=committed_at,
                    )
                )
            )
            self._count(decision)
            if row is None:  # held in memory until the outbox takes it; the lane is on manual
                logger.error("crossing %s held: the outbox cannot store it", event_id)
                return
            if plates is not None and plates.store_image(outbox, self.topics, decision):
                uplink.notify()
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
            uplink.start()
            link.start()
            if plates is not None:
                plates.start()
            self.notifier.ready(f"lane {config.lane.port_id}/{config.lane.lane_id} running")
            self.ready.set()
            self._loop(stop, engine, commit)
        finally:
            self.notifier.stopping()
            if plates is not None:
                plates.stop()
            link.close()
            # Inputs that arrived before the link closed still belong to vehicles: apply them.
            self._drain(engine, commit)
            for decision in engine.shutdown(self.clock()):
                commit(decision)
            delivery.close(config.service.shutdown_flush_s)
            cache_channel.stop()
            cache.close()
            logger.info(
                "lane stopped: %d crossings this run (%s)",
                self.counters.crossings,
                ", ".join(f"{k}={v}" for k, v in sorted(self.counters.by_recommendation.items()))
                or "-",
            )
        return 0

    def link_stats(self) -> LinkStats | None:
        """Serial link counters (frames, CRC errors, duplicates…); None before ``run``."""
        return self._link.stats() if self._link else None

    def _loop(
        self,
        stop: threading.Event,
        engine: LaneEngine,
        commit: Callable[[Decision], None],
    ) -> None:
        tick = self.config.service.tick_interval_s
        watchdog_every = self.notifier.watchdog_interval_s
        next_watchdog = time.monotonic()
        while not stop.is_set():
            try:
                item: object = self.inbox.get(timeout=tick)
            except queue.Empty:
                item = None
            for decision in self._apply(engine, item):
                commit(decision)
            self.delivery.tick()
            if watchdog_every is not None and time.monotonic() >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = time.monotonic() + watchdog_every

    def _drain(self, engine: LaneEngine, commit: Callable[[Decision], None]) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            for decision in self._apply(engine, item):
                commit(decision)

    def _apply(self, engine: LaneEngine, item: object) -> list[Decision]:
        now = self.clock()
        lane_input = self._lane_input(item, now)
        return engine.handle(lane_input if lane_input is not None else Tick(now))

    def _lane_input(self, item: object, now: float) -> LaneInput | None:
        """Translate an adapter message into a core input (None: nothing for the core)."""
        match item:
            case codec.TagRead():
                self.counters.tag_reads += 1
                return TagRead(
                    at=now,
                    epc=item.epc_hex,
                    antenna=item.antenna,
                    rssi_dbm=item.rssi_deci_dbm / 10.0,
                    tid=item.tid.hex().upper() if item.tid else None,
                )
            case codec.Loop():
                self.counters.loop_events += 1
                return LoopChanged(at=now, loop_id=item.loop_id, occupied=item.occupied)
            case PlateSeen():
                return item  # stamped by the plate thread with its frame's capture time
            case VisionChanged():
                return dataclasses.replace(item, at=now)
            case codec.Fault():
                self.counters.controller_faults += 1
                logger.warning("controller fault %s: %s", item.code, item.detail)
            case codec.Heartbeat():
                pass
            case LinkUp():
                hello = item.hello
                logger.info(
                    "controller link up: %s firmware %d.%d.%d",
                    hello.controller_id,
                    hello.firmware_major,
                    hello.firmware_minor,
                    hello.firmware_patch,
                )
            case LinkDown() if item.reason is LinkDownReason.CLOSED:
                logger.info("controller link closed")
            case LinkDown():
                self.counters.link_downs += 1
                logger.warning("controller link down: %s (%s)", item.reason.value, item.detail)
            case SignalAcked():
                logger.info("lane signal %s acknowledged by the controller", item.state.name)
            case SignalFailed():
                logger.error(
                    "lane signal %s not acknowledged after %d attempts",
                    item.state.name,
                    item.attempts,
                )
            case UplinkChanged():
                logger.info("uplink %s", item.state.value)
            case None:
                pass
            case _:
                logger.debug("ignored %r", item)
        return None

    def _count(self, decision: Decision) -> None:
        self.counters.crossings += 1
        key = decision.recommendation.value
        self.counters.by_recommendation[key] = self.counters.by_recommendation.get(key, 0) + 1
