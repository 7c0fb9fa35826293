"""Cache updates over a real Mosquitto: central's tool publishes, a running lane applies and uses.

The round trip: ``lane-agent bundle build`` + ``bundle publish`` → the agent's updates
subscriber installs the delta → a vehicle with the new card is recommended EXPEDITE. Then, with
the agent stopped, a revocation is published; the agent's persistent session receives it on
restart and the same card raises an ALERT.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from click.testing import CliRunner

from agent.cache import CredentialCache
from agent.cache.bundle import Kind
from agent.cache.install import CacheInstaller
from agent.cache.trust import write_private_key
from agent.cache.updates import CacheUpdates
from agent.cli import main
from agent.config import load_config
from agent.service import LaneService
from agent.wire.topics import all_crossings_filter, cache_resync_topic, cache_update_topic
from firmware_bridge.scenario import CardPass, Scenario, Vehicle
from firmware_bridge.simulator import ControllerSimulator
from tests.cache.conftest import valid_record, write_ndjson
from tests.cache.kit import LANE, PORT, Central, installer_for, record_line, ref
from tests.support.broker import MosquittoBroker, Subscriber, wait_until

pytestmark = pytest.mark.broker

OLD_CARD = "E2801160000000000000A001"
NEW_CARD = "E2801160000000000000B002"
SPEED = 4.0


@pytest.fixture
def central(tmp_path: Path) -> Central:
    made = Central(tmp_path)
    made.write_trust()
    for number, key in enumerate(made.keys[:2]):
        write_private_key(tmp_path / f"central-{number}.key", key)
    return made


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def build(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / f"{name}.bundle"
    cli(
        "bundle", "build", "--port", PORT, "--out", str(out),
        "--key", str(tmp_path / "central-0.key"), "--key", str(tmp_path / "central-1.key"), *args,
    )  # fmt: skip
    return out


def publish(bundle: Path, broker: MosquittoBroker) -> None:
    cli("bundle", "publish", str(bundle), "--port", str(broker.port))


def write_config(tmp_path: Path, device: str, broker: MosquittoBroker) -> Path:
    path = tmp_path / "lane.toml"
    path.write_text(
        f'[lane]\nport_id = "{PORT}"\nlane_id = "{LANE}"\n'
        f"[lane.correlation]\nidle_timeout_s = 2.0\nstraggler_window_s = 0.75\n"
        f'[controller]\ndevice = "{device}"\nping_interval_s = 0.5\nsilence_timeout_s = 3.0\n'
        '[cache]\npath = "credentials.db"\ntrust_file = "trust.json"\n'
        '[outbox]\npath = "outbox.db"\n'
        f"[mqtt]\nport = {broker.port}\nreconnect_min_s = 0.2\nreconnect_max_s = 2.0\n"
        '[logging]\nformat = "text"\n'
    )
    return path


class Lane:
    """The agent's service on a thread, its controller simulator created but not yet started."""

    def __init__(self, tmp_path: Path, broker: MosquittoBroker, card: str) -> None:
        scenario = Scenario(
            name="one car",
            vehicles=(Vehicle(dwell_s=2.0, gap_s=1.0, cards=(CardPass(epc=card, reads=4),)),),
        )
        self.simulator = ControllerSimulator(scenario, speed=SPEED)
        config = load_config(write_config(tmp_path, self.simulator.device_path, broker))
        self.service = LaneService(config)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.service.ready.wait(10), "service did not become ready"
        updates = self.service.cache_channel.updates
        assert updates is not None
        assert updates.subscribed.wait(10), "updates subscriber did not subscribe"

    def wait_for_state(self, what: str, predicate: Any) -> None:
        channel = self.service.cache_channel
        wait_until(lambda: predicate(channel.state.get()), 10, what)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        self.simulator.stop()
        assert not self.thread.is_alive()


@pytest.fixture
def lanes() -> Iterator[list[Lane]]:
    started: list[Lane] = []
    yield started
    for lane in started:
        if lane.thread.is_alive():
            lane.close()


