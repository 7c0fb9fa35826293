"""The camera check: grab frames the way the lane does, save one with the ROI drawn on it."""

from __future__ import annotations

import time
from pathlib import Path

from agent.config import CameraConfig
from agent.doctor.report import Check, fail, ok, skip, warn

NAME = "camera"
_ROI_COLOUR = (0, 255, 0)  # BGR green


def check_camera(config: CameraConfig, timeout_s: float, snapshot: Path | None) -> Check:
    """Open ``camera.source``, wait for frames, report the frame rate and the newest frame's
    age, and write ``snapshot`` (the full frame, the ROI as a green rectangle)."""
    if not config.enabled:
        return skip(NAME, "camera.enabled = false: this lane decides on cards alone")
    # Only with a camera: OpenCV is heavy to import. agent.vision first: it quiets OpenCV's own
    # log lines, which are read when cv2 loads.
    from agent.vision.capture import CameraCapture, open_source  # noqa: I001

    import cv2

    source = open_source(config.source, folder_fps=config.folder_fps)
    capture = CameraCapture(
        source,
        roi=None,  # the whole frame, so the snapshot shows where the ROI lies in it
        stall_timeout_s=config.stall_timeout_s,
        reconnect_min_s=config.reconnect_min_s,
        reconnect_max_s=config.reconnect_max_s,
    )
    capture.start()
    try:
        first = capture.latest(newer_than=0, timeout_s=timeout_s)
        newest = first
        if first is not None:
            newest = capture.latest(newer_than=first.number, timeout_s=min(2.0, timeout_s)) or first
        stats = capture.stats()
    finally:
        capture.stop(timeout_s=2.0)
    if newest is None:
        reason = f": {stats.last_error}" if stats.last_error else ""
        return fail(
            NAME,
            f"{source.description}: no frame within {timeout_s:g} s{reason}",
            "check the camera's power and network (ping it, open the stream in a player), the "
            "camera.source URL and its credentials",
        )
    image = newest.image
    height, width = image.shape[:2]
    age_s = max(0.0, time.time() - newest.captured_at)
    detail = (
        f"{source.description}: {width}x{height}, {stats.fps:.1f} frames/s, newest frame "
        f"{age_s * 1000:.0f} ms old"
    )
    roi_problem = _roi_problem(config.roi, width, height)
    if snapshot is not None:
        marked = image.copy()
        if config.roi is not None:
            x, y, w, h = config.roi
            cv2.rectangle(marked, (x, y), (x + w - 1, y + h - 1), _ROI_COLOUR, 3)
        try:
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            written = cv2.imwrite(str(snapshot), marked)
        except (OSError, cv2.error):
            written = False
        detail += f"; snapshot {snapshot}" if written else f"; could not write {snapshot}"
    if roi_problem:
        return warn(
            NAME,
            f"{detail}; {roi_problem}",
            "correct camera.roi to [x, y, width, "
            "height] inside the frame, around where plates appear (see the snapshot)",
        )
    return ok(NAME, detail)


def _roi_problem(roi: tuple[int, int, int, int] | None, width: int, height: int) -> str:
    if roi is None:
        return ""
    x, y, w, h = roi
    if x + w <= width and y + h <= height:
        return ""
    return f"roi {list(roi)} reaches past the {width}x{height} frame"
