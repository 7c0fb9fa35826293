"""Camera capture: always the latest frame, from whatever the lane's camera is.

A grabber thread reads the source as fast as it delivers and keeps only the newest frame, so
the plate thread never works through a backlog of seconds-old images (a stream's own buffer is
drained by reading it, not by asking it to skip). Sources:

* RTSP / HTTP(S) streams (IP cameras), opened through FFmpeg with open and read time-outs;
* V4L2 devices, ``/dev/videoN`` or a bare index;
* video files, played at their own frame rate and looped;
* folders of images, played in name order at ``folder_fps`` and looped (new files are picked
  up at the next loop);
* any object implementing :class:`FrameSource` (the demo's synthetic camera).

When the source fails to open, stops delivering or errors, the grabber closes it and reopens it
with exponential back-off and jitter (so a camera back from a power cut is not hammered by every
lane at once). A frame that cannot be decoded is counted and skipped; a run of them means the
source is broken and it is reopened. :meth:`CameraCapture.stats` gives frames per second, the
age of the newest frame and the counters, for the status topic.

Errors::

    CaptureError            the source cannot be opened or stopped delivering (reopen)
    ├── CorruptFrameError   one frame could not be decoded (skip it)
    └── EndOfStreamError    a file or folder source played to its end (loop: reopen at once)
"""

from __future__ import annotations

import enum
import logging
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
CORRUPT_RUN_LIMIT = 25
"""Consecutive undecodable frames after which the source is treated as broken and reopened."""
_STREAM_TIMEOUT_MS = 5000
_FPS_WINDOW = 30


class CaptureError(Exception):
    """The camera source cannot be opened or stopped delivering frames."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"camera {source}: {reason}")
        self.source = source
        self.reason = reason


class CorruptFrameError(CaptureError):
    """One frame could not be decoded; the next one may be fine."""


class EndOfStreamError(CaptureError):
    """A file or folder source played to its end."""


class FrameSource(Protocol):
    """Something that yields camera images; the grabber thread is its only caller."""

    @property
    def description(self) -> str:
        """Where the frames come from, safe to log (no credentials)."""
        ...

    @property
    def pace_fps(self) -> float | None:
        """Frames per second to read at, for recorded sources; None: as fast as it delivers."""
        ...

    def open(self) -> None:
        """Connect; raise :class:`CaptureError` when it cannot."""
        ...

    def read(self) -> Image:
        """The next frame as BGR; raise a :class:`CaptureError` subclass when there is none."""
        ...

    def close(self) -> None:
        """Release the source; safe to call when not open."""
        ...


def redact_url(url: str) -> str:
    """A stream URL without its password, for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class OpenCvSource:
    """A stream, V4L2 device or video file opened with OpenCV's ``VideoCapture``."""

    def __init__(self, target: str | int, *, kind: str) -> None:
        self.target = target
        self.kind = kind
        self._capture: cv2.VideoCapture | None = None
        self._fps: float | None = None

    @property
    def description(self) -> str:
        if isinstance(self.target, int):
            return f"{self.kind} {self.target}"
        return f"{self.kind} {redact_url(self.target)}"

    @property
    def pace_fps(self) -> float | None:
        return self._fps if self.kind == "file" else None

    def open(self) -> None:
        self.close()
        if self.kind == "stream":
            capture = cv2.VideoCapture(
                self.target,
                cv2.CAP_FFMPEG,
                [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    _STREAM_TIMEOUT_MS,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    _STREAM_TIMEOUT_MS,
                ],
            )
        elif self.kind == "device":
            capture = cv2.VideoCapture(self.target, cv2.CAP_V4L2)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        else:
            if not Path(str(self.target)).is_file():
                raise CaptureError(self.description, "no such file")
            capture = cv2.VideoCapture(str(self.target))
        if not capture.isOpened():
            capture.release()
            raise CaptureError(self.description, "cannot be opened")
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if 0.5 <= fps <= 240.0 else 25.0
        self._capture = capture

    def read(self) -> Image:
        capture = self._capture
        if capture is None:
            raise CaptureError(self.description, "not open")
        ok, frame = capture.read()
        if not ok:
            if self.kind == "file":
                raise EndOfStreamError(self.description, "end of file")
            raise CaptureError(self.description, "no frame delivered")
        return _checked(frame, self.description)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageFolderSource:
    """A folder of still images played in name order, looped."""

    def __init__(self, folder: Path, *, fps: float) -> None:
        self.folder = folder
        self.fps = fps
        self._files: list[Path] = []
        self._next = 0

    @property
    def description(self) -> str:
        return f"folder {self.folder}"

    @property
    def pace_fps(self) -> float | None:
        return self.fps

    def open(self) -> None:
        try:
            files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        except OSError as exc:
            raise CaptureError(self.description, exc.strerror or str(exc)) from exc
        if not files:
            raise CaptureError(self.description, "no images")
        self._files = files
        self._next = 0

    def read(self) -> Image:
        if self._next >= len(self._files):
            raise EndOfStreamError(self.description, "end of folder")
        path = self._files[self._next]
        self._next += 1
        if not self.folder.is_dir():
            raise CaptureError(self.description, "folder vanished")
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise CorruptFrameError(self.description, f"cannot decode {path.name}")
        return _checked(frame, self.description)

    def close(self) -> None:
        self._files = []
        self._next = 0


