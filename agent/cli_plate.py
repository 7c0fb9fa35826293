"""``lane-agent plate read``: read licence plates in image files, or from the lane camera.

For checking a camera position or a model change by hand; the running agent reads plates from
the camera in its own thread. An image that cannot be read is reported and skipped, the others
are still read, and the exit status says that something failed.

With ``--camera`` the frames come from the configured ``camera.source`` through the same capture
the agent uses, cropped to ``camera.roi`` as the agent crops them; ``--show-roi`` writes a frame
with the region drawn, for the technician aiming the camera.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agent.cli_options import config_option

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.vision.capture import Image
    from agent.vision.reader import PlateRecognizer
    from agent.vision.types import PlateRead

EX_DATAERR = 65
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_CONFIG = 78

ROI_COLOUR = (0, 255, 0)
"""BGR green: the region of interest in ``--show-roi`` snapshots."""
PLATE_COLOUR = (0, 255, 255)
"""BGR yellow: the plate found in it."""
_MIN_ROI_SIDE = 16


@click.group()
def plate() -> None:
    """Licence-plate tools."""


@plate.command("read")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line and image.")
@click.option(
    "--camera",
    is_flag=True,
    help="Read frames from the configured camera.source instead of IMAGE files.",
)
@config_option("Lane config naming the camera, its ROI and the models (with --camera).")
@click.option(
    "--frames",
    type=click.IntRange(1, 10_000),
    default=5,
    show_default=True,
    help="With --camera: how many frames to read.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.1, 600.0),
    default=10.0,
    show_default=True,
    help="With --camera: seconds to wait for each frame before giving up (exit 69).",
)
@click.option(
    "--show-roi",
    "roi_snapshot",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --camera: write the last frame to this JPEG/PNG with camera.roi drawn in green "
    "and the plate found in yellow.",
)
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Directory with manifest.toml and the model files (default: vision.models_dir with "
    "--camera, else the models shipped with the agent).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    default=None,
    help="Inference threads (default: vision.threads with --camera, else 2).",
)
def plate_read(
    images: tuple[Path, ...],
    as_json: bool,
    camera: bool,
    config_path: Path,
    frames: int,
    timeout_s: float,
    roi_snapshot: Path | None,
    models_dir: Path | None,
    threads: int | None,
) -> None:
    """Print the best plate in each IMAGE, or in camera frames with --camera, with its
    confidence and box (x, y, w, h pixels of the whole image or frame).

    Exits 65 if any image could not be read (the others are still reported), 69 if the models
    cannot be loaded or the camera gives no frame, 78 for a bad --config.
    """
    if camera == bool(images):
        raise click.UsageError("give IMAGE files or --camera (not both)")
    if roi_snapshot is not None and not camera:
        raise click.UsageError("--show-roi needs --camera (the ROI is the configured camera's)")
    if camera:
        config = _load_config(config_path)
        if models_dir is None:
            models_dir = config.vision.models_dir
        if threads is None:
            threads = config.vision.threads
        recognizer = _load_recognizer(models_dir, threads)
        sys.exit(_read_camera(config, recognizer, frames, timeout_s, roi_snapshot, as_json))
    recognizer = _load_recognizer(models_dir, threads or 2)
    sys.exit(_read_images(images, recognizer, as_json))


def _load_config(config_path: Path) -> AgentConfig:
    from agent.config import ConfigError, load_config

    try:
        return load_config(config_path)
    except ConfigError as exc:
        for problem in getattr(exc, "problems", [exc]):
            click.echo(f"error: {problem}", err=True)
        sys.exit(EX_CONFIG)


def _load_recognizer(models_dir: Path | None, threads: int) -> PlateRecognizer:
    from agent.vision.models import ModelError
    from agent.vision.reader import PlateRecognizer

    try:
        return PlateRecognizer.load(models_dir, threads=threads)
    except ModelError as exc:
        click.echo(f"error: {exc}", err=True)
        click.echo(
            "hint: reinstall the lane-agent wheel (it carries the models) or pass --models DIR.",
            err=True,
        )
        sys.exit(EX_UNAVAILABLE)


def _read_images(images: tuple[Path, ...], recognizer: PlateRecognizer, as_json: bool) -> int:
    import cv2

    failed = 0
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.is_file() else None
        if image is None:
            failed += 1
            reason = "no such file" if not path.exists() else "not an image OpenCV can decode"
            click.echo(f"error: {path}: {reason}", err=True)
            continue
        reads = recognizer.read(image)
        _report("image", str(path), reads[0] if reads else None, (0, 0), as_json)
    if failed:
        click.echo(f"{failed} of {len(images)} image(s) could not be read.", err=True)
        return EX_DATAERR
    return 0


def _report(
    key: str, name: str | int, best: PlateRead | None, offset: tuple[int, int], as_json: bool
) -> None:
    box = None
    if best is not None:
        x, y, w, h = best.box
        box = [x + offset[0], y + offset[1], w, h]
    if as_json:
        record = {
            key: name,
            "plate": best.text if best else None,
            "confidence": best.confidence if best else None,
            "box": box,
            "candidates": [[text, conf] for text, conf in best.candidates] if best else [],
        }
        click.echo(json.dumps(record))
        return
    label = f"{name}" if key == "image" else f"camera frame {name}"
    if best is None or box is None:
        click.echo(f"{label}: no plate found")
    else:
        x, y, w, h = box
        click.echo(f"{label}: {best.text} confidence {best.confidence:.2f} box {x},{y},{w},{h}")


def roi_crop(
    image: Image, roi: tuple[int, int, int, int] | None
) -> tuple[Image, tuple[int, int]] | None:
    """The part of ``image`` the agent reads for ``camera.roi`` and its offset, as the capture
    crops it; None when the ROI lies outside the frame (the agent then reads the whole frame)."""
    if roi is None:
        return image, (0, 0)
    x, y, w, h = roi
    height, width = image.shape[:2]
    x0, y0 = min(max(x, 0), width), min(max(y, 0), height)
    x1, y1 = min(x + w, width), min(y + h, height)
    if x1 - x0 < _MIN_ROI_SIDE or y1 - y0 < _MIN_ROI_SIDE:
        return None
    return image[y0:y1, x0:x1], (x0, y0)


def _read_camera(
    config: AgentConfig,
    recognizer: PlateRecognizer,
    frames: int,
    timeout_s: float,
    roi_snapshot: Path | None,
    as_json: bool,
) -> int:
    from agent.vision.capture import CameraCapture, open_source

    camera = config.camera
    if not camera.enabled:
        click.echo(
            "note: camera.enabled is false: the agent reads no plates until it is set", err=True
        )
    # The whole frame is captured (roi=None) so the snapshot can show the ROI in its frame; the
    # crop below is the one the agent's capture makes.
    capture = CameraCapture(
        open_source(camera.source, folder_fps=camera.folder_fps),
        roi=None,
        stall_timeout_s=camera.stall_timeout_s,
        reconnect_min_s=camera.reconnect_min_s,
        reconnect_max_s=camera.reconnect_max_s,
    )
    description = capture.source.description
    capture.start()
    try:
        last = 0
        shown: tuple[Image, PlateRead | None, tuple[int, int]] | None = None
        warned = False
        for _ in range(frames):
            frame = capture.latest(newer_than=last, timeout_s=timeout_s)
            if frame is None:
                stats = capture.stats()
                why = stats.last_error or f"state {stats.state.value}"
                click.echo(
                    f"error: camera {description}: no frame within {timeout_s:g} s ({why});"
                    " check camera.source and that the camera is powered and reachable",
                    err=True,
                )
                return EX_UNAVAILABLE
            last = frame.number
            cropped = roi_crop(frame.image, camera.roi)
            if cropped is None:
                if not warned:
                    height, width = frame.image.shape[:2]
                    click.echo(
                        f"warning: camera.roi {list(camera.roi or ())} lies outside the "
                        f"{width}x{height} frame: the agent reads the whole frame",
                        err=True,
                    )
                    warned = True
                cropped = frame.image, (0, 0)
            region, offset = cropped
            reads = recognizer.read(region)
            best = reads[0] if reads else None
            _report("frame", frame.number, best, offset, as_json)
            shown = (frame.image, best, offset)
    finally:
        capture.stop(timeout_s=2.0)
    if roi_snapshot is not None and shown is not None:
        return _write_roi_snapshot(roi_snapshot, config, *shown)
    return 0


def _write_roi_snapshot(
    path: Path,
    config: AgentConfig,
    image: Image,
    best: PlateRead | None,
    offset: tuple[int, int],
) -> int:
    import cv2

    drawn = image.copy()
    roi = config.camera.roi
    if roi is None:
        note = "no camera.roi: the whole frame is read"
    else:
        x, y, w, h = roi
        cv2.rectangle(drawn, (x, y), (x + w - 1, y + h - 1), ROI_COLOUR, 2)
        note = f"camera.roi {x},{y} {w}x{h}"
    if best is not None:
        bx, by, bw, bh = best.box
        origin = (bx + offset[0], by + offset[1])
        cv2.rectangle(drawn, origin, (origin[0] + bw - 1, origin[1] + bh - 1), PLATE_COLOUR, 2)
    cv2.putText(drawn, note, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, ROI_COLOUR, 1, cv2.LINE_AA)
    try:
        written = cv2.imwrite(os.fspath(path), drawn)
    except cv2.error:
        written = False
    if not written:
        click.echo(
            f"error: {path}: cannot write the snapshot (use a .jpg or .png name in a folder"
            " that exists)",
            err=True,
        )
        return EX_CANTCREAT
    click.echo(f"{path}: frame with {note}", err=True)
    return 0
