"""The [camera] and [vision] config sections: defaults, mistakes named precisely, and what the
lane core gets from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.lane.plates import PlateCheck

MINIMAL = '[lane]\nport_id = "SYS-0250"\nlane_id = "L03"\n'
EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "lane.example.toml"


def load(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lane.toml"
    path.write_text(MINIMAL + text)
    return path


def test_camera_is_off_by_default_and_in_the_example() -> None:
    """Existing lane configs keep deciding on cards alone."""
    config = load_config(EXAMPLE)
    assert config.camera.enabled is False
    assert config.camera.roi is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[camera]\nroi = [0, 0, 8, 100]\n",
            ":4: camera: roi [0, 0, 8, 100] must be [x, y, width, height] "
            "with x, y 0-16384 and width, height 16-16384 pixels",
        ),
        (
            "[camera]\nreconnect_min_s = 40.0\nreconnect_max_s = 20.0\n",
            ":4: camera: reconnect_min_s (40.0) must not exceed reconnect_max_s (20.0)",
        ),
        (
            "[vision]\nthreads = 4\n",
            ":5: vision.threads = 4: input should be less than or equal to 2",
        ),
        (
            "[camera]\nenable = true\n",
            ":5: camera.enable = true: unknown key; did you mean 'enabled'? allowed here: "
            "enabled, folder_fps, reconnect_max_s, reconnect_min_s, roi, source, stall_timeout_s",
        ),
    ],
)
def test_camera_and_vision_mistakes_name_the_key_and_the_rule(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = load(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p) for p in caught.value.problems] == [f"{path}{expected}"]


def test_a_relative_models_dir_is_resolved_next_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(load(tmp_path, '[vision]\nmodels_dir = "models"\n'))
    assert config.vision.models_dir == tmp_path.resolve() / "models"


def test_vision_settings_reach_the_lane_core_only_in_a_lane_with_a_camera() -> None:
    config = load_config(EXAMPLE)
    assert config.lane_policy().plate_check is None, "without a camera the policy has no plates"
    with_camera = config.model_copy(
        update={"camera": config.camera.model_copy(update={"enabled": True})}
    )
    correlation, policy = with_camera.correlation_settings(), with_camera.lane_policy()
    assert correlation.plate_preroll_s == config.vision.plate_preroll_s
    assert policy.plate_check == PlateCheck(
        top_n=config.vision.candidates, min_confidence=config.vision.min_plate_confidence
    )


def test_the_lane_policy_is_assembled_from_the_lane_the_camera_and_the_cache(
    tmp_path: Path,
) -> None:
    config = load_config(load(tmp_path, "[cache]\nmax_cache_age_s = 7200\n"))
    policy = config.lane_policy()
    assert policy.max_cache_age_s == 7200
    assert policy.allowed_programs == frozenset(config.lane.allowed_programs)
    no_limit = load_config(load(tmp_path, "[cache]\nmax_cache_age_s = 0\n"))
    assert no_limit.lane_policy().max_cache_age_s is None
