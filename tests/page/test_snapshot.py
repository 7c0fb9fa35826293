"""The camera snapshot the page shows: the newest whole frame, the region of interest drawn."""

from __future__ import annotations

import time

import cv2
import numpy as np

from agent.vision.capture import CameraCapture, Image
from agent.vision.pipeline import ROI_COLOUR_BGR, PlatePipeline

WIDTH, HEIGHT = 320, 240
ROI = (40, 60, 200, 100)


class GreyFrames:
    """A camera that shows a flat grey picture at 50 fps."""

    description = "grey test frames"
    pace_fps = 50.0

    def open(self) -> None:
        pass

    def read(self) -> Image:
        return np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)

    def close(self) -> None:
        pass


def _pipeline(roi: tuple[int, int, int, int] | None) -> PlatePipeline:
    capture = CameraCapture(GreyFrames(), roi=roi)

    def no_reader() -> None:
        raise AssertionError("the snapshot needs no plate reader")

    return PlatePipeline(capture, no_reader, lambda _item: None)  # type: ignore[arg-type]


def _snapshot(pipeline: PlatePipeline) -> Image:
    pipeline.capture.start()
    try:
        deadline = time.monotonic() + 5
        jpeg = pipeline.snapshot_jpeg()
        while jpeg is None and time.monotonic() < deadline:
            time.sleep(0.02)
            jpeg = pipeline.snapshot_jpeg()
    finally:
        pipeline.capture.stop()
    assert jpeg is not None, "no snapshot from a streaming camera"
    assert jpeg[:2] == b"\xff\xd8", "a JPEG"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def _is_roi_colour(pixel: Image) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(ROI_COLOUR_BGR)) < 40))


def test_the_snapshot_is_the_whole_frame_with_the_region_of_interest_drawn() -> None:
    image = _snapshot(_pipeline(ROI))
    assert image.shape[:2] == (HEIGHT, WIDTH), "the whole frame, not the crop"
    x, y, w, h = ROI
    for px, py in ((x + 1, y + h // 2), (x + w - 2, y + h // 2), (x + w // 2, y + 1)):
        assert _is_roi_colour(image[py, px]), f"the ROI's edge at {px},{py}"
    assert not _is_roi_colour(image[y + h // 2, x + w // 2]), "inside the ROI is the picture"
    assert not _is_roi_colour(image[10, 10]), "outside the ROI is the picture"
    assert abs(int(image[10, 10][0]) - 128) < 10


def test_without_a_frame_there_is_no_snapshot() -> None:
    assert _pipeline(ROI).snapshot_jpeg() is None


def test_without_a_region_the_whole_frame_is_outlined() -> None:
    image = _snapshot(_pipeline(None))
    assert _is_roi_colour(image[HEIGHT // 2, 1])
    assert not _is_roi_colour(image[HEIGHT // 2, WIDTH // 2])
