"""Licence-plate vision: camera capture, the ONNX plate detector and reader.

onnxruntime's registry wheel sends usage telemetry from native code (a device id under
``~/.cache/Microsoft`` and look-ups of a vendor host during inference) unless
``ORT_DISABLE_TELEMETRY=1`` is in the environment before the library loads. A lane device at a
border must not phone home, so the variable is set here, when the package is first imported;
onnxruntime is only ever imported by :mod:`agent.vision.models`, which sits inside this package
and therefore always runs after this line.
"""

from __future__ import annotations

import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
# OpenCV's own WARN lines (a camera that cannot be opened, retried every few seconds) bypass the
# agent's logging, priorities and rate limits; the capture thread reports those failures itself.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
