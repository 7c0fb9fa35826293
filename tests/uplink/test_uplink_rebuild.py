"""A failed publisher is rebuilt in-process on the same outbox before the agent gives up.

Restarting the whole agent reloads the credential cache and flaps the lane; a failure that
repeats (the same row trips it each time) would do that every few seconds. So the delivery side
rebuilds the uplink after a back-off, and only after ``UPLINK_REBUILDS`` failures within
``UPLINK_REBUILD_WINDOW_S`` tells the service to exit for a restart.
"""

from __future__ import annotations

import time

import pytest

from agent.delivery import (
    UPLINK_REBUILD_BACKOFF_S,
    UPLINK_REBUILD_WINDOW_S,
    UPLINK_REBUILDS,
    Delivery,
)
from agent.state.outbox import Outbox, OutboxRow
from agent.status import StatusBoard
from agent.uplink.publisher import MqttUplink, UplinkState
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, wait_until
from tests.uplink.conftest import UplinkFactory, append_crossings

pytestmark = pytest.mark.broker


def test_a_failed_uplink_is_rebuilt_and_the_new_one_delivers_what_the_failed_one_left(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})

    def broken(_row: OutboxRow) -> None:
        raise RuntimeError("a bug in the acknowledgement hook")

    failing, recorder = make_uplink(
        mosquitto.host, mosquitto.port, on_acknowledged=broken, status=board
    )
    rebuilt: list[MqttUplink] = []

    def rebuild(failed: MqttUplink) -> MqttUplink:
        uplink, _ = make_uplink(mosquitto.host, mosquitto.port, status=board)
        rebuilt.append(uplink)
        return uplink

    delivery = Delivery(outbox, failing, board, topics, rebuild_uplink=rebuild)
    failing.start()
    append_crossings(outbox, topics, 1)
    failing.notify()
    recorder.wait_for(UplinkState.FAILED)
    assert outbox.stats().depth == 1, "the failed uplink never marked its row sent"

    assert delivery.uplink_failed(), "the first failure is rebuilt, not a restart"
    failed_at = time.monotonic()
    wait_until(lambda: (delivery.tick(), bool(rebuilt))[1], 10, "the rebuild")
    assert time.monotonic() - failed_at >= UPLINK_REBUILD_BACKOFF_S * 0.9, "no back-off"
    assert delivery.uplink is rebuilt[0]
    assert delivery.uplink_rebuilds == 1
    wait_until(lambda: outbox.stats().depth == 0, 10, "the row delivered by the rebuilt uplink")
    assert board.snapshot()["uplink"]["state"] == UplinkState.CONNECTED.value


def test_after_too_many_failures_within_the_window_the_agent_gives_up(
    outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    now = [1000.0]
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
    first, _ = make_uplink("127.0.0.1", 1, status=board)  # never started
    delivery = Delivery(
        outbox,
        first,
        board,
        topics,
        monotonic=lambda: now[0],
        rebuild_uplink=lambda failed: failed,
    )
    for _ in range(UPLINK_REBUILDS):
        assert delivery.uplink_failed()
        now[0] += 1.0
    assert not delivery.uplink_failed(), "one failure too many within the window"
    now[0] += UPLINK_REBUILD_WINDOW_S
    assert delivery.uplink_failed(), "old failures leave the window"
