"""The outbox fail-safe through the real lane protocol: a full outbox puts the lane on MANUAL.

``Delivery`` with the real lane controller reader family talking to the controller simulator over a pty: when
a crossing cannot be stored the controller is told ``SET_SIGNAL MANUAL``; when room returns and
the held crossings are stored, ``OFF``.
"""

from __future__ import annotations

import json
from pathlib import Path

from agent.delivery import FAULT_OUTBOX_FULL, Delivery
from agent.readers.lane_controller import LaneControllerReader
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


def crossing_payload(seq: int) -> bytes:
    return json.dumps({"seq": seq}).encode() + b" " * 2000


def test_a_crossing_that_cannot_be_stored_sets_manual_and_room_returning_sets_off(
    tmp_path: Path, simulator: ControllerSimulator, reader: LaneControllerReader
) -> None:
    outbox = Outbox(tmp_path / "outbox.db", max_bytes=CAP)
    board = StatusBoard({"lane_id": "lane-3"})
    # Never started: this test is about storing, not sending (the port has no broker).
    uplink = MqttUplink(outbox, TOPICS, host="127.0.0.1", port=free_port(), client_id="lane")
    clock = [0.0]
    delivery = Delivery(outbox, uplink, board, TOPICS, monotonic=lambda: clock[0])
    delivery.attach_signal(reader)
    # The link re-asserts a pending signal when it comes up: start from an established link.
    wait_until(lambda: reader.link.is_up, WAIT_S, "the controller link up")
    try:
        stored = 0
        while delivery.commit(crossing_payload) is not None:
            stored += 1
        assert delivery.commit(crossing_payload) is None  # queues behind the held one
        assert simulator.wait_signal(SignalState.MANUAL, WAIT_S)
        assert FAULT_OUTBOX_FULL in board.active_faults()
        assert board.snapshot()["outbox"]["held_in_memory"] == 2

        outbox.confirm("crossing", stored)  # central has them all: their room comes back
        clock[0] += 1.0
        delivery.tick()
        assert simulator.wait_signal(SignalState.OFF, WAIT_S)
        assert FAULT_OUTBOX_FULL not in board.active_faults()
        assert [row.seq for row in outbox.pending(10)] == [stored + 1, stored + 2]
        assert simulator.signal_history == [SignalState.MANUAL, SignalState.OFF]
    finally:
        outbox.close()
