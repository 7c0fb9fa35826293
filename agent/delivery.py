"""The delivery side of the lane, assembled from config: outbox, uplink, committer and status.

The service calls :meth:`Delivery.open` once, commits crossings through :meth:`Delivery.commit`,
calls :meth:`Delivery.tick` from its engine loop, and :meth:`Delivery.close` on the way out. This
keeps the wiring of the fail-safe rules in one place:

* a damaged outbox is moved aside and replaced (``outbox_replaced`` fault, stays raised for the run);
* a crossing the outbox cannot store is held in memory and retried; meanwhile the ``outbox_full``
  fault is raised and the reader is told to show ``MANUAL`` (fall back to manual
  processing). When every held crossing is stored the fault clears and the signal goes back to
  ``OFF``: the agent never drives the lane signal except for this fall-back, and ``OFF`` (no
  indication from the agent) is what it showed before;
* the input journal (:class:`~agent.state.journal.InputJournal`) lives in the same outbox; a
  crossing's commit clears the inputs it consumed in the same transaction. When inputs cannot be
  journalled the lane keeps running on them from memory, with the ``journal_unavailable`` fault
  raised and the signal on ``MANUAL`` until inputs are journalled again and a checkpoint that
  covers the ones it missed is stored (the service calls :meth:`Delivery.journal_recovered` then);
* a publisher thread that failed (``UplinkState.FAILED``: a bug, or a row that trips one) is
  rebuilt in-process on the same outbox after a back-off (1 s, doubling), up to
  ``UPLINK_REBUILDS`` times within ``UPLINK_REBUILD_WINDOW_S``; past that
  :meth:`Delivery.uplink_failed` says to give up and the service exits for systemd to restart the
  agent. A restart reloads the credential cache and flaps the lane, so a failure that repeats at
  every attempt (the same row each time) should not cost one every few seconds.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.lane.policy import Decision
from agent.readers.base import LaneSignal
from agent.state.holding import CrossingCommitter, PendingRecord
from agent.state.journal import InputJournal
from agent.state.outbox import (
    PRIORITY_CROSSING,
    PRIORITY_IMAGE,
    Outbox,
    OutboxError,
    OutboxFullError,
    OutboxRow,
)
from agent.state.recovery import open_outbox
from agent.status import StatusBoard
from agent.uplink.live_feed import LiveFeed
from agent.uplink.publisher import MqttUplink, TlsFiles, UplinkState
from agent.wire.crossing_event import plate_image
from agent.wire.topics import Topics

log = logging.getLogger(__name__)

IMAGE_STREAM = "plate-image"
"""The outbox stream of plate crops (numbered apart from the crossings)."""
FAULT_OUTBOX_FULL = "outbox_full"
FAULT_OUTBOX_REPLACED = "outbox_replaced"
FAULT_JOURNAL_UNAVAILABLE = "journal_unavailable"
FAILSAFE_SIGNAL = LaneSignal.MANUAL
NORMAL_SIGNAL = LaneSignal.OFF
UPLINK_REBUILDS = 3
"""In-process rebuilds of a failed uplink within ``UPLINK_REBUILD_WINDOW_S`` before giving up."""
UPLINK_REBUILD_WINDOW_S = 600.0
UPLINK_REBUILD_BACKOFF_S = 1.0
"""Delay before the first rebuild; doubled for each further failure within the window."""


class SignalSink(Protocol):
    """What the fail-safe needs from the reader (agent/readers/base.py)."""

    def set_signal(self, signal: LaneSignal) -> None: ...


class Delivery:
    """Outbox + MQTT uplink + fail-safe committer + status board for one lane."""

    def __init__(
        self,
        outbox: Outbox,
        uplink: MqttUplink,
        board: StatusBoard,
        topics: Topics,
        *,
        retry_interval_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        rebuild_uplink: Callable[[MqttUplink], MqttUplink] | None = None,
        live: LiveFeed | None = None,
    ) -> None:
        """``rebuild_uplink(failed)`` builds the replacement of a failed uplink (None: never);
        ``live`` is the live crossing feed every uplink publishes (None: live events off)."""
        self.outbox = outbox
        self.live = live
        self.uplink = uplink
        self._rebuild_uplink = rebuild_uplink
        self._monotonic = monotonic
        self._uplink_failures: list[float] = []
        self._uplink_rebuild_at: float | None = None
        self.uplink_rebuilds = 0
        """Failed uplinks replaced in-process since start."""
        self.board = board
        self.topics = topics
        self._signal: SignalSink | None = None
        self._requested_signal: LaneSignal | None = None
        self.journal = InputJournal(outbox)
        self._journal_failing = False
        self.committer = CrossingCommitter(
            outbox,
            on_stored=self._stored,
            on_fault=self._storage_fault,
            on_recovered=self._storage_recovered,
            retry_interval_s=retry_interval_s,
            monotonic=monotonic,
        )
        board.contribute("outbox", self._outbox_section)

    @classmethod
    def open(
        cls,
        config: AgentConfig,
        topics: Topics,
        lane: Mapping[str, Any],
        *,
        on_state_change: Callable[[UplinkState], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Delivery:
        """Open the outbox (replacing a damaged one), build the uplink and the status board."""
        board = StatusBoard(lane, clock=clock)
        outbox, quarantined = open_outbox(
            config.outbox.path,
            synchronous=config.outbox.synchronous,
            retain_sent_s=config.outbox.retain_sent_s,
            max_bytes=config.outbox.max_bytes,
            clock=clock,
        )
        if quarantined is not None:
            board.raise_fault(
                FAULT_OUTBOX_REPLACED,
                f"outbox was damaged ({quarantined.detail}); kept as {quarantined.moved_to.name}, "
                "a fresh outbox continues: rows in the damaged file may need manual recovery",
            )
        mqtt = config.mqtt
        tls = None
        # The config checks that tls = true comes with all three files.
        if mqtt.tls and mqtt.ca_file and mqtt.cert_file and mqtt.key_file:
            tls = TlsFiles(mqtt.ca_file, mqtt.cert_file, mqtt.key_file)

        live = None
        if config.live.enabled:
            live = LiveFeed(
                topics,
                message_expiry_s=config.live.message_expiry_s,
                current_expiry_s=config.live.current_expiry_s,
                max_in_flight=config.live.max_in_flight,
                clock=clock,
            )
            board.contribute("live", live.status)

        def make_uplink(failed: MqttUplink | None = None) -> MqttUplink:
            return MqttUplink(
                outbox,
                topics,
                host=mqtt.host,
                port=mqtt.port,
                client_id=config.mqtt_client_id,
                keepalive_s=mqtt.keepalive_s,
                max_inflight=mqtt.max_inflight,
                reconnect_min_s=mqtt.reconnect_min_s,
                reconnect_max_s=mqtt.reconnect_max_s,
                session_expiry_s=mqtt.session_expiry_s,
                tls=tls,
                status=board,
                status_interval_s=mqtt.status_interval_s,
                on_state_change=on_state_change,
                live=live,
                # An outbox error is retried (outbox_error fault); anything else is a bug that
                # fails the publisher thread, which is then rebuilt.
                storage_errors=(OutboxError, sqlite3.Error),
                urgent_priority=PRIORITY_CROSSING,
            )

        return cls(outbox, make_uplink(), board, topics, rebuild_uplink=make_uplink, live=live)

    def attach_signal(self, signal: SignalSink) -> None:
        """The reader that shows the fall-back signal (set before the first commit)."""
        self._signal = signal

    def commit(
        self,
        build_payload: Callable[[int], bytes],
        *,
        in_transaction: Callable[[sqlite3.Connection], None] | None = None,
    ) -> OutboxRow | None:
        """Store a crossing; None means it is held in memory (and the lane is on manual).

        ``in_transaction`` (the journal's :meth:`~InputJournal.on_commit`) is stored with the
        crossing, in the same transaction, whenever the crossing is stored.
        """
        return self.committer.submit(
            PendingRecord(self.topics.crossing, build_payload, in_transaction=in_transaction)
        )

    def store_plate_image(self, decision: Decision) -> bool:
        """Queue the plate crop of a committed crossing behind the crossings; True when one was
        stored. The image is evidence, not the record: when the outbox is full or failing the
        crossing has been stored already, and losing its image must not disturb the lane."""
        jpeg = plate_image(decision)
        if jpeg is None:
            return False
        try:
            self.outbox.append(
                topic=self.topics.plate_image,
                build_payload=lambda _seq: jpeg,
                stream=IMAGE_STREAM,
                priority=PRIORITY_IMAGE,
            )
        except OutboxError as exc:
            log.warning("plate image not stored: %s", exc)
            return False
        self.uplink.notify()  # the uplink of now: a failed one is rebuilt
        return True

    def journal_failed(self, detail: str) -> None:
        """From the engine thread: an input could not be journalled and lives in memory only."""
        if self._journal_failing:
            return
        self._journal_failing = True
        log.error(
            "controller inputs cannot be journalled (%s): a crash now loses the vehicle at the "
            "booth; lane on manual processing",
            detail,
        )
        self.board.raise_fault(
            FAULT_JOURNAL_UNAVAILABLE,
            f"controller inputs cannot be journalled ({detail}); lane on manual processing",
        )
        self._update_signal()

    @property
    def journal_failing(self) -> bool:
        """The ``journal_unavailable`` fault is raised."""
        return self._journal_failing

    def journal_recovered(self) -> None:
        """From the engine thread: inputs are journalled again and none lives in memory only."""
        if not self._journal_failing:
            return
        self._journal_failing = False
        log.warning("controller inputs are journalled again")
        self.board.clear_fault(FAULT_JOURNAL_UNAVAILABLE)
        self._update_signal()

    def tick(self) -> None:
        """From the engine loop: retry held crossings, rebuild a failed uplink, when due."""
        self.committer.retry()
        if self._uplink_rebuild_at is not None and self._monotonic() >= self._uplink_rebuild_at:
            self._uplink_rebuild_at = None
            self._replace_uplink()

    def uplink_failed(self) -> bool:
        """From the engine thread: the uplink reported FAILED. True: a rebuild is scheduled.

        False once ``UPLINK_REBUILDS`` rebuilds within ``UPLINK_REBUILD_WINDOW_S`` did not help
        (or nothing can rebuild it): the caller exits for a restart of the whole agent.
        """
        now = self._monotonic()
        self._uplink_failures = [
            at for at in self._uplink_failures if now - at < UPLINK_REBUILD_WINDOW_S
        ]
        self._uplink_failures.append(now)
        failures = len(self._uplink_failures)
        if self._rebuild_uplink is None or failures > UPLINK_REBUILDS:
            return False
        delay = UPLINK_REBUILD_BACKOFF_S * 2 ** (failures - 1)
        log.error(
            "uplink failed (%d of %d allowed within %.0f s); rebuilding it in %.0f s",
            failures,
            UPLINK_REBUILDS,
            UPLINK_REBUILD_WINDOW_S,
            delay,
        )
        self._uplink_rebuild_at = now + delay
        return True

    def _replace_uplink(self) -> None:
        assert self._rebuild_uplink is not None
        failed = self.uplink
        failed.stop(timeout_s=0.0)  # its thread has ended; this only waits for that
        failed.detach_status()
        self.uplink = self._rebuild_uplink(failed)
        self.uplink.start()
        self.uplink_rebuilds += 1
        log.warning("uplink rebuilt on the same outbox; unsent rows go out again")

    def close(self, flush_s: float) -> None:
        """Last try for held crossings, flush the uplink for up to ``flush_s``, close the outbox."""
        self.committer.retry()
        if self.committer.held and self._journal_failing:
            log.error(
                "%d crossings could not be stored, and some of the inputs they were closed from "
                "could not be journalled either: those vehicles end with this process and must be "
                "processed manually (the lane was on MANUAL)",
                self.committer.held,
            )
        elif self.committer.held:
            log.error(
                "%d crossings could not be stored; the inputs they were closed from stay in the "
                "input journal and are replayed at the next start, which stores them",
                self.committer.held,
            )
        self.uplink.stop(timeout_s=flush_s)
        self.outbox.close()

    def _stored(self, _row: OutboxRow) -> None:
        self.uplink.notify()

    def _storage_fault(self, error: OutboxFullError) -> None:
        self.board.raise_fault(
            FAULT_OUTBOX_FULL,
            f"crossings cannot be stored ({error.reason}); lane on manual processing",
        )
        self._update_signal()

    def _storage_recovered(self) -> None:
        self.board.clear_fault(FAULT_OUTBOX_FULL)
        self._update_signal()

    def _update_signal(self) -> None:
        """MANUAL while crossings are held or inputs are not journalled; OFF once neither is."""
        failing = self.committer.faulted or self._journal_failing
        wanted = FAILSAFE_SIGNAL if failing else NORMAL_SIGNAL
        requested = self._requested_signal
        if wanted == requested or (requested is None and not failing):
            return
        self._set_signal(wanted)

    def _set_signal(self, state: LaneSignal) -> None:
        self._requested_signal = state
        if self._signal is None:
            log.error("no reader to show %s on", state.name)
            return
        try:
            self._signal.set_signal(state)
        except Exception:
            # The link may be closing; the fault on the status topic still tells central.
            log.exception("could not ask the reader for %s", state.name)
        else:
            log.warning("lane signal %s requested (outbox fail-safe)", state.name)

    def _outbox_section(self) -> Mapping[str, Any]:
        stats = self.outbox.stats()
        requested = self._requested_signal
        return {
            "depth": stats.depth,
            "oldest_unsent_age_s": (
                None if stats.oldest_unsent_age_s is None else round(stats.oldest_unsent_age_s, 3)
            ),
            "rows": stats.total_rows,
            "size_bytes": stats.size_bytes,
            "max_bytes": stats.max_bytes,
            "last_seq": stats.last_seq,
            "acked_seq": stats.acked_seq,
            "held_in_memory": self.committer.held,
            "journal_rows": self.journal.rows(),
            "failsafe_signal": None if requested is None else requested.name,
        }
