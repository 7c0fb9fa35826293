"""The uplink and the store it drains: the lane's outbox fits what the uplink asks of a store, and
its storage errors are retried while anything else it raises fails the publisher thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.state.outbox import PRIORITY_CROSSING, Outbox
from agent.status import StatusBoard
from agent.uplink import FAULT_OUTBOX_ERROR, UplinkState
from agent.uplink.store import DEFAULT_URGENT_PRIORITY
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.uplink.conftest import OUTBOX_ERRORS, UplinkFactory, append_crossings, seqs


def test_the_urgent_priority_the_uplink_assumes_is_the_outboxs_crossing_priority() -> None:
    assert DEFAULT_URGENT_PRIORITY == PRIORITY_CROSSING


class RequeueFails(Outbox):
    """A real outbox whose re-queue after every CONNACK raises ``error`` the first ``times``."""

    def __init__(self, path: Path, *, error: Exception, times: int) -> None:
        super().__init__(path)
        self.error = error
        self.times = times

    def requeue_unconfirmed(self) -> int:
        if self.times > 0:
            self.times -= 1
            raise self.error
        return super().requeue_unconfirmed()


@pytest.mark.broker
def test_an_error_the_store_declares_as_storage_trouble_is_retried_with_the_fault_raised(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    topics: Topics,
    make_uplink: UplinkFactory,
) -> None:
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
    with RequeueFails(
        tmp_path / "outbox.db",
        error=KeyError("not a storage error of the lane's outbox"),
        times=1,
    ) as outbox:
        uplink, recorder = make_uplink(
            mosquitto.host,
            mosquitto.port,
            outbox=outbox,
            status=board,
            storage_errors=(*OUTBOX_ERRORS, KeyError),
        )
        with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
            uplink.start()
            recorder.wait_for(UplinkState.CONNECTED)
            assert FAULT_OUTBOX_ERROR in board.active_faults()
            append_crossings(outbox, topics, 3)
            uplink.notify()
            assert seqs(subscriber.wait_for(3)) == [1, 2, 3]
            wait_until(lambda: not board.active_faults(), 5, "the fault cleared by the next mark")
        uplink.stop(timeout_s=2)
    assert UplinkState.FAILED not in recorder.history


@pytest.mark.broker
def test_an_error_the_store_does_not_declare_fails_the_publisher_thread(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    make_uplink: UplinkFactory,
) -> None:
    with RequeueFails(
        tmp_path / "outbox.db",
        error=KeyError("a bug in the store"),
        times=1,
    ) as outbox:
        uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, outbox=outbox)
        uplink.start()
        recorder.wait_for(UplinkState.FAILED)
        uplink.stop(timeout_s=2)
    assert recorder.history[-1] is UplinkState.FAILED
