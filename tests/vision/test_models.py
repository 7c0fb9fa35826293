"""Model files: sha256 checked at load, clear errors for missing or corrupt files, no phoning home."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.vision.models import DEFAULT_MODELS_DIR, ModelError, create_session, load_manifest
from agent.vision.reader import PlateRecognizer

REPO = Path(__file__).resolve().parents[2]


def _copy_models(tmp_path: Path) -> Path:
    target = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR, target)
    return target


def _manifest_file(models_dir: Path, name: str) -> Path:
    return models_dir / load_manifest(models_dir)[name].file


def test_repository_models_match_their_manifest() -> None:
    """Every model file in models/ has the sha256 its manifest entry states."""
    manifest = load_manifest(DEFAULT_MODELS_DIR)
    assert set(manifest) == {"text_detector", "text_reader"}
    for spec in manifest.values():
        digest = hashlib.sha256((DEFAULT_MODELS_DIR / spec.file).read_bytes()).hexdigest()
        assert digest == spec.sha256, spec.file


def test_sha256_mismatch_is_refused_naming_the_file(tmp_path: Path) -> None:
    """A model file altered by one byte is refused before onnxruntime sees it."""
    models_dir = _copy_models(tmp_path)
    reader_file = _manifest_file(models_dir, "text_reader")
    blob = bytearray(reader_file.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    reader_file.write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="sha256 mismatch") as caught:
        PlateRecognizer.load(models_dir)
    assert caught.value.path == reader_file
    assert str(reader_file) in str(caught.value)


def test_corrupt_model_with_matching_digest_is_a_model_error(tmp_path: Path) -> None:
    """A file that hashes as the manifest says but is not an ONNX model is a ModelError."""
    models_dir = _copy_models(tmp_path)
    detector_file = _manifest_file(models_dir, "text_detector")
    garbage = b"not an onnx model" * 64
    detector_file.write_bytes(garbage)
    manifest = models_dir / "manifest.toml"
    old_digest = load_manifest(models_dir)["text_detector"].sha256
    manifest.write_text(
        manifest.read_text().replace(old_digest, hashlib.sha256(garbage).hexdigest())
    )
    with pytest.raises(ModelError, match="onnxruntime cannot load it") as caught:
        PlateRecognizer.load(models_dir)
    assert caught.value.path == detector_file


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    """A manifest entry whose file is gone names the file and the entry."""
    models_dir = _copy_models(tmp_path)
    detector_file = _manifest_file(models_dir, "text_detector")
    detector_file.unlink()
    with pytest.raises(ModelError, match=r"missing \(listed in manifest.toml as 'text_detector'\)"):
        PlateRecognizer.load(models_dir)


def test_missing_manifest_is_a_model_error(tmp_path: Path) -> None:
    """A models directory without manifest.toml is refused with a hint, not a KeyError."""
    with pytest.raises(ModelError, match="manifest not found"):
        PlateRecognizer.load(tmp_path)


def test_manifest_entry_without_sha256_is_refused(tmp_path: Path) -> None:
    """An entry must carry its digest: a model cannot be listed unchecked."""
    (tmp_path / "manifest.toml").write_text(
        '[models.text_detector]\nfile = "x.onnx"\nsource = "s"\nlicence = "MIT"\ninput_shape = [1]\n'
    )
    with pytest.raises(ModelError, match=r"\[models.text_detector\] lacks sha256"):
        load_manifest(tmp_path)


def test_session_needs_at_least_one_thread() -> None:
    """Zero threads would mean onnxruntime's default (all cores, spinning): refused."""
    with pytest.raises(ValueError, match="threads must be >= 1"):
        create_session(b"", path=Path("x.onnx"), threads=0)


_INFERENCE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from agent.vision.reader import PlateRecognizer
    recognizer = PlateRecognizer.load(threads=1)
    frame = np.full((360, 640, 3), 90, dtype=np.uint8)
    frame[150:250, 200:450] = 235
    import cv2
    cv2.putText(frame, "AB12CD", (215, 220), cv2.FONT_HERSHEY_SIMPLEX, 1.8, (20, 20, 20), 5)
    for _ in range(3):
        recognizer.read(frame)
    print("env", os.environ.get("ORT_DISABLE_TELEMETRY"))
    print("read", recognizer.read(frame)[0].text)
    # A sentinel the trace must show, proving the tracer sees this process's connects.
    import socket
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
    except OSError:
        pass
    """
)


def test_inference_makes_no_network_connection_and_writes_no_device_id(tmp_path: Path) -> None:
    """Loading the models and reading plates, traced at the syscall level, attempts no connect
    or sendto on an internet socket, and leaves no ~/.cache/Microsoft telemetry files in HOME.

    onnxruntime's telemetry is native code, so a Python audit hook could not see it; strace can.
    """
    import socket

    with socket.socket() as probe:  # a free loopback port nobody listens on after close
        probe.bind(("127.0.0.1", 0))
        sentinel_port = probe.getsockname()[1]
    strace = shutil.which("strace")
    assert strace, "strace is required for this test (apt-get install strace; dev.sh installs it)"
    home = tmp_path / "home"
    home.mkdir()
    trace = tmp_path / "trace.txt"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env |= {"HOME": str(home), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [
            strace,
            "-f",
            "-qq",
            "-e",
            "trace=connect,sendto,sendmsg",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            _INFERENCE_SCRIPT,
            str(sentinel_port),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "env 1" in result.stdout
    assert "read AB12CD" in result.stdout
    calls = trace.read_text().splitlines()
    internet = [line for line in calls if re.search(r"AF_INET6?|sin6?_port|NETLINK", line)]
    sentinel = [line for line in internet if f"htons({sentinel_port})" in line]
    assert len(sentinel) == 1, calls
    assert [line for line in internet if line not in sentinel] == []
    assert not (home / ".cache" / "Microsoft").exists(), sorted(map(str, home.rglob("*")))
