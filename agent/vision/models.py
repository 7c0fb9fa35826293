"""Model files: the manifest, the sha256 check and onnxruntime session creation.

This is the only module that imports onnxruntime (see :mod:`agent.vision` for why that matters).
Every model file is named in ``models/manifest.toml`` with its sha256; a file whose digest does
not match is refused before onnxruntime parses it, so a truncated copy or a swapped model can
never read plates in a lane.

Exceptions::

    ModelError                 missing, corrupt or mismatching model file, or a bad manifest
"""

from __future__ import annotations

import hashlib
import importlib.resources
import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.toml"
DEFAULT_MODELS_DIR = Path(str(importlib.resources.files("agent") / "share" / "models"))
"""The models shipped with the agent: package data in ``agent/share/models``, which in the
source tree is a link to the repository's ``models/`` (so an installed wheel needs no source)."""


class ModelError(Exception):
    """A model file is missing, corrupt or does not match its manifest entry."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"model file {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One ``[models.<name>]`` entry of the manifest."""

    name: str
    file: str
    sha256: str
    source: str
    licence: str
    input_shape: tuple[int | str, ...]


def load_manifest(models_dir: Path) -> dict[str, ModelSpec]:
    """Read ``manifest.toml`` in ``models_dir``; raise :class:`ModelError` if it is unusable."""
    path = models_dir / MANIFEST_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(
            path,
            "manifest not found (models_dir must hold the models shipped in agent/share/models)",
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelError(path, f"manifest unreadable: {exc}") from exc
    entries = raw.get("models")
    if not isinstance(entries, dict) or not entries:
        raise ModelError(path, "manifest has no [models.<name>] tables")
    specs: dict[str, ModelSpec] = {}
    for name, entry in entries.items():
        specs[name] = _spec_from_entry(path, name, entry)
    return specs


def _spec_from_entry(manifest: Path, name: str, entry: Any) -> ModelSpec:
    required = ("file", "sha256", "source", "licence", "input_shape")
    if not isinstance(entry, dict):
        raise ModelError(manifest, f"[models.{name}] is not a table")
    missing = [key for key in required if key not in entry]
    if missing:
        raise ModelError(manifest, f"[models.{name}] lacks {', '.join(missing)}")
    sha256 = str(entry["sha256"]).lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ModelError(manifest, f"[models.{name}] sha256 is not 64 hex digits")
    return ModelSpec(
        name=name,
        file=str(entry["file"]),
        sha256=sha256,
        source=str(entry["source"]),
        licence=str(entry["licence"]),
        input_shape=tuple(entry["input_shape"]),
    )


def read_verified(models_dir: Path, spec: ModelSpec) -> bytes:
    """Return the bytes of ``spec``'s file after checking them against the manifest digest.

    The session is built from these same bytes, so what was hashed is what runs.
    """
    path = models_dir / spec.file
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ModelError(path, f"missing (listed in {MANIFEST_NAME} as {spec.name!r})") from None
    except OSError as exc:
        raise ModelError(path, f"unreadable: {exc}") from exc
    actual = hashlib.sha256(blob).hexdigest()
    if actual != spec.sha256:
        raise ModelError(
            path,
            f"sha256 mismatch: manifest says {spec.sha256}, file has {actual}; refusing to load",
        )
    return blob


def create_session(blob: bytes, *, path: Path, threads: int) -> onnxruntime.InferenceSession:
    """Build a CPU inference session that uses ``threads`` cores and never spins.

    onnxruntime's default uses every core and busy-waits between operators, which would starve
    the serial and MQTT threads of a 2-core lane computer.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    # A memory pattern is planned per input shape and kept: with the detector's two frame
    # sizes and the reader's many line widths it cost ~75 MB of peak RSS and no speed.
    options.enable_mem_pattern = False
    try:
        return onnxruntime.InferenceSession(
            blob, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own pybind classes for parse failures
        raise ModelError(path, f"onnxruntime cannot load it: {exc}") from exc


def open_model(
    name: str, *, models_dir: Path, threads: int, manifest: dict[str, ModelSpec] | None = None
) -> onnxruntime.InferenceSession:
    """Verify and load the manifest entry ``name`` from ``models_dir``."""
    specs = manifest if manifest is not None else load_manifest(models_dir)
    spec = specs.get(name)
    if spec is None:
        raise ModelError(models_dir / MANIFEST_NAME, f"no [models.{name}] entry")
    blob = read_verified(models_dir, spec)
    session = create_session(blob, path=models_dir / spec.file, threads=threads)
    log.info("loaded model %s (%s, sha256 %s…)", spec.name, spec.file, spec.sha256[:12])
    return session
