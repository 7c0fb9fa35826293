"""The reference broker config (config/mosquitto/) on a real Mosquitto with a private CA.

Shows what the config promises: a lane's certificate is its identity; it can publish only on its
own topics and cannot take over another lane's session; the lane agent works over mutual TLS.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.state.outbox import Outbox
from agent.uplink import TlsFiles, UplinkState
from agent.wire.topics import Topics
from tests.support.broker import LOOPBACK, MosquittoBroker, Subscriber, wait_until
from tests.support.pki import Identity, TestPki
from tests.uplink.conftest import UplinkFactory, append_crossings, seqs

pytestmark = pytest.mark.broker

REFERENCE = Path(__file__).resolve().parents[2] / "config" / "mosquitto"
LANE_A = Topics("lane-agent/v1", "port-7", "lane-A")
LANE_B = Topics("lane-agent/v1", "port-7", "lane-B")


def render_reference_config(pki: TestPki, port: int, workdir: Path) -> str:
    """The reference mosquitto.conf with its paths and port pointed at this test."""
    (workdir / "lane-agent.acl").write_text((REFERENCE / "lane-agent.acl").read_text())
    overrides = {
        "listener": f"listener {port} {LOOPBACK}",
        "cafile": f"cafile {pki.ca_cert}",
        "certfile": f"certfile {pki.broker.cert}",
        "keyfile": f"keyfile {pki.broker.key}",
        "acl_file": f"acl_file {workdir / 'lane-agent.acl'}",
        "persistence_location": f"persistence_location {workdir}/",
    }
    lines = []
    for line in (REFERENCE / "mosquitto.conf").read_text().splitlines():
        key = line.split(" ", 1)[0]
        lines.append(overrides.pop(key, line))
    assert not overrides, f"reference config lost its {sorted(overrides)} lines"
    # Test-only: log to the work directory; when run as root, stay root.
    lines += [f"log_dest file {workdir / 'mosquitto.log'}", "log_type all", "user root", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class Authority:
    """The test CA and the identities the tests use."""

    pki: TestPki
    lane_a: Identity
    lane_b: Identity
    ingest: Identity


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    pki = TestPki(tmp_path_factory.mktemp("pki"))
    return Authority(
        pki,
        lane_a=pki.issue("port-7/lane-A", "lane-a"),
        lane_b=pki.issue("port-7/lane-B", "lane-b"),
        ingest=pki.issue("central-ingest", "ingest"),
    )


@pytest.fixture
def broker(ca: Authority, tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(
        tmp_path / "mosquitto",
        render_config=lambda port, workdir: render_reference_config(ca.pki, port, workdir),
    ) as running:
        yield running


class TlsClient:
    """A bare paho client over mutual TLS that records its connection and publish outcomes."""

    def __init__(self, pki: TestPki, identity: Identity, broker: MosquittoBroker, client_id: str):
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.acks: dict[int, ReasonCode] = {}
        self._condition = threading.Condition()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.tls_set(str(pki.ca_cert), str(identity.cert), str(identity.key))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.connected.wait(5), f"{identity.common_name} could not connect"

    def _on_connect(self, *args: Any) -> None:
        self.connected.set()

    def _on_disconnect(self, *args: Any) -> None:
        self.disconnected.set()

    def _on_publish(
        self, _c: Any, _u: Any, mid: int, reason: ReasonCode, _p: Properties | None
    ) -> None:
        with self._condition:
            self.acks[mid] = reason
            self._condition.notify_all()

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and return the PUBACK reason code."""
        mid = self.client.publish(topic, payload, qos=1).mid
        with self._condition:
            assert self._condition.wait_for(lambda: mid in self.acks, 5), "no PUBACK"
            return self.acks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ingest_tls(ca: Authority) -> tuple[Path, Path, Path]:
    return (ca.pki.ca_cert, ca.ingest.cert, ca.ingest.key)


def test_a_lane_certificate_publishes_on_its_own_topics_and_is_refused_on_another_lanes(
    ca: Authority, broker: MosquittoBroker
) -> None:
    with Subscriber(
        broker.host, broker.port, "lane-agent/v1/+/+/crossing", tls=ingest_tls(ca)
    ) as ingest:
        lane_a = TlsClient(ca.pki, ca.lane_a, broker, "lane-port-7-lane-A")
        try:
            assert not lane_a.publish(LANE_A.crossing, b'{"seq": 1}').is_failure
            refused = lane_a.publish(LANE_B.crossing, b'{"seq": 666}')
            assert refused.value == 0x87  # Not authorized
            assert lane_a.publish(LANE_A.crossing, b'{"seq": 2}').is_failure is False
        finally:
            lane_a.close()
        received = ingest.wait_for(2)
    assert [(m.topic, json.loads(m.payload)["seq"]) for m in received] == [
        (LANE_A.crossing, 1),
        (LANE_A.crossing, 2),
    ]


