"""The uplink's retained messages on a real Mosquitto: availability (online, the offline will,
stopped) and the status document."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.state.outbox import Outbox
from agent.status import StatusBoard
from agent.uplink import UplinkState
from agent.wire.topics import Topics
from tests.support.broker import MosquittoBroker, Subscriber, wait_until
from tests.support.proxy import TcpProxy
from tests.uplink.conftest import UplinkFactory

pytestmark = pytest.mark.broker

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_availability_is_retained_online_while_connected_and_stopped_after_a_clean_stop(
    mosquitto: MosquittoBroker, topics: Topics, make_uplink: UplinkFactory
) -> None:
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port)
    uplink.start()
    recorder.wait_for(UplinkState.CONNECTED)
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as first_subscriber:
        first_subscriber.wait_for(1)  # 'online' reached the broker (live or retained)
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as late_subscriber:
        (online,) = late_subscriber.wait_for(1)
    uplink.stop(timeout_s=5)
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as after_stop:
        (stopped,) = after_stop.wait_for(1)
    assert (online.payload, online.retain) == (b"online", True)
    assert (stopped.payload, stopped.retain) == (b"stopped", True)
    assert recorder.history == [
        UplinkState.CONNECTING,
        UplinkState.CONNECTED,
        UplinkState.STOPPING,
        UplinkState.STOPPED,
    ]


def test_broker_publishes_the_offline_will_when_the_agent_process_is_killed(
    mosquitto: MosquittoBroker, tmp_path: Path, topics: Topics
) -> None:
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as subscriber:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.uplink.agent_child",
                "uplink",
                str(tmp_path / "child-outbox.db"),
                mosquitto.host,
                str(mosquitto.port),
                "lane-agent-child",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "connected\n"
            subscriber.wait_until(
                lambda received: [m.payload for m in received] == [b"online"], 5, "online"
            )
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        messages = subscriber.wait_for(2)
    assert [m.payload for m in messages] == [b"online", b"offline"]
    with Subscriber(mosquitto.host, mosquitto.port, topics.availability) as late_subscriber:
        (retained,) = late_subscriber.wait_for(1)
    assert (retained.payload, retained.retain) == (b"offline", True)


def test_status_messages_stay_within_a_receive_maximum_smaller_than_pahos_window(
    tmp_path: Path, topics: Topics, make_uplink: UplinkFactory
) -> None:
    """On the first connection paho's window is larger than the broker allows, so rows, status and
    availability share the broker's slots here: status waits for a PUBACK rather than overflow."""
    broker = MosquittoBroker(tmp_path / "mosquitto", extra_config="max_inflight_messages 3")
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
    with broker, TcpProxy(0, broker.host, broker.port) as proxy:
        uplink, recorder = make_uplink(
            proxy.host, proxy.port, max_inflight=20, status=board, status_interval_s=0.05
        )
        uplink.start()
        recorder.wait_for(UplinkState.CONNECTED)
        wait_until(lambda: uplink.stats().status_published >= 3, 5, "status published")
        proxy.cut()  # nothing is acknowledged from now on
        before = uplink.stats().status_published
        time.sleep(1.0)  # twenty status intervals
        after = uplink.stats().status_published
    # Up to three messages unacknowledged on the wire, whatever they are.
    assert after - before <= 3


def test_status_is_retained_and_shows_the_uplink_and_faults_and_follows_changes(
    mosquitto: MosquittoBroker, outbox: Outbox, topics: Topics, make_uplink: UplinkFactory
) -> None:
    board = StatusBoard({"port_id": "port-7", "lane_id": "lane-3"})
    board.contribute("outbox", lambda: {"depth": outbox.stats().depth})
    uplink, recorder = make_uplink(mosquitto.host, mosquitto.port, status=board)
    uplink.start()
    recorder.wait_for(UplinkState.CONNECTED)
    wait_until(lambda: uplink.stats().status_published >= 1, 5, "a first status")
    # A subscriber that comes later still gets the latest document: it is retained.
    with Subscriber(mosquitto.host, mosquitto.port, topics.status) as subscriber:
        first = json.loads(subscriber.wait_for(1)[0].payload)
        assert first["uplink"]["state"] == "connected"
        assert first["faults"] == []
        assert subscriber.messages[0].retain
        board.raise_fault("outbox_full", "crossings cannot be stored (cap)")
        messages = subscriber.wait_until(
            lambda received: any(b"outbox_full" in m.payload for m in received), 5, "the fault"
        )
    latest = json.loads(messages[-1].payload)
    assert latest["last_fault"]["code"] == "outbox_full"
    assert latest["outbox"] == {"depth": 0}
