"""Inputs that cannot be journalled put the lane on MANUAL, through the real lane protocol.

The lane keeps running on such inputs from memory (a crash would lose the vehicle at the booth),
so the agent says so: the ``journal_unavailable`` fault and ``SET_SIGNAL MANUAL`` until an input
is journalled again, and the signal goes back to ``OFF`` only once no other fail-safe holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.delivery import FAULT_JOURNAL_UNAVAILABLE, FAULT_OUTBOX_FULL, Delivery
from agent.lane.events import LoopChanged, TagRead
from agent.readers.lane_controller import LaneControllerReader
from agent.state.journal import Checkpoint
from agent.state.outbox import Outbox
from agent.status import StatusBoard
from agent.uplink.publisher import MqttUplink
from agent.wire.topics import Topics
from firmware_bridge.codec import SignalState
from firmware_bridge.simulator import ControllerSimulator
from tests.support.broker import free_port, wait_until

TOPICS = Topics("lane-agent/v1", "port-7", "lane-3")
CAP = 128 * 1024
WAIT_S = 5.0


@pytest.fixture
def delivery(tmp_path: Path, reader: LaneControllerReader) -> Iterator[Delivery]:
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=CAP)
    # Never started: storing is what matters here, not sending.
    uplink = MqttUplink(outbox, TOPICS, host="127.0.0.1", port=free_port(), client_id="lane")
    clock = [0.0]
    built = Delivery(
        outbox, uplink, StatusBoard({"lane_id": "lane-3"}), TOPICS, monotonic=lambda: clock[0]
    )
    built.attach_signal(reader)
    wait_until(lambda: reader.link.is_up, WAIT_S, "the controller link up")
    yield built
    outbox.close()


def test_an_input_that_cannot_be_journalled_sets_manual_until_one_is_journalled_again(
    simulator: ControllerSimulator, delivery: Delivery
) -> None:
    delivery.journal_failed("disk I/O error")
    assert simulator.wait_signal(SignalState.MANUAL, WAIT_S)
    assert FAULT_JOURNAL_UNAVAILABLE in delivery.board.active_faults()
    delivery.journal_failed("disk I/O error")  # every further input says it again: one command
    delivery.journal_recovered()
    assert simulator.wait_signal(SignalState.OFF, WAIT_S)
    assert FAULT_JOURNAL_UNAVAILABLE not in delivery.board.active_faults()
    assert simulator.signal_history == [SignalState.MANUAL, SignalState.OFF]


def test_the_signal_stays_manual_while_crossings_are_still_held(
    simulator: ControllerSimulator, delivery: Delivery
) -> None:
    def payload(seq: int) -> bytes:
        return json.dumps({"seq": seq}).encode() + b" " * 2000

    delivery.journal_failed("database or disk is full")
    while delivery.commit(payload) is not None:
        pass
    assert FAULT_OUTBOX_FULL in delivery.board.active_faults()
    delivery.journal_recovered()  # a small journal row fits, a crossing does not
    assert simulator.wait_signal(SignalState.MANUAL, WAIT_S)
    assert simulator.signal_history == [SignalState.MANUAL]


def test_status_counts_the_journal_rows_a_checkpoint_has_not_folded_yet(
    delivery: Delivery,
) -> None:
    """``outbox.journal_rows`` on status: inputs journalled since the last checkpoint."""
    assert delivery.board.snapshot()["outbox"]["journal_rows"] == 0
    first = delivery.journal.append(LoopChanged(at=1.0, loop_id=1, occupied=True), None)
    delivery.journal.append(
        TagRead(at=1.1, epc="E2801160600002000000A001", antenna=1, rssi_dbm=-50.0), None
    )
    assert delivery.board.snapshot()["outbox"]["journal_rows"] == 2
    delivery.journal.checkpoint(Checkpoint(through_id=first, state={}))
    assert delivery.board.snapshot()["outbox"]["journal_rows"] == 1
