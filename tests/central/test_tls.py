"""Central over the shipped broker config (config/mosquitto/): mutual TLS, the certificate is the
identity. Ingest workers share the lanes with certificates of their own; a bundle is published
with the central-cache certificate; a lane cannot publish as another lane."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.cli import main as lane_agent
from central.mqtt import BrokerSettings, TlsSettings
from tests.central.events import crossing_event, encode, topics
from tests.central.kit import count, running_worker, settings, wait_for
from tests.support.broker import MosquittoBroker
from tests.support.pki import Identity, TestPki
from tests.uplink.test_broker_config import render_reference_config

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def broker(pki: TestPki, tmp_path: Path) -> Iterator[MosquittoBroker]:
    made = MosquittoBroker(
        tmp_path / "broker",
        render_config=lambda port, work: render_reference_config(pki, port, work),
    )
    made.start()
    try:
        yield made
    finally:
        made.stop()


def tls(pki: TestPki, identity: Identity, broker: MosquittoBroker) -> BrokerSettings:
    return BrokerSettings(
        broker.host, broker.port, TlsSettings(pki.ca_cert, identity.cert, identity.key)
    )


class TlsLane:
    """A lane's MQTT connection with its certificate; collects its watermarks."""

    def __init__(self, pki: TestPki, identity: Identity, broker: MosquittoBroker) -> None:
        self.acks: list[int] = []
        self.refused: list[str] = []
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=identity.common_name,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.tls_set(str(pki.ca_cert), str(identity.cert), str(identity.key))
        self.client.on_subscribe = lambda *_args: subscribed.set()
        self.client.on_message = lambda _c, _u, message: self.acks.append(
            json.loads(message.payload)["acked_seq"]["crossing"]
        )
        self.client.on_publish = lambda _c, _u, _mid, reason, _p: (
            reason.is_failure and self.refused.append(str(reason))
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        port_id, lane_id = identity.common_name.split("/")
        self.topics = topics(port_id, lane_id)
        self.client.subscribe(self.topics.ack, qos=1)
        assert subscribed.wait(5)

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_two_workers_with_their_own_certificates_share_the_lanes_over_mutual_tls(
    pki: TestPki, broker: MosquittoBroker, dsn: str
) -> None:
    lane_a = TlsLane(pki, pki.issue("SYS-0250/L01", "lane-a"), broker)
    lane_b = TlsLane(pki, pki.issue("SYS-0250/L02", "lane-b"), broker)
    first, second = (
        pki.issue("central-ingest-1", "ingest-1"),
        pki.issue("central-ingest-2", "ingest-2"),
    )
    with (
        running_worker(
            settings(dsn, broker, client_id="central-ingest-1", broker=tls(pki, first, broker))
        ) as one,
        running_worker(
            settings(dsn, broker, client_id="central-ingest-2", broker=tls(pki, second, broker))
        ) as two,
    ):
        for seq in range(1, 21):
            lane_a.publish(lane_a.topics.crossing, encode(crossing_event("SYS-0250", "L01", seq)))
        # Lane B's certificate cannot publish on lane A's topic: refused by the broker, not stored.
        lane_b.publish(lane_a.topics.crossing, encode(crossing_event("SYS-0250", "L01", 21)))
        wait_for(lambda: 20 in lane_a.acks, 10, "lane A's watermark 20")
        assert one.stats.stored + two.stats.stored == 20
    assert lane_b.refused == ["Not authorized"]
    assert count(dsn, "SELECT count(*) FROM crossings") == 20
    lane_a.close()
    lane_b.close()


def test_bundle_publish_reaches_the_shipped_broker_with_the_central_cache_certificate(
    pki: TestPki, broker: MosquittoBroker, tmp_path: Path
) -> None:
    cache = pki.issue("central-cache", "central-cache")
    runner = CliRunner()
    assert (
        runner.invoke(lane_agent, ["keys", "generate", "k", "--out-dir", str(tmp_path)]).exit_code
        == 0
    )
    bundle = tmp_path / "f.bundle"
    built = runner.invoke(
        lane_agent,
        [
            "bundle",
            "build",
            "--kind",
            "freshness",
            "--version",
            "1",
            "--port",
            "SYS-0250",
            "--key",
            str(tmp_path / "k.key"),
            "--out",
            str(bundle),
        ],
    )
    assert built.exit_code == 0, built.output
    tls_options = [
        "--tls-ca",
        str(pki.ca_cert),
        "--tls-cert",
        str(cache.cert),
        "--tls-key",
        str(cache.key),
    ]
    published = runner.invoke(
        lane_agent,
        [
            "bundle",
            "publish",
            str(bundle),
            "--port",
            str(broker.port),
            "--client-id",
            "central-cache",
            *tls_options,
        ],
    )
    assert published.exit_code == 0, published.output
    assert "published on lane-agent/v1/cache/SYS-0250/freshness" in published.output
    lane = pki.issue("SYS-0250/L01", "lane")
    refused = runner.invoke(
        lane_agent,
        [
            "bundle",
            "publish",
            str(bundle),
            "--port",
            str(broker.port),
            "--tls-ca",
            str(pki.ca_cert),
            "--tls-cert",
            str(lane.cert),
            "--tls-key",
            str(lane.key),
        ],
    )
    assert refused.exit_code == 69
    assert (
        "the broker refused lane-agent/v1/cache/SYS-0250/freshness: Not authorized"
        in refused.output
    )
    plain = runner.invoke(
        lane_agent, ["bundle", "publish", str(bundle), "--port", str(broker.port), "--timeout", "2"]
    )
    assert plain.exit_code == 69
