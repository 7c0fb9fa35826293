"""The plate thread: newest camera frame → plate reader → typed inputs on the engine's inbox.

It runs beside the RFID path and must never slow it down or take it down:

* it only calls ``emit`` (the engine inbox's ``put_nowait``) with :class:`PlateSeen` and
  :class:`VisionChanged` values; lane state stays on the engine thread;
* it lowers its own scheduling priority (``os.setpriority`` on its thread, inherited by the
  onnxruntime worker threads it creates) and caps inference at ``max_fps``, so the serial
  reader, the engine and the MQTT threads win the CPU on a two-core lane computer;
* a camera that stops delivering, models that fail to load and inference that raises all end in
  a :class:`VisionChanged` with a fault, after which the lane decides RFID-only with that reason;
  the camera is retried by the capture's back-off and the models every ``reader_retry_s``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2

from agent.config import AgentConfig
from agent.lane.events import PlateSeen, VisionChanged, VisionFault
from agent.status import StatusBoard
from agent.vision.capture import (
    CameraCapture,
    CaptureState,
    Frame,
    FrameSource,
    Image,
    open_source,
)
from agent.vision.types import PlateRead

logger = logging.getLogger(__name__)

THREAD_NICENESS = 10
"""Added to the plate thread's nice value: plate reading yields to the RFID and MQTT threads."""
INFERENCE_FAILURE_LIMIT = 3
SNAPSHOT_JPEG_QUALITY = 80
ROI_COLOUR_BGR = (0, 200, 0)
"""The region of interest on snapshots: green, as ``lane-agent doctor`` draws it."""
"""Consecutive inference errors after which the reader is dropped and reloaded later."""


class PlateReader(Protocol):
    """What the plate thread needs of the recognizer (``agent.vision.reader.PlateRecognizer``)."""

    def read(self, image_bgr: Image) -> list[PlateRead]:
        """Plates found in ``image_bgr``, best first."""
        ...


@dataclass(frozen=True, slots=True)
class PlateThreadStats:
    """Plate thread health for the status topic."""

    fault: VisionFault | None
    frames_read: int
    plates_emitted: int
    inference_errors: int
    reader_loads_failed: int
    last_inference_ms: float | None


