"""The built wheel is a release a lane can install: it carries the models, scenarios, example
config, schemas, systemd files and docs, and installed alone into a clean venv (no source tree
on the path, no network) it reads a plate and runs the demo with plates read.

The wheel is built from a copy of the source tree with the dev venv's setuptools
(``--no-build-isolation``, nothing downloaded). The clean venv has no pip and no packages of its
own: pip installs the wheel into it with ``--no-deps --no-index``, and a ``.pth`` line lends it
the dev venv's site-packages for the third-party dependencies only (a ``.pth`` path line does
not run the ``.pth`` files it points at, so the dev venv's editable ``agent`` stays out).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import cv2
import pytest

from tests.support.broker import find_mosquitto
from tests.vision.test_reader import render_plate_scene

ROOT = Path(__file__).resolve().parents[2]
SOURCE_TREE = (
    "pyproject.toml",
    "README.md",
    "agent",
    "firmware_bridge",
    "central",
    "llrp",
    "models",
    "config",
    "systemd",
    "docs",
)
"""What the build reads: the packages, and the release folders agent/share/ links to."""
SHARE = "agent/share"


def _files_under(folder: Path) -> set[str]:
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would put the source tree on the path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in SOURCE_TREE:
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, source / name)
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", str(source), "--wheel-dir", str(out)),
            *("--no-deps", "--no-index", "--no-build-isolation", "--verbose"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=source,
        env=_clean_env(),
    )
    assert build.returncode == 0, build.stdout + build.stderr
    # --verbose shows the backend's output: a deprecated setting (project.license as a table,
    # say) is a Python warning there, e.g. "BuildBackendWarning: ...".
    warnings = re.findall(r".*\w+Warning: .*", build.stdout + build.stderr)
    assert warnings == []
    (built,) = out.glob("lane_agent-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv holding only the wheel, borrowing the dev venv's third-party packages."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", str(wheel)),
            *("--no-deps", "--no-index", "--quiet"),
        ],
        check=True,
        timeout=120,
        env=_clean_env(),
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    lent = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site / "zz-dev-venv-dependencies.pth").write_text("".join(f"{path}\n" for path in lent))
    return venv


def _run_installed(
    venv: Path, *args: str, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "lane-agent"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=_clean_env(),
    )


def test_the_wheel_carries_models_scenarios_config_schemas_systemd_files_and_docs(
    wheel: Path,
) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = (
        {f"{SHARE}/models/{name}" for name in _files_under(ROOT / "models")}
        | {f"{SHARE}/scenarios/{name}" for name in _files_under(ROOT / "config" / "scenarios")}
        | {f"{SHARE}/systemd/{name}" for name in _files_under(ROOT / "systemd")}
        | {f"{SHARE}/docs/{name}" for name in _files_under(ROOT / "docs")}
        | {f"agent/wire/schemas/{name}" for name in _files_under(ROOT / "agent/wire/schemas")}
        | {f"{SHARE}/lane.example.toml", f"{SHARE}/README.md"}
    )
    assert expected - names == set()
    assert {
        f"{SHARE}/systemd/lane-agent.service",
        f"{SHARE}/systemd/lane-agent.sysusers.conf",
        f"{SHARE}/systemd/lane-agent.tmpfiles.conf",
        f"{SHARE}/systemd/60-lane-controller.rules",
        f"{SHARE}/models/manifest.toml",
        f"{SHARE}/models/LICENSE-Apache-2.0.txt",
        f"{SHARE}/scenarios/basic.toml",
    } <= names


def test_the_wheels_model_files_are_the_bytes_the_manifest_names(wheel: Path) -> None:
    """The models travel as their content (agent/share/ links to models/), not as links."""
    with zipfile.ZipFile(wheel) as archive:
        manifest = tomllib.loads(archive.read(f"{SHARE}/models/manifest.toml").decode())
        digests = {
            entry["file"]: hashlib.sha256(
                archive.read(f"{SHARE}/models/{entry['file']}")
            ).hexdigest()
            for entry in manifest["models"].values()
        }
    assert digests == {entry["file"]: entry["sha256"] for entry in manifest["models"].values()}
    assert len(digests) == 2


def test_the_wheels_metadata_has_an_spdx_licence_and_bounded_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    headers = metadata.split("\n\n", 1)[0].splitlines()
    assert "License-Expression: LicenseRef-Proprietary" in headers
    requires = [
        h.removeprefix("Requires-Dist: ") for h in headers if h.startswith("Requires-Dist:")
    ]
    runtime = [r for r in requires if "extra ==" not in r]
    assert runtime, headers
    assert [r for r in runtime if "<" not in r] == []


def test_the_installed_agent_is_the_wheels_not_the_source_tree(venv: Path, tmp_path: Path) -> None:
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import agent, agent.vision.models as m; print(agent.__file__); "
            "print(m.DEFAULT_MODELS_DIR)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=_clean_env(),
    ).stdout.split()
    assert [Path(p).is_relative_to(venv) for p in where] == [True, True], where
    assert (Path(where[1]) / "manifest.toml").is_file()


def test_plate_read_from_the_installed_wheel_reads_a_plate(venv: Path, tmp_path: Path) -> None:
    image, _ = render_plate_scene("KPL4821")
    path = tmp_path / "plate.png"
    assert cv2.imwrite(str(path), image)
    result = _run_installed(venv, "plate", "read", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"{path}: KPL4821 confidence "), result.stdout


@pytest.mark.broker
def test_demo_from_the_installed_wheel_delivers_crossings_with_plates_read(
    venv: Path, tmp_path: Path
) -> None:
    find_mosquitto()  # fails with the install hint when the demo would have no broker
    result = _run_installed(
        venv, "demo", "--vehicles", "2", "--seed", "11", "--speed", "10", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    crossings = [line for line in result.stdout.splitlines() if line.startswith("#")]
    assert len(crossings) == 2, result.stdout
    assert "unavailable" not in result.stdout
    read = [line for line in crossings if re.search(r" plate [A-Z0-9]+ [01]\.\d\d ", line)]
    assert read, result.stdout
    assert "2 crossings received by central operations." in result.stdout


def test_doctor_from_the_installed_wheel_checks_the_models_and_names_a_broken_reader(
    venv: Path, tmp_path: Path
) -> None:
    """The installed doctor runs its checks (no traceback): the shipped models pass their test
    inference, a reader that is not there is a FAIL with its fix, and the exit status says so."""
    config = tmp_path / "lane.toml"
    config.write_text(
        '[lane]\nport_id = "WHEEL"\nlane_id = "L01"\n'
        f'[reader]\ntype = "lane_controller"\ndevice = "{tmp_path / "no-controller"}"\n'
        '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
        '[camera]\nenabled = true\nsource = "/dev/video-none"\n[page]\nenabled = false\n'
        '[mqtt]\nhost = "127.0.0.1"\nport = 9\n'
    )
    result = _run_installed(venv, "doctor", "--config", str(config), "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert checks["models"]["state"] == "OK", checks["models"]
    assert checks["reader"]["state"] == "FAIL", checks["reader"]
    assert checks["reader"]["fix"], checks["reader"]
