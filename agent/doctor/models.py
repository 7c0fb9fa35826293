"""The models check: every model file against its manifest sha256, then one plate read.

The test image is drawn here (a dark-on-light plate reading ``ABC1234``), so the check proves
more than that onnxruntime loads the files: the detector finds the plate and the reader reads
it, as on the lane.
"""

from __future__ import annotations

import time

from agent.config import AgentConfig
from agent.doctor.report import Check, fail, ok, skip

NAME = "models"
TEST_PLATE = "ABC1234"
_REINSTALL = (
    "reinstall the agent's package (the models ship with it) or copy the models/ folder again; "
    "never edit a sha256 in manifest.toml to make a file pass"
)


def check_models(config: AgentConfig) -> Check:
    if not config.camera.enabled and config.vision.models_dir is None:
        return skip(NAME, "camera.enabled = false: no plates are read, the models are not used")
    import cv2
    import numpy as np

    from agent.vision.models import DEFAULT_MODELS_DIR, ModelError, load_manifest
    from agent.vision.reader import PlateRecognizer

    directory = config.vision.models_dir or DEFAULT_MODELS_DIR
    try:
        manifest = load_manifest(directory)
        # Verifies each file's sha256 before onnxruntime parses it.
        recognizer = PlateRecognizer.load(directory, threads=config.vision.threads)
    except ModelError as exc:
        return fail(NAME, str(exc), _REINSTALL)
    image = np.full((240, 640, 3), 200, np.uint8)
    cv2.rectangle(image, (150, 80), (490, 170), (255, 255, 255), -1)
    cv2.rectangle(image, (150, 80), (490, 170), (0, 0, 0), 3)
    cv2.putText(image, TEST_PLATE, (170, 150), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (0, 0, 0), 5)
    started = time.perf_counter()
    reads = recognizer.read(image)
    elapsed_ms = (time.perf_counter() - started) * 1000
    files = ", ".join(spec.file for spec in manifest.values())
    if not reads or reads[0].text != TEST_PLATE:
        got = reads[0].text if reads else "nothing"
        return fail(
            NAME,
            f"{directory}: sha256 match for {files}, but the test plate {TEST_PLATE} read as {got}",
            _REINSTALL,
        )
    return ok(
        NAME,
        f"{directory}: sha256 match for {files}; test plate read as {TEST_PLATE} "
        f"(confidence {reads[0].confidence:.2f}) in {elapsed_ms:.0f} ms",
    )
