"""Marking acknowledged rows sent, on a real Mosquitto with an outbox another connection locks."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from agent.state.outbox import Outbox
from agent.status import StatusBoard
from agent.uplink import FAULT_OUTBOX_ERROR, UplinkState
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.uplink.conftest import UplinkFactory, append_crossings, seqs

pytestmark = pytest.mark.broker


def test_rows_whose_marking_fails_stay_pending_raise_the_fault_and_are_marked_once_it_works(
    tmp_path: Path, mosquitto: MosquittoBroker, topics: Topics, make_uplink: UplinkFactory
) -> None:
    path = tmp_path / "locked.db"
    with Outbox(path, busy_timeout_s=0.1) as outbox:
        board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
        uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, outbox=outbox, status=board)
        other = sqlite3.connect(path, isolation_level=None)  # an operator's shell, say
        with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
            uplink.start()
            recorder.wait_for(UplinkState.CONNECTED)
            append_crossings(outbox, topics, 5)
            other.execute("BEGIN IMMEDIATE")  # holds the write lock: marking cannot commit
            uplink.notify()
            subscriber.wait_for(5)
            wait_until(
                lambda: FAULT_OUTBOX_ERROR in board.active_faults(), 5, "the outbox_error fault"
            )
            assert outbox.stats().depth == 5  # broker has them, the outbox still says unsent
            other.execute("ROLLBACK")
            wait_until(lambda: outbox.stats().depth == 0, 10, "every row marked sent")
            wait_until(lambda: not board.active_faults(), 5, "the fault cleared")
            messages = subscriber.barrier()
        other.close()
        uplink.stop(timeout_s=2)
    # Unmarked rows go out again after the storage retry: duplicates, never a gap.
    assert set(seqs(messages)) == {1, 2, 3, 4, 5}
    assert uplink.stats().delivered >= 5


def test_stop_returns_within_its_budget_while_the_marker_waits_for_a_locked_outbox(
    tmp_path: Path,
    mosquitto: MosquittoBroker,
    topics: Topics,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The marker waits out SQLite's busy timeout (an operator's shell holds the write lock): stop
    gives up on it within stop()'s join, so the caller never closes the outbox under a live thread.
    """
    path = tmp_path / "locked.db"
    with Outbox(path, busy_timeout_s=8.0) as outbox:
        uplink, recorder = make_uplink(
            mosquitto.host, mosquitto.port, outbox=outbox, poll_interval_s=60
        )
        other = sqlite3.connect(path, isolation_level=None)
        try:
            with Subscriber(mosquitto.host, mosquitto.port, topics.crossing) as subscriber:
                uplink.start()
                recorder.wait_for(UplinkState.CONNECTED)
                append_crossings(outbox, topics, 5)
                other.execute("BEGIN IMMEDIATE")
                uplink.notify()
                subscriber.wait_for(5)  # acknowledged; the marker now waits for the lock
                with caplog.at_level(logging.WARNING, logger="agent.uplink"):
                    uplink.stop(timeout_s=0.5)
            assert uplink.state is UplinkState.STOPPED
            assert not any("still running" in record.getMessage() for record in caplog.records)
        finally:
            other.execute("ROLLBACK")
            other.close()
