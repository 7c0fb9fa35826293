"""``lane-agent plate read``: output per image, JSON shape, bad images reported and skipped."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
from click.testing import CliRunner

from agent.cli import main
from tests.vision.test_reader import render_plate_scene


def _write_plate(tmp_path: Path, text: str, name: str) -> tuple[Path, tuple[int, int, int, int]]:
    image, box = render_plate_scene(text)
    path = tmp_path / name
    assert cv2.imwrite(str(path), image)
    return path, box


def test_json_output_has_one_object_per_image_with_the_documented_keys(tmp_path: Path) -> None:
    """--json prints one line per image: image (as given), plate, confidence, box, candidates."""
    first, (px, py, pw, ph) = _write_plate(tmp_path, "ABC1234", "one.png")
    empty = tmp_path / "empty.png"
    cv2.imwrite(str(empty), render_plate_scene("X")[0][:100, :100])
    result = CliRunner().invoke(main, ["plate", "read", "--json", str(first), str(empty)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [set(r) for r in records] == [{"image", "plate", "confidence", "box", "candidates"}] * 2
    read, nothing = records
    assert read["image"] == str(first)
    assert read["plate"] == "ABC1234"
    assert 0.0 < read["confidence"] <= 1.0
    x, y, w, h = read["box"]
    assert all(isinstance(v, int) for v in read["box"])
    assert px <= x + w / 2 <= px + pw
    assert py <= y + h / 2 <= py + ph
    assert read["candidates"][0] == ["ABC1234", read["confidence"]]
    assert nothing == {
        "image": str(empty),
        "plate": None,
        "confidence": None,
        "box": None,
        "candidates": [],
    }


def test_text_output_names_plate_confidence_and_box(tmp_path: Path) -> None:
    """Without --json each image gets one human line: path, plate, confidence, box."""
    path, _ = _write_plate(tmp_path, "GT679A", "plate.jpg")
    result = CliRunner().invoke(main, ["plate", "read", str(path)])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith(f"{path}: GT679A confidence ")
    assert " box " in line


def test_unreadable_images_are_reported_others_still_read_and_exit_is_65(tmp_path: Path) -> None:
    """A missing file and a non-image each get an error line; the good image is still read;
    the exit status is 65 (EX_DATAERR) at the end."""
    good, _ = _write_plate(tmp_path, "MN83RT", "good.png")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not a picture")
    missing = tmp_path / "missing.png"
    result = CliRunner().invoke(
        main, ["plate", "read", "--json", str(missing), str(not_image), str(good)]
    )
    assert result.exit_code == 65
    assert [json.loads(line)["plate"] for line in result.stdout.splitlines()] == ["MN83RT"]
    assert result.stderr.splitlines() == [
        f"error: {missing}: no such file",
        f"error: {not_image}: not an image OpenCV can decode",
        "2 of 3 image(s) could not be read.",
    ]


def test_bad_model_directory_exits_69_with_a_hint(tmp_path: Path) -> None:
    """Models that cannot be loaded stop the command before any image, with the fix."""
    path, _ = _write_plate(tmp_path, "MN83RT", "good.png")
    result = CliRunner().invoke(main, ["plate", "read", "--models", str(tmp_path), str(path)])
    assert result.exit_code == 69
    assert "manifest not found" in result.stderr
    assert "hint:" in result.stderr