def _checked(frame: object, description: str) -> Image:
    if not isinstance(frame, np.ndarray) or frame.size == 0 or frame.ndim not in (2, 3):
        raise CorruptFrameError(description, "empty or malformed frame")
    if frame.dtype != np.uint8:
        raise CorruptFrameError(description, f"unexpected pixel type {frame.dtype}")
    return frame


_DEVICE = re.compile(r"^(/dev/video(\d+)|\d+)$")


def open_source(spec: str, *, folder_fps: float = 5.0) -> FrameSource:
    """The frame source a config ``camera.source`` string names (nothing is opened yet)."""
    lowered = spec.lower()
    if lowered.startswith(("rtsp://", "rtsps://", "http://", "https://")):
        return OpenCvSource(spec, kind="stream")
    device = _DEVICE.match(spec)
    if device:
        return OpenCvSource(spec if device.group(2) else int(spec), kind="device")
    path = Path(spec)
    if path.is_dir():
        return ImageFolderSource(path, fps=folder_fps)
    return OpenCvSource(spec, kind="file")


class CaptureState(enum.StrEnum):
    """What the grabber is doing."""

    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame, cropped to the region of interest."""

    number: int
    """1, 2, 3… in capture order (never reused while the capture runs)."""
    image: Image
    captured_at: float
    """Wall-clock seconds (the engine's clock)."""
    offset: tuple[int, int]
    """x, y of the region of interest in the full frame (boxes are relative to ``image``)."""


@dataclass(frozen=True, slots=True)
class CaptureStats:
    """Camera health for the status topic."""

    source: str
    state: CaptureState
    fps: float
    last_frame_age_s: float | None
    frames: int
    corrupt_frames: int
    reconnects: int
    last_error: str | None


class CameraCapture:
    """Owns the source and its grabber thread; hands out the newest frame."""

    def __init__(
        self,
        source: FrameSource,
        *,
        roi: tuple[int, int, int, int] | None = None,
        stall_timeout_s: float = 5.0,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.roi = roi
        self.stall_timeout_s = stall_timeout_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: Frame | None = None
        self._latest_mono: float | None = None
        self._latest_whole: Image | None = None
        """The newest frame before cropping (the crop is a view of it: no copy is kept)."""
        self._recent: deque[float] = deque(maxlen=_FPS_WINDOW)
        self._state = CaptureState.STARTING
        self._frames = 0
        self._corrupt = 0
        self._reconnects = 0
        self._last_error: str | None = None
        self._roi_warned = False

    def start(self) -> None:
        """Start the grabber thread."""
        if self._thread is not None:
            raise RuntimeError("capture already started")
        self._thread = threading.Thread(target=self._run, name="camera grabber", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop grabbing and release the source (a read blocked in a driver may delay this)."""
        self._stop.set()
        with self._new_frame:
            self._new_frame.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)
        with self._lock:
            self._state = CaptureState.STOPPED

    def latest(self, *, newer_than: int, timeout_s: float) -> Frame | None:
        """The newest frame numbered above ``newer_than``, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._new_frame:
            while not self._stop.is_set():
                frame = self._latest
                if frame is not None and frame.number > newer_than:
                    return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._new_frame.wait(left)
        return None

    def whole_frame(self) -> tuple[Image, tuple[int, int, int, int]] | None:
        """The newest frame uncropped, and the region read in it (x, y, width, height), for a
        snapshot with the region drawn (None: no frame yet). Not to be written to."""
        with self._lock:
            whole, frame = self._latest_whole, self._latest
        if whole is None or frame is None:
            return None
        height, width = frame.image.shape[:2]
        return whole, (frame.offset[0], frame.offset[1], width, height)

    def healthy(self) -> bool:
        """Frames are arriving: streaming, with a frame younger than ``stall_timeout_s``."""
        with self._lock:
            return (
                self._state is CaptureState.STREAMING
                and self._latest_mono is not None
                and time.monotonic() - self._latest_mono <= self.stall_timeout_s
            )

    def stats(self) -> CaptureStats:
        """Counters and rates; cheap enough to call on every status publish."""
        with self._lock:
            now = time.monotonic()
            recent = list(self._recent)
            fresh = [t for t in recent if now - t <= self.stall_timeout_s]
            fps = (len(fresh) - 1) / (fresh[-1] - fresh[0]) if len(fresh) >= 2 else 0.0
            if fresh and fresh[-1] == fresh[0]:
                fps = 0.0
            return CaptureStats(
                source=self.source.description,
                state=self._state,
                fps=round(fps, 2),
                last_frame_age_s=(
                    round(now - self._latest_mono, 3) if self._latest_mono is not None else None
                ),
                frames=self._frames,
                corrupt_frames=self._corrupt,
                reconnects=self._reconnects,
                last_error=self._last_error,
            )

    # --- grabber thread ---

    def _run(self) -> None:
        delay = self.reconnect_min_s
        retrying = False
        while not self._stop.is_set():
            if retrying:
                with self._lock:
                    self._reconnects += 1
            frames_before = self._frames
            try:
                self.source.open()
                self._stream()
                delay = self.reconnect_min_s  # played to the end: loop at once
                retrying = False
                continue
            except CaptureError as exc:
                self._failed(exc)
            except Exception as exc:  # a driver or decoder bug must not end the lane's camera
                self._failed(CaptureError(self.source.description, f"{type(exc).__name__}"))
            finally:
                self.source.close()
            retrying = True
            if self._frames > frames_before:
                delay = self.reconnect_min_s  # it worked for a while: start the back-off over
            # Full jitter: a fleet of lanes that lost one camera server does not return in step.
            self._stop.wait(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2.0, self.reconnect_max_s)

    def _stream(self) -> None:
        pace = self.source.pace_fps
        interval = 1.0 / pace if pace else 0.0
        due = time.monotonic()
        corrupt_run = 0
        while not self._stop.is_set():
            if interval:
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    return
                due = max(due + interval, time.monotonic() - interval)
            try:
                image = self.source.read()
            except EndOfStreamError:
                return
            except CorruptFrameError as exc:
                corrupt_run += 1
                with self._lock:
                    self._corrupt += 1
                logger.debug("skipped a corrupt frame: %s", exc.reason)
                if corrupt_run >= CORRUPT_RUN_LIMIT:
                    raise CaptureError(
                        self.source.description, f"{corrupt_run} corrupt frames in a row"
                    ) from exc
                continue
            corrupt_run = 0
            self._publish(image)

    def _publish(self, image: Image) -> None:
        cropped, offset = self._crop(image)
        captured_at = self._wall_clock()
        now = time.monotonic()
        with self._new_frame:
            if self._state is not CaptureState.STREAMING:
                logger.info("camera %s streaming", self.source.description)
            self._state = CaptureState.STREAMING
            self._frames += 1
            self._latest = Frame(self._frames, cropped, captured_at, offset)
            self._latest_whole = image
            self._latest_mono = now
            self._recent.append(now)
            self._new_frame.notify_all()

    def _crop(self, image: Image) -> tuple[Image, tuple[int, int]]:
        if self.roi is None:
            return image, (0, 0)
        x, y, w, h = self.roi
        height, width = image.shape[:2]
        x0, y0 = min(max(x, 0), width), min(max(y, 0), height)
        x1, y1 = min(x + w, width), min(y + h, height)
        if x1 - x0 < 16 or y1 - y0 < 16:
            if not self._roi_warned:
                logger.warning(
                    "camera.roi %s lies outside the %dx%d frame: using the whole frame",
                    self.roi,
                    width,
                    height,
                )
                self._roi_warned = True
            return image, (0, 0)
        return image[y0:y1, x0:x1], (x0, y0)

    def _failed(self, exc: CaptureError) -> None:
        with self._lock:
            was = self._state
            self._state = CaptureState.RECONNECTING
            self._last_error = exc.reason
        if was is not CaptureState.RECONNECTING:
            logger.warning("camera %s unavailable: %s", exc.source, exc.reason)