class PlatePipeline:
    """Owns the plate thread; :meth:`start` it after the engine's inbox exists."""

    def __init__(
        self,
        capture: CameraCapture,
        load_reader: Callable[[], PlateReader],
        emit: Callable[[object], None],
        *,
        max_fps: float = 5.0,
        min_read_confidence: float = 0.3,
        reader_retry_s: float = 60.0,
        jpeg_quality: int = 85,
        clock: Callable[[], float] = time.time,
        board: StatusBoard | None = None,
    ) -> None:
        self.capture = capture
        self._load_reader = load_reader
        self._emit = emit
        self.max_fps = max_fps
        self.min_read_confidence = min_read_confidence
        self.reader_retry_s = reader_retry_s
        self.jpeg_quality = jpeg_quality
        self._clock = clock
        self._board = board
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._fault: VisionFault | None = None
        self._reported = False
        self._frames_read = 0
        self._plates = 0
        self._inference_errors = 0
        self._load_failures = 0
        self._last_ms: float | None = None
        self._started = time.monotonic()

    def start(self) -> None:
        """Start the camera and the plate thread (the models load on the plate thread)."""
        if self._thread is not None:
            raise RuntimeError("plate pipeline already started")
        if self._board is not None:
            self._board.contribute("camera", self.status_section)
        self.capture.start()
        self._thread = threading.Thread(target=self._run, name="plate reader", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the plate thread and the camera; a frame being read finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.capture.stop(timeout_s)

    def stats(self) -> PlateThreadStats:
        """Counters for the status topic."""
        with self._lock:
            return PlateThreadStats(
                fault=self._fault,
                frames_read=self._frames_read,
                plates_emitted=self._plates,
                inference_errors=self._inference_errors,
                reader_loads_failed=self._load_failures,
                last_inference_ms=self._last_ms,
            )

    def snapshot_jpeg(self, quality: int = SNAPSHOT_JPEG_QUALITY) -> bytes | None:
        """The camera's newest whole frame as JPEG, the region read for plates drawn on it
        (None: no frame yet). For the lane page; any thread, a copy is drawn on."""
        whole = self.capture.whole_frame()
        if whole is None:
            return None
        image, (x, y, width, height) = whole
        marked = image.copy()
        cv2.rectangle(marked, (x, y), (x + width - 1, y + height - 1), ROI_COLOUR_BGR, 3)
        ok, encoded = cv2.imencode(".jpg", marked, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return encoded.tobytes() if ok else None

    def status_section(self) -> dict[str, Any]:
        """The ``camera`` section of the status topic."""
        camera = self.capture.stats()
        plates = self.stats()
        return {
            "source": camera.source,
            "state": camera.state.value,
            "fps": camera.fps,
            "last_frame_age_s": camera.last_frame_age_s,
            "frames": camera.frames,
            "corrupt_frames": camera.corrupt_frames,
            "reconnects": camera.reconnects,
            "last_error": camera.last_error,
            "plate_fault": plates.fault.value if plates.fault else None,
            "frames_read": plates.frames_read,
            "plates_seen": plates.plates_emitted,
            "inference_errors": plates.inference_errors,
            "reader_loads_failed": plates.reader_loads_failed,
            "last_inference_ms": plates.last_inference_ms,
        }

    # --- plate thread ---

    def _run(self) -> None:
        self._started = time.monotonic()
        _lower_priority()
        reader: PlateReader | None = None
        next_load = 0.0
        last_frame = 0
        next_due = 0.0
        failures = 0
        while not self._stop.is_set():
            if reader is None and time.monotonic() >= next_load:
                reader = self._load()
                failures = 0
                if reader is None:
                    next_load = time.monotonic() + self.reader_retry_s
            frame = self.capture.latest(newer_than=last_frame, timeout_s=0.25)
            self._report(reader)
            if frame is None or reader is None:
                continue
            last_frame = frame.number
            now = time.monotonic()
            if now < next_due:
                continue  # over the fps cap: this frame is dropped, a newer one follows
            next_due = now + 1.0 / self.max_fps
            try:
                self._read_frame(reader, frame)
                failures = 0
            except Exception as exc:  # any inference error degrades the lane, never crashes it
                failures += 1
                with self._lock:
                    self._inference_errors += 1
                logger.warning("plate reading failed (%s): %s", type(exc).__name__, exc)
                if failures >= INFERENCE_FAILURE_LIMIT:
                    logger.error(
                        "plate reader failed %d times in a row: RFID-only, reloading in %.0f s",
                        failures,
                        self.reader_retry_s,
                    )
                    reader = None
                    next_load = time.monotonic() + self.reader_retry_s
                    self._report(reader)

    def _load(self) -> PlateReader | None:
        try:
            reader = self._load_reader()
        except Exception as exc:  # ModelError, or onnxruntime refusing a damaged file
            with self._lock:
                self._load_failures += 1
            logger.error(
                "plate reader unavailable, lane runs RFID-only (retry in %.0f s): %s",
                self.reader_retry_s,
                exc,
            )
            return None
        logger.info("plate reader loaded")
        return reader

    def _read_frame(self, reader: PlateReader, frame: Frame) -> None:
        started = time.perf_counter()
        plates = reader.read(frame.image)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        with self._lock:
            self._frames_read += 1
            self._last_ms = round(elapsed_ms, 1)
        best = next((p for p in plates if p.text), None)
        if best is None or best.confidence < self.min_read_confidence:
            return
        crop = self._crop_jpeg(frame.image, best.box)
        self._emit(
            PlateSeen(
                at=frame.captured_at,
                text=best.text,
                confidence=best.confidence,
                char_confidences=best.char_confidences,
                candidates=best.candidates,
                crop_jpeg=crop,
            )
        )
        with self._lock:
            self._plates += 1
        logger.debug("plate %s (%.2f) in frame %d", best.text, best.confidence, frame.number)

    def _crop_jpeg(self, image: Image, box: tuple[int, int, int, int]) -> bytes:
        x, y, w, h = box
        height, width = image.shape[:2]
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(width, x + w), min(height, y + h)
        if x1 <= x0 or y1 <= y0:
            return b""
        ok, encoded = cv2.imencode(
            ".jpg", image[y0:y1, x0:x1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        )
        return encoded.tobytes() if ok else b""

    def _report(self, reader: PlateReader | None) -> None:
        """Emit a VisionChanged when the fault changes (a camera fault outranks the reader's)."""
        healthy = self.capture.healthy()
        connecting = (
            not healthy
            and self.capture.stats().state is CaptureState.STARTING
            and time.monotonic() - self._started < self.capture.stall_timeout_s
        )
        fault: VisionFault | None
        if not healthy and not connecting:
            fault = VisionFault.CAMERA_UNAVAILABLE
        elif reader is None:
            fault = VisionFault.READER_UNAVAILABLE
        elif connecting:
            return  # the camera is still connecting: neither a fault nor working yet
        else:
            fault = None
        with self._lock:
            if self._reported and fault is self._fault:
                return
            self._fault = fault
            self._reported = True
        if fault is None:
            logger.info("plate reading available")
        else:
            logger.warning("plate reading unavailable: %s", fault.value)
        self._emit(VisionChanged(at=self._clock(), fault=fault))
        if self._board is not None:
            for code in VisionFault:
                if code is fault:
                    self._board.raise_fault(code.value, camera_fault_message(code))
                else:
                    self._board.clear_fault(code.value)


def _lower_priority() -> None:
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), current + THREAD_NICENESS)
    except OSError as exc:
        logger.info("plate thread keeps its priority: %s", exc)


def build_plate_pipeline(
    config: AgentConfig,
    emit: Callable[[object], None],
    *,
    board: StatusBoard | None = None,
    clock: Callable[[], float] = time.time,
    source: FrameSource | None = None,
) -> PlatePipeline:
    """The camera and plate thread a lane config describes (call only with the camera on).

    ``source`` replaces the config's ``camera.source`` (the demo's synthetic camera).
    """
    # Imported here: onnxruntime loads only in lanes that read plates, and after the telemetry
    # switch that agent.vision sets on import.
    from agent.vision.reader import PlateRecognizer

    camera = config.camera
    vision = config.vision
    capture = CameraCapture(
        source or open_source(camera.source, folder_fps=camera.folder_fps),
        roi=camera.roi,
        stall_timeout_s=camera.stall_timeout_s,
        reconnect_min_s=camera.reconnect_min_s,
        reconnect_max_s=camera.reconnect_max_s,
        wall_clock=clock,
    )
    return PlatePipeline(
        capture,
        lambda: PlateRecognizer.load(vision.models_dir, threads=vision.threads),
        emit,
        max_fps=vision.max_fps,
        min_read_confidence=vision.min_read_confidence,
        reader_retry_s=vision.reader_retry_s,
        jpeg_quality=vision.jpeg_quality,
        clock=clock,
        board=board,
    )


def camera_fault_message(fault: VisionFault) -> str:
    """The status-topic fault text for a vision fault."""
    if fault is VisionFault.CAMERA_UNAVAILABLE:
        return "lane camera gives no frames: plates are not read, lane runs RFID-only"
    return "plate reader models unavailable: plates are not read, lane runs RFID-only"
