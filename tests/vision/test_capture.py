"""Camera capture: latest frame only, region of interest, corrupt frames, vanishing and stalling
sources, reconnection, and the source a config string names."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.vision.capture import (
    CameraCapture,
    CaptureError,
    CaptureState,
    Image,
    ImageFolderSource,
    OpenCvSource,
    open_source,
    redact_url,
)
from tests.support.broker import wait_until


def numbered_frame(number: int, size: tuple[int, int] = (160, 120)) -> Image:
    """A frame whose top-left pixel value names it, so a test can tell frames apart."""
    width, height = size
    image = np.full((height, width, 3), 40, dtype=np.uint8)
    image[:8, :8] = number % 256
    cv2.putText(image, str(number), (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
    return image


def write_folder(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        cv2.imwrite(str(folder / f"frame-{number:04d}.png"), numbered_frame(number))
    return folder


@pytest.fixture
def captures() -> Iterator[list[CameraCapture]]:
    started: list[CameraCapture] = []
    yield started
    for capture in started:
        capture.stop(timeout_s=2.0)


def start(captures: list[CameraCapture], capture: CameraCapture) -> CameraCapture:
    captures.append(capture)
    capture.start()
    return capture


def test_folder_source_streams_frames_in_order_and_loops(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    source = ImageFolderSource(write_folder(tmp_path / "frames", 3), fps=60.0)
    capture = start(captures, CameraCapture(source, reconnect_min_s=0.05))
    seen: list[int] = []
    last = 0
    while len(seen) < 7:
        frame = capture.latest(newer_than=last, timeout_s=2.0)
        assert frame is not None, "the folder stopped delivering"
        last = frame.number
        seen.append(int(frame.image[0, 0, 0]))
    assert set(seen) == {0, 1, 2}, "every image is played and the folder starts over"
    stats = capture.stats()
    assert stats.state is CaptureState.STREAMING
    assert stats.reconnects == 0, "looping a folder is not a reconnection"
    assert capture.healthy()


def test_a_slow_consumer_gets_the_newest_frame_not_a_backlog(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    source = ImageFolderSource(write_folder(tmp_path / "frames", 5), fps=60.0)
    capture = start(captures, CameraCapture(source))
    first = capture.latest(newer_than=0, timeout_s=2.0)
    assert first is not None
    wait_until(lambda: capture.stats().frames >= first.number + 10, 5.0, "ten more frames")
    newest = capture.latest(newer_than=first.number, timeout_s=2.0)
    assert newest is not None
    assert newest.number >= first.number + 10, "frames the consumer missed are dropped"


def test_region_of_interest_crops_every_frame_and_reports_its_offset(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    source = ImageFolderSource(write_folder(tmp_path / "frames", 2), fps=30.0)
    capture = start(captures, CameraCapture(source, roi=(40, 30, 64, 48)))
    frame = capture.latest(newer_than=0, timeout_s=2.0)
    assert frame is not None
    assert frame.image.shape == (48, 64, 3)
    assert frame.offset == (40, 30)


def test_a_region_of_interest_outside_the_frame_falls_back_to_the_whole_frame(
    tmp_path: Path, captures: list[CameraCapture], caplog: pytest.LogCaptureFixture
) -> None:
    source = ImageFolderSource(write_folder(tmp_path / "frames", 2), fps=30.0)
    capture = start(captures, CameraCapture(source, roi=(1000, 1000, 64, 48)))
    frame = capture.latest(newer_than=0, timeout_s=2.0)
    assert frame is not None
    assert frame.image.shape == (120, 160, 3)
    assert "camera.roi (1000, 1000, 64, 48) lies outside the 160x120 frame" in caplog.text


def test_undecodable_images_are_counted_and_skipped(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    folder = write_folder(tmp_path / "frames", 2)
    (folder / "frame-0000b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (folder / "frame-0001b.jpg").write_bytes(b"")
    capture = start(captures, CameraCapture(ImageFolderSource(folder, fps=60.0)))
    wait_until(lambda: capture.stats().corrupt_frames >= 4, 5.0, "two loops of corrupt frames")
    stats = capture.stats()
    assert stats.frames >= 2
    assert stats.state is CaptureState.STREAMING
    assert stats.reconnects == 0


def test_a_run_of_corrupt_frames_reopens_the_source(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for number in range(30):
        (folder / f"bad-{number:02d}.jpg").write_bytes(b"garbage")
    capture = start(
        captures, CameraCapture(ImageFolderSource(folder, fps=200.0), reconnect_min_s=0.05)
    )
    wait_until(lambda: capture.stats().reconnects >= 1, 5.0, "a reopen")
    stats = capture.stats()
    assert stats.last_error == "25 corrupt frames in a row"
    assert not capture.healthy()


def test_a_vanished_source_is_reported_and_reconnected_with_back_off(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    folder = write_folder(tmp_path / "frames", 3)
    capture = start(
        captures,
        CameraCapture(
            ImageFolderSource(folder, fps=30.0),
            stall_timeout_s=0.5,
            reconnect_min_s=0.05,
            reconnect_max_s=0.2,
        ),
    )
    wait_until(capture.healthy, 5.0, "streaming")
    shutil.rmtree(folder)
    wait_until(lambda: not capture.healthy(), 5.0, "the camera to count as unavailable")
    wait_until(lambda: capture.stats().reconnects >= 2, 5.0, "reconnection attempts")
    assert capture.stats().state is CaptureState.RECONNECTING
    write_folder(folder, 3)
    wait_until(capture.healthy, 5.0, "streaming again")
    assert capture.stats().state is CaptureState.STREAMING


class StallingSource:
    """A camera that delivers until told to hang (a frozen RTSP server), then resumes."""

    description = "stalling test camera"
    pace_fps = 50.0

    def __init__(self) -> None:
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = threading.Event()

    def open(self) -> None:
        self.closed.clear()

    def read(self) -> Image:
        if not self.flowing.wait(timeout=5.0):
            raise CaptureError(self.description, "read timed out")
        return numbered_frame(1)

    def close(self) -> None:
        self.closed.set()


def test_a_stalled_source_is_unhealthy_within_the_stall_timeout_and_recovers(
    captures: list[CameraCapture],
) -> None:
    source = StallingSource()
    capture = start(captures, CameraCapture(source, stall_timeout_s=0.3))
    wait_until(capture.healthy, 5.0, "streaming")
    source.flowing.clear()
    wait_until(lambda: not capture.healthy(), 5.0, "the stall to be noticed")
    age = capture.stats().last_frame_age_s
    assert age is not None
    assert age > 0.3
    source.flowing.set()
    wait_until(capture.healthy, 5.0, "frames again")


def test_video_file_source_plays_at_its_frame_rate_and_loops(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    path = tmp_path / "lane.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 50.0, (160, 120))
    assert writer.isOpened()
    for number in range(5):
        writer.write(numbered_frame(number * 50))
    writer.release()
    source = open_source(str(path))
    assert isinstance(source, OpenCvSource)
    capture = start(captures, CameraCapture(source))
    wait_until(lambda: capture.stats().frames >= 12, 5.0, "more frames than the file holds")
    assert source.pace_fps == pytest.approx(50.0)
    assert capture.stats().reconnects == 0


def test_a_missing_video_file_is_a_capture_error_naming_it(tmp_path: Path) -> None:
    source = open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(CaptureError, match=r"missing\.mp4: no such file"):
        source.open()


@pytest.mark.parametrize(
    ("spec", "description"),
    [
        ("rtsp://cam.lane3:554/stream1", "stream rtsp://cam.lane3:554/stream1"),
        ("https://cam/mjpeg", "stream https://cam/mjpeg"),
        ("/dev/video2", "device /dev/video2"),
        ("0", "device 0"),
        ("/var/lib/lane/recording.mp4", "file /var/lib/lane/recording.mp4"),
    ],
)
def test_config_source_strings_name_the_right_kind_of_source(spec: str, description: str) -> None:
    assert open_source(spec).description == description


def test_a_folder_path_is_an_image_folder_source(tmp_path: Path) -> None:
    assert isinstance(open_source(str(tmp_path), folder_fps=2.0), ImageFolderSource)


def test_stream_passwords_never_reach_logs_or_status() -> None:
    url = "rtsp://admin:s3cret@10.0.0.5:554/h264"
    assert redact_url(url) == "rtsp://admin:***@10.0.0.5:554/h264"
    assert "s3cret" not in open_source(url).description


def test_stop_ends_the_grabber_and_reports_stopped(
    tmp_path: Path, captures: list[CameraCapture]
) -> None:
    capture = CameraCapture(ImageFolderSource(write_folder(tmp_path / "f", 2), fps=30.0))
    capture.start()
    assert capture.latest(newer_than=0, timeout_s=2.0) is not None
    began = time.monotonic()
    capture.stop(timeout_s=2.0)
    assert capture.stats().state is CaptureState.STOPPED
    assert capture.latest(newer_than=0, timeout_s=0.5) is None, "no frames after stop"
    assert time.monotonic() - began < 5.0
