"""End to end with the camera: synthetic frames → real plate models → voting → the plate in the
crossing event → the plate crop on its own topic, against a real Mosquitto."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest

from agent.cache import CredentialCache
from agent.dev.demo import demo_config, demo_records
from agent.dev.synthetic_camera import ScenarioCamera, vehicle_at_booth
from agent.service import LaneService
from agent.uplink import all_crossings_filter
from agent.vision.capture import CaptureError, Image
from agent.vision.models import DEFAULT_MODELS_DIR, load_manifest
from agent.vision.reader import DETECTOR_MODEL
from agent.wire.schema import load_schema
from agent.wire.topics import Topics
from firmware_bridge.scenario import Scenario, generate_scenario
from firmware_bridge.simulator import ControllerSimulator
from tests.support.broker import MosquittoBroker, Subscriber, wait_until

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = load_schema("lane-agent/crossing-event/2")
ACTIVE_ACCEPTED = [
    str(r["ref"])
    for r in demo_records()
    if r["status"] == "ACTIVE" and r["program"] in ("SENTRI", "NEXUS", "GLOBAL_ENTRY")
]
PLATES = (("7ABC123", "CA"), ("XYZ4821", "TX"), ("KPT5529", "AZ"))
SPEED = 1.0


def plate_scenario(count: int = len(PLATES), gap_s: float = 1.0) -> Scenario:
    """Vehicles with their own accepted card each (a card seen again within the straggler
    window would be dropped), slow enough for several frames per vehicle."""
    scenario = generate_scenario(
        count,
        ACTIVE_ACCEPTED,
        seed=11,
        no_card_ratio=0.0,
        unknown_card_ratio=0.0,
        max_cards=1,
        gap_s=(gap_s, gap_s),
        dwell_s=(2.0, 2.0),
    )
    vehicles = tuple(
        dataclasses.replace(
            vehicle,
            plate=plate,
            jurisdiction=jurisdiction,
            cards=(dataclasses.replace(vehicle.cards[0], epc=ref, straggler_reads=0),),
        )
        for vehicle, (plate, jurisdiction), ref in zip(
            scenario.vehicles, PLATES[:count], ACTIVE_ACCEPTED, strict=False
        )
    )
    assert len(vehicles) == count
    return dataclasses.replace(scenario, vehicles=vehicles)


def test_plates_from_camera_frames_reach_central_with_their_images(
    tmp_path: Path, mosquitto: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The first two vehicles' plates are registered to their card holders, the third's is not:
    exact matches expedite, the unregistered plate is referred, and every event names a JPEG
    crop (by sha256) that arrives on the plate-image topic."""
    scenario = plate_scenario()
    registered: dict[str, list[tuple[str, str]]] = {}
    for vehicle in scenario.vehicles[:2]:
        assert vehicle.plate is not None
        registered.setdefault(vehicle.cards[0].epc, []).append((vehicle.plate, "CA"))
    third_card = scenario.vehicles[2].cards[0].epc
    registered.setdefault(third_card, [])
    with CredentialCache.open(tmp_path / "credentials.db") as cache:
        cache.import_records(demo_records(registered), source="test")

    lane = RunningLane(scenario, tmp_path, mosquitto)
    config = lane.config
    image_topic = Topics(config.mqtt.topic_prefix, config.lane.port_id, config.lane.lane_id)
    try:
        with (
            caplog.at_level(logging.DEBUG),
            Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as crossings,
            Subscriber(mosquitto.host, mosquitto.port, image_topic.plate_image) as images,
        ):
            lane.start(lambda camera: camera.get("frames_read", 0) >= 1)
            events = [json.loads(m.payload) for m in crossings.wait_for(3, timeout_s=60)]
            images.wait_for(3, timeout_s=20)
            received = {hashlib.sha256(m.payload).hexdigest(): m for m in images.barrier()}
    finally:
        lane.close()

    for event in events:
        jsonschema.validate(event, SCHEMA)
    plates = [event["plate"] for event in events]
    assert [p["text"] for p in plates] == [plate for plate, _ in PLATES]
    assert [p["match"] for p in plates] == ["exact", "exact", "not_registered"]
    assert [e["recommendation"] for e in events] == ["EXPEDITE", "EXPEDITE", "REFER"]
    assert events[2]["reasons"] == ["PLATE_NOT_REGISTERED"]
    for plate in plates:
        assert plate["readings"] >= 1
        assert plate["candidates"][0]["text"] == plate["text"]
        assert plate["image_sha256"] in received, "the event's image arrived on its topic"
        message = received[plate["image_sha256"]]
        assert message.qos == 1
        assert not message.retain
        crop = cv2.imdecode(np.frombuffer(message.payload, np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None, "the image is a JPEG"

    above_debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG)
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert not [plate for plate, _ in PLATES if plate in above_debug], "no plate above DEBUG"
    assert [plate for plate, _ in PLATES if plate in debug], "the check can see logged plates"


def register_all(scenario: Scenario, workdir: Path) -> None:
    registered: dict[str, list[tuple[str, str]]] = {}
    for vehicle in scenario.vehicles:
        assert vehicle.plate is not None
        registered.setdefault(vehicle.cards[0].epc, []).append((vehicle.plate, "CA"))
    with CredentialCache.open(workdir / "credentials.db") as cache:
        cache.import_records(demo_records(registered), source="test")


class UnpluggableCamera:
    """The synthetic camera behind a cable that can be pulled: no frames, open fails."""

    def __init__(self, inner: ScenarioCamera) -> None:
        self.inner = inner
        self.description = inner.description
        self.pace_fps = inner.pace_fps
        self.plugged = threading.Event()

    def open(self) -> None:
        if not self.plugged.is_set():
            raise CaptureError(self.description, "unplugged")

    def read(self) -> Image:
        if not self.plugged.is_set():
            raise CaptureError(self.description, "unplugged")
        return self.inner.read()

    def close(self) -> None:
        """Nothing to release."""


class RunningLane:
    """The service with a camera on a thread; the vehicles start once the plate thread is ready.

    Waiting for the plate thread (models loaded, first frame read) keeps the tests about plates,
    not about how long model loading takes on a busy machine.
    """

    def __init__(
        self,
        scenario: Scenario,
        workdir: Path,
        broker: MosquittoBroker,
        *,
        camera: UnpluggableCamera | None = None,
        **vision: object,
    ) -> None:
        self.simulator = ControllerSimulator(scenario, speed=SPEED)
        config = demo_config(workdir, self.simulator.device_path, broker.port, camera=True)
        self.config = config.model_copy(
            update={
                "camera": config.camera.model_copy(
                    update={"stall_timeout_s": 0.5, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
                ),
                "vision": config.vision.model_copy(update=vision),
            }
        )
        source = ScenarioCamera(scenario, lambda: vehicle_at_booth(self.simulator.sent_events()))
        self.service = LaneService(self.config, camera_source=camera or source)
        if camera is not None:
            camera.inner = source
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.service.run, args=(self.stop,), daemon=True)

    def start(self, plates_ready: Callable[[dict[str, Any]], bool]) -> None:
        """Start the service, wait until ``plates_ready(status camera section)``, then the lane."""
        self.thread.start()
        wait_until(
            lambda: plates_ready(self._camera_status()), 30.0, "the plate thread to be ready"
        )
        self.simulator.start()

    def _camera_status(self) -> dict[str, Any]:
        delivery = getattr(self.service, "delivery", None)
        if delivery is None:
            return {}
        camera: dict[str, Any] = delivery.board.snapshot().get("camera", {})
        return camera

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        self.simulator.stop()
        assert not self.thread.is_alive(), "the service stopped cleanly"


def test_a_camera_that_is_down_gives_rfid_only_crossings_with_its_reason_then_recovers(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    """Camera unplugged: the crossing is decided on cards with CAMERA_UNAVAILABLE (PRIMARY, never
    EXPEDITE on a tag read alone); plugged back in, the next vehicle's plate is read again."""
    scenario = plate_scenario(2, gap_s=2.5)
    register_all(scenario, tmp_path)
    camera = UnpluggableCamera(ScenarioCamera(scenario, lambda: None))
    lane = RunningLane(scenario, tmp_path, mosquitto, camera=camera)
    try:
        with Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as crossings:
            lane.start(lambda camera: camera.get("plate_fault") == "camera_unavailable")
            first = json.loads(crossings.wait_for(1, timeout_s=30)[0].payload)
            camera.plugged.set()
            second = json.loads(crossings.wait_for(2, timeout_s=30)[1].payload)
    finally:
        lane.close()
    assert first["plate"]["match"] == "camera_unavailable"
    assert first["reasons"] == ["CAMERA_UNAVAILABLE"]
    assert first["recommendation"] == "PRIMARY"
    assert [card["result"] for card in first["cards"]] == ["valid"], "cards still decided"
    assert second["plate"]["match"] == "exact"
    assert second["plate"]["text"] == PLATES[1][0]
    assert second["recommendation"] == "EXPEDITE"


def test_a_corrupt_model_file_gives_rfid_only_crossings_with_its_reason_and_no_crash(
    tmp_path: Path, mosquitto: MosquittoBroker
) -> None:
    models = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR, models)
    detector = models / load_manifest(models)[DETECTOR_MODEL].file
    detector.write_bytes(detector.read_bytes()[: detector.stat().st_size // 2])
    scenario = plate_scenario(1, gap_s=1.0)
    register_all(scenario, tmp_path)
    lane = RunningLane(scenario, tmp_path, mosquitto, models_dir=models)
    try:
        with Subscriber(mosquitto.host, mosquitto.port, all_crossings_filter()) as crossings:
            lane.start(lambda camera: camera.get("plate_fault") == "reader_unavailable")
            (message,) = crossings.wait_for(1, timeout_s=30)
            event = json.loads(message.payload)
            status = lane.service.delivery.board.snapshot()
    finally:
        lane.close()
    jsonschema.validate(event, SCHEMA)
    assert event["plate"]["match"] == "reader_unavailable"
    assert event["reasons"] == ["PLATE_READER_UNAVAILABLE"]
    assert event["recommendation"] == "PRIMARY"
    assert event["plate"]["image_sha256"] is None
    assert "reader_unavailable" in json.dumps(status)