def test_published_delta_is_used_by_the_next_crossing_and_a_revocation_raises_an_alert(
    tmp_path: Path, central: Central, mosquitto: MosquittoBroker, lanes: list[Lane]
) -> None:
    records = write_ndjson(tmp_path / "old.ndjson", [valid_record(ref=OLD_CARD)])
    snapshot = build(
        tmp_path, "snapshot", "--kind", "snapshot", "--version", "1", "--input", str(records)
    )
    config_path = tmp_path / "lane.toml"
    write_config(tmp_path, "/dev/null", mosquitto)
    assert "installed snapshot 1" in cli(
        "cache", "import", str(snapshot), "--config", str(config_path)
    )

    with Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as crossings:
        lane = Lane(tmp_path, mosquitto, NEW_CARD)
        lanes.append(lane)
        new = write_ndjson(
            tmp_path / "new.ndjson", [valid_record(ref=NEW_CARD, holder_ref="H-777")]
        )
        delta = build(
            tmp_path, "delta", "--kind", "delta", "--version", "2", "--base-version", "1",
            "--input", str(new),
        )  # fmt: skip
        publish(delta, mosquitto)
        lane.wait_for_state("delta 2 installed", lambda s: s.bundle_version == 2)
        status = lane.service.cache_channel.status()
        assert (status["installed"], status["refused"], status["stale"]) == (
            {"delta": 1},
            {},
            False,
        )
        lane.simulator.start()
        first = json.loads(crossings.wait_for(1, timeout_s=30)[0].payload)
        lane.close()

        revocations = tmp_path / "revoked.txt"
        revocations.write_text(NEW_CARD + "\n")
        revocation = build(
            tmp_path, "revocation", "--kind", "revocation", "--version", "1",
            "--input", str(revocations),
        )  # fmt: skip
        publish(revocation, mosquitto)  # the lane is offline: its session keeps the message
        lane = Lane(tmp_path, mosquitto, NEW_CARD)
        lanes.append(lane)
        lane.wait_for_state("revocation 1 applied", lambda s: s.revocation_serial == 1)
        lane.simulator.start()
        second = json.loads(crossings.wait_for(2, timeout_s=30)[1].payload)
        lane.close()

    assert first["recommendation"] == "EXPEDITE", first
    assert first["cards"][0]["ref"] == NEW_CARD
    assert first["cards"][0]["holder_ref"] == "H-777"
    assert first["cache"]["bundle_version"] == 2
    assert 0 <= first["cache"]["age_s"] < 600
    assert second["recommendation"] == "ALERT", second
    assert second["reasons"] == ["CARD_REVOKED"]


def test_a_gap_makes_the_lane_ask_central_for_a_resync(
    tmp_path: Path, central: Central, mosquitto: MosquittoBroker
) -> None:
    cache_path = tmp_path / "credentials.db"
    installer = installer_for(cache_path, central)
    installer.install_bytes(central.bundle(Kind.SNAPSHOT, 4, [record_line(1)]), source="setup")
    resync_topic = cache_resync_topic("lane-agent/v1", PORT, LANE)
    with (
        CredentialCache.open(cache_path) as cache,
        Subscriber(mosquitto.host, mosquitto.port, resync_topic) as resyncs,
    ):
        updates = _updates(installer, cache, mosquitto)
        updates.start()
        try:
            assert updates.subscribed.wait(10)
            gap = central.bundle(Kind.DELTA, 7, [f"U\t{record_line(2)}"], base_version=6)
            _publish_raw(mosquitto, cache_update_topic("lane-agent/v1", PORT, "delta"), gap)
            request = json.loads(resyncs.wait_for(1, timeout_s=10)[0].payload)
        finally:
            updates.stop()
    assert request["installed_version"] == 4
    assert request["reason"] == "gap"
    assert installer.stats().refused == {"gap": 1}


def test_queued_revocations_are_applied_before_queued_deltas(
    tmp_path: Path, central: Central
) -> None:
    """Messages waiting in the worker's queue come out revocations first, whatever their order."""
    cache_path = tmp_path / "credentials.db"
    installer = installer_for(cache_path, central)
    installer.install_bytes(central.bundle(Kind.SNAPSHOT, 1, [record_line(1)]), source="setup")
    with CredentialCache.open(cache_path) as cache:
        updates = _updates(installer, cache, None)
        applied: list[tuple[int | None, int]] = []
        updates._on_state = lambda state: applied.append(
            (state.bundle_version, state.revocation_serial)
        )
        for topic_kind, data in [
            ("delta", central.bundle(Kind.DELTA, 2, [f"U\t{record_line(2)}"], base_version=1)),
            ("revocation", central.bundle(Kind.REVOCATION, 1, [ref(1)])),
        ]:
            message = mqtt.MQTTMessage(
                topic=cache_update_topic("lane-agent/v1", PORT, topic_kind).encode()
            )
            message.payload = data
            updates._paho_message(updates._client, None, message)
        while not updates._events.empty():
            _, _, event = updates._events.get_nowait()
            updates._handle(event)
    assert applied == [(1, 1), (2, 1)]


def _updates(
    installer: CacheInstaller, cache: CredentialCache, broker: MosquittoBroker | None
) -> CacheUpdates:
    return CacheUpdates(
        installer,
        cache,
        prefix="lane-agent/v1",
        port_id=PORT,
        lane_id=LANE,
        host="127.0.0.1",
        port=broker.port if broker else 1,
        client_id="lane-test-updates",
        resync_interval_s=60,
    )


def _publish_raw(broker: MosquittoBroker, topic: str, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
