"""The plate thread with the real models: plates in frames become typed inputs, and camera or
model failures degrade the lane to RFID-only with a reason, never a crash, and recover."""

from __future__ import annotations

import queue
import random
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.dev.synthetic_camera import render_scene
from agent.lane.events import PlateSeen, VisionChanged, VisionFault
from agent.status import StatusBoard
from agent.vision.capture import CameraCapture, CaptureError, Image, ImageFolderSource
from agent.vision.models import DEFAULT_MODELS_DIR, ModelError, load_manifest
from agent.vision.pipeline import PlatePipeline, PlateReader
from agent.vision.reader import READER_MODEL, PlateRecognizer
from tests.support.broker import wait_until

PLATE = "7ABC123"
ROI = (144, 240, 352, 192)


@pytest.fixture(scope="module")
def recognizer() -> PlateRecognizer:
    """Loaded once: loading hashes and parses about 30 MB of models."""
    return PlateRecognizer.load(threads=1)


def write_scenes(folder: Path, plate: str | None, count: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(7)
    for number in range(count):
        scene = render_scene(plate, "CA", rng=rng, approach=number / max(1, count - 1))
        cv2.imwrite(str(folder / f"scene-{number:03d}.png"), scene)
    return folder


class Inbox:
    """The engine inbox as the plate thread sees it: put_nowait only."""

    def __init__(self) -> None:
        self.queue: queue.Queue[object] = queue.Queue()
        self.seen: list[object] = []

    def next_matching(self, predicate: Callable[[object], bool], timeout_s: float = 10.0) -> object:
        """Take inputs until one matches; fail when none does within ``timeout_s``."""
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                try:
                    item = self.queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                self.seen.append(item)
                if predicate(item):
                    return item
        finally:
            timer.cancel()
        pytest.fail(f"no matching input within {timeout_s} s; got {self.seen[-5:]!r}")


def fault_is(fault: VisionFault | None) -> Callable[[object], bool]:
    return lambda item: isinstance(item, VisionChanged) and item.fault is fault


@pytest.fixture
def pipelines() -> Iterator[list[PlatePipeline]]:
    running: list[PlatePipeline] = []
    yield running
    for pipeline in running:
        pipeline.stop(timeout_s=5.0)


def run_pipeline(
    running: list[PlatePipeline],
    capture: CameraCapture,
    load: Callable[[], PlateReader],
    inbox: Inbox,
    **options: float,
) -> PlatePipeline:
    pipeline = PlatePipeline(capture, load, inbox.queue.put_nowait, max_fps=20.0, **options)  # type: ignore[arg-type]
    running.append(pipeline)
    pipeline.start()
    return pipeline


def test_plates_in_camera_frames_become_plate_seen_inputs_with_a_jpeg_crop(
    tmp_path: Path, recognizer: PlateRecognizer, pipelines: list[PlatePipeline]
) -> None:
    inbox = Inbox()
    capture = CameraCapture(
        ImageFolderSource(write_scenes(tmp_path / "f", PLATE), fps=10.0), roi=ROI
    )
    run_pipeline(pipelines, capture, lambda: recognizer, inbox)
    inbox.next_matching(fault_is(None))
    seen = inbox.next_matching(lambda item: isinstance(item, PlateSeen))
    assert isinstance(seen, PlateSeen)
    assert seen.text == PLATE
    assert 0.3 <= seen.confidence <= 1.0
    assert len(seen.char_confidences) == len(PLATE)
    crop = cv2.imdecode(np.frombuffer(seen.crop_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert crop is not None, "the crop is a decodable JPEG"
    assert 20 <= crop.shape[1] <= ROI[2]
    assert not [item for item in inbox.seen if isinstance(item, VisionChanged) and item.fault]


def test_an_empty_lane_emits_no_plates(
    tmp_path: Path, recognizer: PlateRecognizer, pipelines: list[PlatePipeline]
) -> None:
    inbox = Inbox()
    capture = CameraCapture(
        ImageFolderSource(write_scenes(tmp_path / "f", None), fps=10.0), roi=ROI
    )
    pipeline = run_pipeline(pipelines, capture, lambda: recognizer, inbox)
    inbox.next_matching(fault_is(None))
    wait_until(lambda: pipeline.stats().frames_read >= 3, 10.0, "three frames read")
    assert not [item for item in inbox.seen if isinstance(item, PlateSeen)]


def corrupted_models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR, models)
    reader_file = models / load_manifest(models)[READER_MODEL].file
    data = bytearray(reader_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    reader_file.write_bytes(bytes(data))
    return models


def test_a_corrupt_model_file_degrades_the_lane_to_rfid_only_without_crashing(
    tmp_path: Path, pipelines: list[PlatePipeline]
) -> None:
    models = corrupted_models(tmp_path)
    with pytest.raises(ModelError):
        PlateRecognizer.load(models, threads=1)
    inbox = Inbox()
    board = StatusBoard({"lane_id": "L1"})
    capture = CameraCapture(ImageFolderSource(write_scenes(tmp_path / "f", PLATE), fps=10.0))
    pipeline = PlatePipeline(
        capture,
        lambda: PlateRecognizer.load(models, threads=1),
        inbox.queue.put_nowait,
        reader_retry_s=0.2,
        board=board,
    )
    pipelines.append(pipeline)
    pipeline.start()
    inbox.next_matching(fault_is(VisionFault.READER_UNAVAILABLE))
    wait_until(lambda: pipeline.stats().reader_loads_failed >= 2, 10.0, "a second load attempt")
    assert "reader_unavailable" in board.active_faults()
    assert not [item for item in inbox.seen if isinstance(item, PlateSeen)]
    assert pipeline.stats().fault is VisionFault.READER_UNAVAILABLE


class SwitchableSource:
    """Frames that the reader refuses (four channels) until switched to good lane scenes."""

    description = "switchable test camera"
    pace_fps = 20.0

    def __init__(self, good: Image) -> None:
        self.good = good
        self.broken = threading.Event()
        self.broken.set()

    def open(self) -> None:
        """Nothing to connect to."""

    def read(self) -> Image:
        if self.broken.is_set():
            return np.zeros((64, 64, 4), np.uint8)
        return self.good

    def close(self) -> None:
        """Nothing to release."""


def test_inference_that_keeps_failing_drops_the_reader_and_reloads_it_later(
    recognizer: PlateRecognizer, pipelines: list[PlatePipeline]
) -> None:
    scene = render_scene(PLATE, "CA", rng=random.Random(1))
    source = SwitchableSource(scene[ROI[1] : ROI[1] + ROI[3], ROI[0] : ROI[0] + ROI[2]])
    inbox = Inbox()
    loads: list[int] = []

    def load() -> PlateReader:
        loads.append(1)
        return recognizer

    pipeline = run_pipeline(pipelines, CameraCapture(source), load, inbox, reader_retry_s=0.2)
    inbox.next_matching(fault_is(VisionFault.READER_UNAVAILABLE))
    assert pipeline.stats().inference_errors >= 3
    source.broken.clear()
    inbox.next_matching(fault_is(None))
    seen = inbox.next_matching(lambda item: isinstance(item, PlateSeen))
    assert isinstance(seen, PlateSeen)
    assert seen.text == PLATE
    assert len(loads) >= 2, "the reader was loaded again after it was dropped"


def test_a_vanishing_camera_is_reported_and_plates_resume_when_it_returns(
    tmp_path: Path, recognizer: PlateRecognizer, pipelines: list[PlatePipeline]
) -> None:
    folder = write_scenes(tmp_path / "f", PLATE)
    inbox = Inbox()
    board = StatusBoard({"lane_id": "L1"})
    capture = CameraCapture(
        ImageFolderSource(folder, fps=10.0),
        roi=ROI,
        stall_timeout_s=0.5,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    pipeline = PlatePipeline(capture, lambda: recognizer, inbox.queue.put_nowait, board=board)
    pipelines.append(pipeline)
    pipeline.start()
    inbox.next_matching(lambda item: isinstance(item, PlateSeen))
    shutil.rmtree(folder)
    inbox.next_matching(fault_is(VisionFault.CAMERA_UNAVAILABLE))
    assert "camera_unavailable" in board.active_faults()
    section = pipeline.status_section()
    assert section["state"] == "reconnecting"
    assert section["plate_fault"] == "camera_unavailable"
    write_scenes(folder, PLATE)
    inbox.next_matching(fault_is(None))
    inbox.next_matching(lambda item: isinstance(item, PlateSeen))
    assert "camera_unavailable" not in board.active_faults()


def test_a_camera_that_never_opens_is_reported_after_the_stall_timeout(
    tmp_path: Path, recognizer: PlateRecognizer, pipelines: list[PlatePipeline]
) -> None:
    inbox = Inbox()
    capture = CameraCapture(
        ImageFolderSource(tmp_path / "no-such-folder", fps=10.0),
        stall_timeout_s=0.5,
        reconnect_min_s=0.05,
    )
    run_pipeline(pipelines, capture, lambda: recognizer, inbox)
    inbox.next_matching(fault_is(VisionFault.CAMERA_UNAVAILABLE))
    assert capture.stats().last_error is not None


def test_the_camera_error_type_carries_the_source_and_reason() -> None:
    error = CaptureError("folder /x", "no images")
    assert (error.source, error.reason, str(error)) == (
        "folder /x",
        "no images",
        "camera folder /x: no images",
    )
