"""The synthetic plates the reader is trained and evaluated on, and the fixed dev-photo split."""

from __future__ import annotations

import csv
import random
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from agent.lane.plate_formats import FAMILIES, JURISDICTIONS, compiled_formats
from agent.lane.plates import plate_formats
from training import plate_render
from training.lane_scenes import lane_vehicle
from training.plate_render import FontError, check_fonts, line_sample, sample_plate

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO.parent / "shared" / "datasets" / "plates"


def test_a_seed_names_one_data_set() -> None:
    """Training is reproducible only if a seed always draws the same pixels and labels."""
    first = [line_sample(random.Random("seed:7")) for _ in range(3)]
    again = [line_sample(random.Random("seed:7")) for _ in range(3)]
    other = line_sample(random.Random("seed:8"))
    for a, b in zip(first, again, strict=True):
        assert a.text == b.text
        assert np.array_equal(a.image, b.image)
    assert not np.array_equal(first[0].image, other.image) or first[0].text != other.text


def test_line_crops_have_the_readers_height_and_a_line_like_width() -> None:
    rng = random.Random("shape")
    for _ in range(6):
        sample = line_sample(rng)
        height, width, channels = sample.image.shape
        assert (height, channels) == (48, 3)
        assert 16 <= width <= 480
        assert sample.image.dtype == np.uint8


def test_labels_are_the_registered_text_without_separators_and_fit_the_jurisdiction() -> None:
    """Separators and emblems are printed, never labelled; a standard serial fits its own
    jurisdiction's format (vanity plates, a small share of US and Canadian ones, fit none)."""
    patterns = {}
    for code, pattern in compiled_formats():
        patterns.setdefault(code, []).append(pattern)
    rng = random.Random("labels")
    fitting = 0
    for _ in range(200):
        spec = sample_plate(rng)
        assert re.fullmatch(r"[A-Z0-9]{2,8}", spec.text), spec
        assert spec.text == re.sub(r"[-  ·]", "", spec.printed)
        if any(p.fullmatch(spec.text) for p in patterns[spec.code]):
            fitting += 1
        else:
            assert spec.family in ("US", "CA"), f"{spec} fits no format of its jurisdiction"
    assert fitting >= 160


def test_every_jurisdiction_of_a_family_is_drawn() -> None:
    """The Mexican border states and the federal plates all appear in the MX data."""
    rng = random.Random("coverage")
    drawn = {sample_plate(rng, "MX").code for _ in range(300)}
    assert drawn == {entry.code for entry in JURISDICTIONS if entry.family == "MX"}


def test_a_font_file_that_is_not_the_one_named_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another build of a font draws other pixels and would train another model."""
    fake = tmp_path / "font.ttf"
    fake.write_bytes(b"not the font")
    table = tmp_path / "fonts.toml"
    table.write_text(
        f'[fonts.odd]\npath = "{fake}"\nsha256 = "{"0" * 64}"\npackage = "x"\nlicence = "x"\n'
    )
    for cached in (plate_render._font_table, plate_render._font_bytes, plate_render._font):
        cached.cache_clear()
    monkeypatch.setattr(plate_render, "FONTS_FILE", table)
    try:
        with pytest.raises(FontError, match="sha256"):
            check_fonts()
    finally:
        monkeypatch.undo()
        for cached in (plate_render._font_table, plate_render._font_bytes, plate_render._font):
            cached.cache_clear()
    assert "osp_din" in check_fonts()


def test_a_lane_vehicle_is_the_same_frames_for_the_same_seed_and_index() -> None:
    vehicle = lane_vehicle(11, "EU", 3, frames=2)
    again = lane_vehicle(11, "EU", 3, frames=2)
    assert vehicle.spec == again.spec
    assert vehicle.spec.family == "EU"
    assert len(vehicle.frames) == 2
    assert vehicle.frames[0].shape == (720, 1280, 3)
    assert all(np.array_equal(a, b) for a, b in zip(vehicle.frames, again.frames, strict=True))


def test_every_family_of_the_format_table_has_lane_vehicles_but_training_skips_brazil() -> None:
    """The evaluation lane set draws every family, Brazil's (SA) too, in a format of its
    table entry; the training mix leaves SA out, so it stays a family never trained on."""
    for family in FAMILIES:
        vehicle = lane_vehicle(7, family, 0, frames=1)
        assert vehicle.spec.family == family
        assert vehicle.frames[0].shape == (720, 1280, 3)
    brazil = lane_vehicle(7, "SA", 1, frames=1).spec
    assert "SA-BR" in plate_formats(brazil.text)
    assert "SA" not in plate_render.FAMILY_WEIGHTS


def test_the_dev_split_covers_every_labelled_photo_once_in_two_even_halves() -> None:
    """Rules are chosen on the tune half only; every photo is in exactly one half."""
    split = tomllib.loads((REPO / "training" / "plate_eval_split.toml").read_text())
    for set_name in ("us", "eu"):
        with (DATASETS / set_name / "labels.csv").open(newline="") as handle:
            files = {row["file"] for row in csv.DictReader(handle)}
        tune, report = set(split[set_name]["tune"]), set(split[set_name]["report"])
        assert not tune & report
        assert tune | report == files
        assert abs(len(tune) - len(report)) <= 1