def test_a_lane_cannot_take_over_another_lanes_session_by_using_its_client_id(
    ca: Authority, broker: MosquittoBroker
) -> None:
    lane_b = TlsClient(ca.pki, ca.lane_b, broker, "lane-port-7-lane-B")
    impostor = TlsClient(ca.pki, ca.lane_a, broker, "lane-port-7-lane-B")
    try:
        # Had the broker taken the client id at its word, lane B would have been disconnected
        # before the impostor's CONNACK; it is still connected and can still publish.
        assert not lane_b.disconnected.is_set()
        assert not lane_b.publish(LANE_B.crossing, b'{"seq": 1}').is_failure
        assert not lane_b.disconnected.is_set()
    finally:
        impostor.close()
        lane_b.close()
    log = (broker.workdir / "mosquitto.log").read_text()
    assert re.search(r"as port-7/lane-B \(", log), "lane B's client id is its identity"


def test_a_certificate_from_another_ca_never_gets_a_session_and_the_failure_is_logged(
    ca: Authority,
    broker: MosquittoBroker,
    tmp_path: Path,
    make_uplink: UplinkFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = TestPki(tmp_path / "other-ca")
    forged = stranger.issue("port-7/lane-A", "forged")
    uplink, recorder = make_uplink(
        broker.host,
        broker.port,
        topics=LANE_A,
        tls=TlsFiles(ca.pki.ca_cert, forged.cert, forged.key),
    )
    with caplog.at_level(logging.WARNING, logger="agent.uplink"):
        uplink.start()
        recorder.wait_for(UplinkState.DISCONNECTED)
        mark = recorder.mark()
        recorder.wait_for(UplinkState.DISCONNECTED, since=mark)  # and again after its back-off
    assert UplinkState.CONNECTED not in recorder.history
    assert uplink.stats().connects == 0
    assert "uplink to 127.0.0.1" in caplog.text


def test_a_renewed_certificate_is_used_at_the_next_reconnect_without_a_restart(
    ca: Authority, broker: MosquittoBroker, tmp_path: Path, make_uplink: UplinkFactory
) -> None:
    """The lane's certificate files are replaced in place (a renewal): the running uplink, refused
    until then, presents the new pair on its next attempt."""
    stranger = TestPki(tmp_path / "other-ca")
    forged = stranger.issue("port-7/lane-A", "forged")
    cert, key = tmp_path / "lane.pem", tmp_path / "lane.key"
    shutil.copyfile(forged.cert, cert)
    shutil.copyfile(forged.key, key)
    uplink, recorder = make_uplink(
        broker.host,
        broker.port,
        topics=LANE_A,
        client_id="lane-port-7-lane-A",
        tls=TlsFiles(ca.pki.ca_cert, cert, key),
    )
    uplink.start()
    recorder.wait_for(UplinkState.DISCONNECTED)
    shutil.copyfile(ca.lane_a.cert, cert)
    shutil.copyfile(ca.lane_a.key, key)
    recorder.wait_for(UplinkState.CONNECTED)
    assert uplink.stats().connects == 1


def test_the_lane_agent_delivers_over_mutual_tls_and_applies_the_ingest_watermark(
    ca: Authority, broker: MosquittoBroker, tmp_path: Path, make_uplink: UplinkFactory
) -> None:
    outbox = Outbox(tmp_path / "lane-a.db")
    try:
        append_crossings(outbox, LANE_A, 5)
        with Subscriber(broker.host, broker.port, LANE_A.crossing, tls=ingest_tls(ca)) as ingest:
            uplink, recorder = make_uplink(
                broker.host,
                broker.port,
                outbox=outbox,
                topics=LANE_A,
                client_id="lane-port-7-lane-A",
                tls=ca.pki.tls_files(ca.lane_a),
            )
            uplink.start()
            recorder.wait_for(UplinkState.CONNECTED)
            assert seqs(ingest.wait_for(5)) == [1, 2, 3, 4, 5]
            ingest_client = TlsClient(ca.pki, ca.ingest, broker, "central-ingest")
            try:
                ack = json.dumps({"acked_seq": {"crossing": 5}}).encode()
                info = ingest_client.client.publish(LANE_A.ack, ack, qos=1, retain=True)
                info.wait_for_publish(5)
            finally:
                ingest_client.close()
            wait_until(lambda: outbox.stats().total_rows == 0, 5, "rows confirmed and removed")
    finally:
        outbox.close()
