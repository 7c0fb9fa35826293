"""``lane-agent plate read --camera``: frames from the configured camera source, cropped to the
configured ROI, read with the real models; ``--show-roi`` writes the frame with the ROI drawn.

The camera is a folder source (one of the sources a lane config may name) holding frames of the
synthetic lane camera the demo uses."""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.cli_plate import PLATE_COLOUR, ROI_COLOUR
from agent.dev.demo import DEMO_ROI
from agent.dev.synthetic_camera import FRAME_SIZE, render_scene

PLATE = "7ABC123"


def write_camera_folder(folder: Path, count: int = 3) -> Path:
    folder.mkdir()
    rng = random.Random(5)
    for number in range(count):
        frame = render_scene(PLATE, "CA", rng=rng, approach=1.0)
        assert cv2.imwrite(str(folder / f"frame-{number:03d}.png"), frame)
    return folder


def write_config(
    path: Path, source: Path | str, roi: tuple[int, int, int, int] | None = DEMO_ROI
) -> Path:
    roi_line = f"roi = {list(roi)}\n" if roi is not None else ""
    path.write_text(
        '[lane]\nport_id = "SYS"\nlane_id = "L1"\n'
        '[reader]\ntype = "lane_controller"\ndevice = "/dev/null"\n'
        "[mqtt]\nport = 1883\n"
        f'[camera]\nenabled = true\nsource = "{source}"\nfolder_fps = 30.0\n'
        "reconnect_min_s = 0.1\nreconnect_max_s = 1.0\n" + roi_line
    )
    return path


def test_camera_frames_are_read_inside_the_roi_with_boxes_in_frame_coordinates(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "lane.toml", write_camera_folder(tmp_path / "camera"))
    result = CliRunner().invoke(
        main, ["plate", "read", "--camera", "--config", str(config), "--frames", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    reads = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reads) == 3
    assert [set(r) for r in reads] == [{"frame", "plate", "confidence", "box", "candidates"}] * 3
    numbers = [r["frame"] for r in reads]
    assert numbers == sorted(set(numbers)), "each line is a newer frame"
    assert sum(r["plate"] == PLATE for r in reads) >= 2, reads
    x, y, w, h = DEMO_ROI
    for read in reads:
        if read["plate"] is None:
            continue
        bx, by, bw, bh = read["box"]
        assert x <= bx, "the box is in frame pixels, inside the ROI"
        assert bx + bw <= x + w
        assert y <= by
        assert by + bh <= y + h


def test_a_plate_outside_the_roi_is_not_read(tmp_path: Path) -> None:
    """The agent reads only the region of interest: a ROI away from the plate finds nothing."""
    config = write_config(
        tmp_path / "lane.toml", write_camera_folder(tmp_path / "camera"), roi=(0, 0, 120, 80)
    )
    result = CliRunner().invoke(
        main, ["plate", "read", "--camera", "--config", str(config), "--frames", "2"]
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert all(line.startswith("camera frame ") for line in lines)
    assert all(line.endswith(": no plate found") for line in lines), lines


def test_show_roi_writes_the_frame_with_the_roi_and_the_plate_drawn(tmp_path: Path) -> None:
    config = write_config(tmp_path / "lane.toml", write_camera_folder(tmp_path / "camera"))
    snapshot = tmp_path / "aim.jpg"
    result = CliRunner().invoke(
        main,
        [
            "plate", "read", "--camera", "--config", str(config),
            "--frames", "2", "--show-roi", str(snapshot),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1] == f"{snapshot}: frame with camera.roi 144,240 352x192"
    image = cv2.imread(str(snapshot))
    assert image is not None
    width, height = FRAME_SIZE
    assert image.shape == (height, width, 3), "the whole frame, not the crop"
    x, y, w, h = DEMO_ROI

    def near(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
        return bool(np.abs(pixel.astype(int) - np.array(colour)).max() < 60)

    # JPEG blurs colours a little: sample the middle of each side of the 2-pixel ROI outline.
    for px, py in (
        (x, y + h // 2),
        (x + w - 1, y + h // 2),
        (x + w // 2, y),
        (x + w // 2, y + h - 1),
    ):
        assert near(image[py, px], ROI_COLOUR), (px, py, image[py, px])
    inside = image[y + 4 : y + h - 4, x + 4 : x + w - 4]
    yellow = np.all(np.abs(inside.astype(int) - np.array(PLATE_COLOUR)) < 60, axis=2)
    assert yellow.sum() > 50, "the plate found is outlined inside the ROI"


def test_without_a_roi_the_snapshot_says_the_whole_frame_is_read(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "lane.toml", write_camera_folder(tmp_path / "camera", 1), roi=None
    )
    snapshot = tmp_path / "aim.png"
    result = CliRunner().invoke(
        main,
        ["plate", "read", "--camera", "--config", str(config), "--frames", "1",
         "--show-roi", str(snapshot)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{snapshot}: frame with no camera.roi: the whole frame is read" in result.stderr
    assert cv2.imread(str(snapshot)) is not None


def test_a_camera_that_gives_no_frame_exits_69_naming_the_source(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-camera.mp4"
    config = write_config(tmp_path / "lane.toml", missing)
    result = CliRunner().invoke(
        main, ["plate", "read", "--camera", "--config", str(config), "--timeout", "0.5"]
    )
    assert result.exit_code == 69
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(
        f"error: camera file {missing}: no frame within 0.5 s (no such file);"
    )


def test_a_bad_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "lane.toml"
    config.write_text("[camera]\nroi = [1, 2]\n")
    result = CliRunner().invoke(main, ["plate", "read", "--camera", "--config", str(config)])
    assert result.exit_code == 78
    assert result.stderr.startswith("error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "give IMAGE files or --camera (not both)", id="neither"),
        pytest.param(["x.png", "--camera"], "give IMAGE files or --camera (not both)", id="both"),
        pytest.param(["x.png", "--show-roi", "o.jpg"], "--show-roi needs --camera", id="roi"),
    ],
)
def test_images_and_camera_are_exclusive(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["plate", "read", *args])
    assert result.exit_code == 2
    assert message in result.stderr
