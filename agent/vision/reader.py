"""Plate reader: text-line recognition restricted to plate characters, and the plate pipeline.

The recogniser is a CTC network over a large multilingual character set. Plates use only
[A-Z0-9], so decoding folds the network's output onto that alphabet: lowercase probability is
added to its uppercase letter, and every other symbol (separators, emblems, punctuation, other
scripts) is pooled into one "not a plate character" class that, like the CTC blank, emits
nothing. That removes the dashes, dots and emblems that a general OCR reads as characters,
while keeping the per-character confidences the voting downstream needs.

:class:`PlateRecognizer` ties detector and reader together: find text lines, join the halves of
a line split by an emblem, read the tallest plausible lines, and rank them as plates.
"""

from __future__ import annotations

import logging
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.lane.plates import fits_known_format, is_plate_legend
from agent.vision.detector import TextBox, TextDetector, order_reading
from agent.vision.models import DEFAULT_MODELS_DIR, ModelError, load_manifest, open_model
from agent.vision.types import PlateRead

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

PLATE_ALPHABET = string.digits + string.ascii_uppercase
"""Characters a plate reading may contain, in the order of the folded class axis."""

DETECTOR_MODEL = "text_detector"
READER_MODEL = "text_reader"

_LINE_HEIGHT = 48
"""Input height of the recogniser, fixed by its training."""
_MAX_LINE_WIDTH = 48 * 10
_BLANK = 0
_OTHER = 1
_FIRST_SYMBOL = 2


@dataclass(frozen=True, slots=True)
class LineReading:
    """What the reader made of one text line, before it is judged as a plate."""

    text: str
    char_confidences: tuple[float, ...]
    runner_ups: tuple[tuple[str, float], ...]
    """Per character: the second most likely plate character and its probability."""

    @property
    def confidence(self) -> float:
        """Geometric mean of the character confidences (0 for an empty reading)."""
        if not self.char_confidences:
            return 0.0
        logs = [math.log(max(c, 1e-6)) for c in self.char_confidences]
        return math.exp(sum(logs) / len(logs))


class TextReader:
    """Reads text lines cut out of a frame, folded onto :data:`PLATE_ALPHABET`."""

    def __init__(self, session: onnxruntime.InferenceSession, *, path: Path) -> None:
        self._session = session
        self._input_name = session.get_inputs()[0].name
        characters = session.get_modelmeta().custom_metadata_map.get("character")
        if not characters:
            raise ModelError(path, "no 'character' metadata: not a CTC text reader")
        self._fold = _fold_matrix(characters.splitlines())

    def read(self, image_bgr: npt.NDArray[np.uint8], quads: list[FloatArray]) -> list[LineReading]:
        """Read each quad of ``image_bgr``; one :class:`LineReading` per quad, same order."""
        if not quads:
            return []
        readings: list[LineReading] = []
        for quad in quads:
            # One line per run: padding lines to a common width costs more than the calls.
            line = _warp_line(image_bgr, quad).transpose(2, 0, 1)[np.newaxis]
            (probs,) = self._session.run(None, {self._input_name: line})
            folded = np.asarray(probs[0], dtype=np.float32) @ self._fold
            # Whatever probability the fold did not claim belongs to non-plate symbols.
            folded[:, _OTHER] = np.clip(1.0 - folded.sum(axis=1) + folded[:, _OTHER], 0.0, 1.0)
            readings.append(decode_plate_ctc(folded))
        return readings


def _fold_matrix(characters: list[str]) -> FloatArray:
    """Matrix mapping the network's classes onto blank, other and the plate alphabet.

    Class 0 of the network is the CTC blank, then one class per line of the character metadata,
    then a space class. Non-plate classes map to nothing; their mass is recovered as 1 - sum.
    """
    n_classes = len(characters) + 2
    fold = np.zeros((n_classes, _FIRST_SYMBOL + len(PLATE_ALPHABET)), dtype=np.float32)
    fold[0, _BLANK] = 1.0
    for index, char in enumerate(characters, start=1):
        upper = char.upper()
        if len(upper) == 1 and upper in PLATE_ALPHABET:
            fold[index, _FIRST_SYMBOL + PLATE_ALPHABET.index(upper)] = 1.0
    return fold


def decode_plate_ctc(steps: FloatArray) -> LineReading:
    """Best-path CTC decoding of folded per-step probabilities ``(T, 2 + 36)``.

    Blank and "other" both separate characters, so a repeated letter split by a dash reads twice
    and a dash itself reads as nothing.
    """
    best = steps.argmax(axis=1)
    chars: list[str] = []
    confidences: list[float] = []
    runner_ups: list[tuple[str, float]] = []
    previous = -1
    for t, cls in enumerate(best):
        if cls >= _FIRST_SYMBOL:
            p = float(steps[t, cls])
            if cls != previous:
                chars.append(PLATE_ALPHABET[cls - _FIRST_SYMBOL])
                confidences.append(p)
                runner_ups.append(_runner_up(steps[t], int(cls)))
            elif p > confidences[-1]:
                confidences[-1] = p
                runner_ups[-1] = _runner_up(steps[t], int(cls))
        previous = int(cls)
    return LineReading("".join(chars), tuple(confidences), tuple(runner_ups))


def _runner_up(step: FloatArray, best_cls: int) -> tuple[str, float]:
    symbols = step[_FIRST_SYMBOL:].copy()
    symbols[best_cls - _FIRST_SYMBOL] = -1.0
    second = int(symbols.argmax())
    return PLATE_ALPHABET[second], float(symbols[second])


def _warp_line(image_bgr: npt.NDArray[np.uint8], quad: FloatArray) -> FloatArray:
    """Cut ``quad`` out upright at the reader's height, normalised as it was trained."""
    width = float(np.linalg.norm(quad[1] - quad[0]))
    height = float(np.linalg.norm(quad[3] - quad[0]))
    out_w = int(min(_MAX_LINE_WIDTH, max(16, round(_LINE_HEIGHT * width / max(height, 1.0)))))
    target = np.array(
        [[0, 0], [out_w - 1, 0], [out_w - 1, _LINE_HEIGHT - 1], [0, _LINE_HEIGHT - 1]],
        dtype=np.float32,
    )
    transform = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    line = cv2.warpPerspective(
        image_bgr,
        transform,
        (out_w, _LINE_HEIGHT),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return line.astype(np.float32) * (2.0 / 255.0) - 1.0


@dataclass(frozen=True, slots=True)
class _Line:
    quad: FloatArray
    """What the reader cuts out."""
    height: float
    width: float
    outline: FloatArray
    """The line as the detector found it: what the plate box is grown from."""


class PlateRecognizer:
    """Finds and reads licence plates in a frame: the API the plate thread calls.

    Load once with :meth:`load` (seconds: it hashes and parses the model files) and call
    :meth:`read` per frame from one thread; a session is not shared between threads.
    """

    def __init__(
        self,
        detector: TextDetector,
        reader: TextReader,
        *,
        max_lines: int = 5,
        max_candidates: int = 5,
        coarse_side: int = 640,
        accept_score: float = 0.6,
        line_margin: float = 0.3,
        second_looks: tuple[float, ...] = (0.15, -0.1),
        second_look_lines: int = 1,
        second_look_below: float = 0.95,
        accept_min_length: int = 6,
        accept_confidence: float = 0.9,
    ) -> None:
        self.detector = detector
        self.reader = reader
        self.max_lines = max_lines
        self.max_candidates = max_candidates
        self.coarse_side = coarse_side
        self.accept_score = accept_score
        self.line_margin = line_margin
        self.second_looks = second_looks
        self.second_look_lines = second_look_lines
        self.second_look_below = second_look_below
        self.accept_min_length = accept_min_length
        self.accept_confidence = accept_confidence

    @classmethod
    def load(cls, models_dir: Path | None = None, *, threads: int = 2) -> PlateRecognizer:
        """Verify the model files against ``models_dir/manifest.toml`` and load them.

        Raises :class:`~agent.vision.models.ModelError` naming the file when one is missing,
        corrupt or does not match its sha256.
        """
        directory = models_dir if models_dir is not None else DEFAULT_MODELS_DIR
        manifest = load_manifest(directory)
        detector_session = open_model(
            DETECTOR_MODEL, models_dir=directory, threads=threads, manifest=manifest
        )
        reader_session = open_model(
            READER_MODEL, models_dir=directory, threads=threads, manifest=manifest
        )
        reader_path = directory / manifest[READER_MODEL].file
        return cls(TextDetector(detector_session), TextReader(reader_session, path=reader_path))

    def read(self, image_bgr: npt.NDArray[Any]) -> list[PlateRead]:
        """Return every plate found in ``image_bgr`` (BGR, HxWx3 uint8), best first."""
        if image_bgr.dtype != np.uint8:
            raise ValueError(f"expected an 8-bit image, got dtype {image_bgr.dtype}")
        if image_bgr.ndim == 2:
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        elif image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 BGR image, got shape {image_bgr.shape}")
        # Coarse first: most plates are found on a frame shrunk to `coarse_side`, at a quarter
        # of the detector's cost; only when nothing there is convincingly a plate does the
        # detector look again at full resolution for small, distant plates. Either way the
        # reader cuts its lines from the full-resolution frame.
        scored = self._read_lines(image_bgr, self.coarse_side)
        if max(image_bgr.shape[:2]) > self.coarse_side and not self._convincing(scored):
            log.debug("coarse pass found no convincing plate; reading at full resolution")
            scored = self._read_lines(image_bgr, self.detector.max_side)
        return [plate for _, plate in scored]

    def _convincing(self, scored: list[tuple[float, PlateRead]]) -> bool:
        """The best of ``scored`` is a plate to trust: a score of at least ``accept_score`` and
        either a known format or a long, confident reading with digits."""
        if not scored or scored[0][0] < self.accept_score:
            return False
        plate = scored[0][1]
        if format_prior(plate.text) == 1.0:
            return True
        # Formats are evidence, not a whitelist: many states issue serials outside the common
        # formats. A long, confident reading with digits is a plate read in full; short
        # readings are often a plate clipped by the coarse box and need the finer look.
        return (
            len(plate.text) >= self.accept_min_length
            and plate.confidence >= self.accept_confidence
            and any(c.isdigit() for c in plate.text)
        )

    def _read_lines(
        self, image_bgr: npt.NDArray[np.uint8], max_side: int
    ) -> list[tuple[float, PlateRead]]:
        """Detect at ``max_side``, read the tallest line-shaped boxes, score them as plates."""
        lines = _join_split_lines(self.detector.detect(image_bgr, max_side=max_side))
        lines = [line for line in lines if 1.5 <= line.width / max(line.height, 1.0) <= 15.0]
        lines.sort(key=lambda line: line.height, reverse=True)
        # The detector's line boxes often end a little short of the first and last characters
        # (on shrunk frames nearly always, at full resolution on small plates): read each line
        # lengthened by about a third of a character each side (its width and height, which the
        # filter and the order above use, stay as detected).
        lines = [_widen(line, self.line_margin) for line in lines[: self.max_lines]]
        tallest = lines[0].height if lines else 1.0
        scored: list[tuple[float, PlateRead, _Line]] = []
        best_score = 0.0
        for line in lines:
            # A line scores at most sqrt(height / tallest) (every other factor is at most 1),
            # and lines come tallest first: once the best score so far reaches that bound, no
            # line left can overtake it, and reading them (~10 ms each) would change nothing.
            if scored and best_score >= math.sqrt(line.height / tallest):
                break
            (raw,) = self.reader.read(image_bgr, [line.quad])
            item = self._score(image_bgr, line, raw, tallest)
            if item is not None:
                scored.append((item[0], item[1], line))
                best_score = max(best_score, item[0])
                if self._convincing([(item[0], item[1])]):
                    # Unlike the bound above this is not exact (a shorter line could still
                    # score higher), but a convincing plate is what the pass is looking for;
                    # on the dev photos stopping here changed no reading.
                    break
        scored.sort(key=lambda item: item[0], reverse=True)
        if scored and self.second_looks:
            # Second looks at the leaders, cut a little taller and a little shorter: on small
            # plates the line box often clips character tops or takes in the frame, which
            # costs look-alikes. The best-scoring of the readings of a line is kept.
            for index in range(min(self.second_look_lines, len(scored))):
                _, leader, line = scored[index]
                if min(leader.char_confidences, default=0.0) >= self.second_look_below:
                    continue  # every character is already sure: another cut changes nothing
                variants = [_grow(line, vertical) for vertical in self.second_looks]
                variant_reads = self.reader.read(image_bgr, [v.quad for v in variants])
                for variant, raw in zip(variants, variant_reads, strict=True):
                    item = self._score(image_bgr, variant, raw, tallest)
                    if item is not None and item[0] > scored[index][0]:
                        scored[index] = (item[0], item[1], line)
            scored.sort(key=lambda item: item[0], reverse=True)
        return [(score, plate) for score, plate, _ in scored]

    def _score(
        self, image_bgr: npt.NDArray[np.uint8], line: _Line, raw: LineReading, tallest: float
    ) -> tuple[float, PlateRead] | None:
        reading = apply_plate_conventions(raw)
        if not 2 <= len(reading.text) <= 10:
            return None
        # A state's or country's name printed on the plate is lettering, never the plate.
        options = [option for option in rank_options(reading) if not is_plate_legend(option.text)]
        if not options:
            return None
        best = options[0]
        likeness = plate_likeness(best.text, has_digit=any(c.isdigit() for c in raw.text))
        score = best.rank * likeness * math.sqrt(line.height / tallest)
        image_h, image_w = image_bgr.shape[:2]
        plate = PlateRead(
            text=best.text,
            confidence=round(best.confidence, 4),
            char_confidences=tuple(round(c, 4) for c in best.char_confidences),
            box=_plate_box(line.outline, image_w, image_h),
            candidates=tuple(
                (option.text, round(option.confidence, 4))
                for option in options[: self.max_candidates]
            ),
        )
        return score, plate


_TO_LETTER = {"0": "O", "1": "I"}
_TO_DIGIT = {"O": "0", "I": "1"}
_EU_LDL = re.compile(r"^[A-Z01]{2}[0-9OI]{3}[A-Z01]{2}$")
"""Two letters, three digits, two letters (Slovak and similar European formats), with the
look-alikes O/0 and I/1 allowed either way."""


def _is_eu_ldl(text: str) -> bool:
    """``text`` is two letters, three digits, two letters, each letter pair holding at least one
    unambiguous letter and the digits at least two unambiguous digits."""
    if not _EU_LDL.match(text):
        return False
    pairs_have_letters = all(
        any(c.isalpha() and c not in "OI" for c in pair) for pair in (text[:2], text[5:])
    )
    return pairs_have_letters and sum(c.isdigit() for c in text[2:5]) >= 2


def _positions(text: str) -> str:
    """Per character: 'L' letter, 'D' digit or '?' (free) under the plate format ``text`` fits."""
    if _is_eu_ldl(text):
        return "LLDDDLL"
    return "?" * len(text)


def _normalise(char: str, kind: str) -> str:
    if kind == "L":
        return _TO_LETTER.get(char, char)
    if kind == "D":
        return _TO_DIGIT.get(char, char)
    return "0" if char == "O" else char


def apply_plate_conventions(reading: LineReading) -> LineReading:
    """Apply what plate formats say about characters the glyphs alone cannot settle.

    - A European two-letter, three-digit, two-letter plate read with one extra leading
      character has had its country band read as a letter: drop it.
    - In that format, letter positions take O and I, digit positions take 0 and 1.
    - Elsewhere O reads as 0: US and Mexican plates print one glyph for both and the
      registries (and this project's ground truth) record it as the digit.
    """
    text = reading.text
    confidences = reading.char_confidences
    runner_ups = reading.runner_ups
    if len(text) == 8 and _is_eu_ldl(text[1:]):
        text, confidences, runner_ups = text[1:], confidences[1:], runner_ups[1:]
    kinds = _positions(text)
    normal = "".join(_normalise(c, k) for c, k in zip(text, kinds, strict=True))
    alternatives = []
    for (alt, p), char, kind in zip(runner_ups, normal, kinds, strict=True):
        alt = _normalise(alt, kind)
        alternatives.append((alt, 0.0 if alt == char else p))
    return LineReading(normal, confidences, tuple(alternatives))


def format_prior(text: str) -> float:
    """1 for a reading in a known plate format (:mod:`agent.lane.plate_formats`, the table
    voting uses), less for one that fits none."""
    if _is_eu_ldl(text) or fits_known_format(text):
        return 1.0
    return 0.75


def plate_likeness(text: str, *, has_digit: bool | None = None) -> float:
    """A prior, 0..1, that ``text`` is a plate rather than other lettering on a vehicle.

    Plates carry 5 to 7 characters and nearly always mix letters with digits; dealer names,
    model badges and slogans are all letters. ``has_digit`` says whether the text as read
    (before O became 0) had a digit; by default ``text`` is judged.
    """
    length = len(text)
    if 5 <= length <= 7:
        prior = 1.0
    elif length == 8:
        prior = 0.6
    elif length == 4:
        prior = 0.4
    else:
        prior = 0.15
    if not (has_digit if has_digit is not None else any(c.isdigit() for c in text)):
        prior *= 0.4
    return prior


def _widen(line: _Line, margin: float) -> _Line:
    """``line`` lengthened by ``margin`` line heights at each end, along its own direction."""
    direction = (line.quad[1] - line.quad[0]) / max(line.width, 1e-6)
    shift = direction * margin * line.height
    quad = line.quad.copy()
    quad[[0, 3]] -= shift
    quad[[1, 2]] += shift
    return _Line(quad=quad, height=line.height, width=line.width, outline=line.outline)


def _grow(line: _Line, vertical: float) -> _Line:
    """``line`` taller by ``vertical`` line heights above and below, along its own normal."""
    normal = (line.quad[3] - line.quad[0]) / max(line.height, 1e-6)
    shift = normal * vertical * line.height
    quad = line.quad.copy()
    quad[[0, 1]] -= shift
    quad[[2, 3]] += shift
    return _Line(quad=quad, height=line.height, width=line.width, outline=line.outline)


def _as_line(quad: FloatArray) -> _Line:
    return _Line(
        quad=quad,
        height=float(np.linalg.norm(quad[3] - quad[0])),
        width=float(np.linalg.norm(quad[1] - quad[0])),
        outline=quad,
    )


def _join_split_lines(boxes: list[TextBox]) -> list[_Line]:
    """Join pieces of one line that the detector split, typically at an emblem or a gap.

    Two pieces join when they have about the same height, sit on the same baseline and the gap
    between them is under about one character height.
    """
    lines = [_as_line(box.quad) for box in boxes]
    lines.sort(key=lambda line: float(line.quad[:, 0].min()))
    joined = True
    while joined:
        joined = False
        for i, left in enumerate(lines):
            for j in range(i + 1, len(lines)):
                right = lines[j]
                if _same_line(left, right):
                    points = np.concatenate([left.quad, right.quad]).astype(np.float32)
                    corners = cv2.boxPoints(cv2.minAreaRect(points)).astype(np.float32)
                    lines[i] = _as_line(order_reading(corners))
                    del lines[j]
                    joined = True
                    break
            if joined:
                break
    return lines


def _same_line(left: _Line, right: _Line) -> bool:
    small, large = sorted((left.height, right.height))
    if small < 0.7 * large:
        return False
    left_cy = float(left.quad[:, 1].mean())
    right_cy = float(right.quad[:, 1].mean())
    if abs(left_cy - right_cy) > 0.35 * large:
        return False
    gap = float(right.quad[:, 0].min() - left.quad[:, 0].max())
    return -0.3 * large <= gap <= 1.0 * large


def _plate_box(quad: FloatArray, image_w: int, image_h: int) -> tuple[int, int, int, int]:
    """The plate around its character line, as x, y, w, h clipped to the image.

    The detector's line box, grown by the margin it was trained to restore, already reaches
    the plate's edges; on the dev photos the labelled plate boxes extend a median 0.15 line
    heights above it (state names) and a few percent elsewhere.
    """
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)
    line_h = y1 - y0
    line_w = x1 - x0
    x0 -= 0.01 * line_w
    x1 += 0.01 * line_w
    y0 -= 0.1 * line_h
    y1 += 0.03 * line_h
    left = int(max(0, math.floor(x0)))
    top = int(max(0, math.floor(y0)))
    right = int(min(image_w, math.ceil(x1)))
    bottom = int(min(image_h, math.ceil(y1)))
    return left, top, max(1, right - left), max(1, bottom - top)


@dataclass(frozen=True, slots=True)
class RankedOption:
    """One way to read a line: its text, its confidence and the rank it sorts by."""

    rank: float
    text: str
    confidence: float
    char_confidences: tuple[float, ...]


def rank_options(reading: LineReading) -> list[RankedOption]:
    """The reading and its single look-alike swaps, best first by confidence x format prior.

    The confidence of an option is the geometric mean of its character confidences; the format
    prior only orders options, it does not inflate what is reported.
    """
    options = [
        RankedOption(
            reading.confidence * format_prior(reading.text),
            reading.text,
            reading.confidence,
            reading.char_confidences,
        )
    ]
    for position, (alt_char, alt_p) in enumerate(reading.runner_ups):
        if alt_p <= 0.01:
            continue
        swapped = list(reading.char_confidences)
        swapped[position] = alt_p
        text = reading.text[:position] + alt_char + reading.text[position + 1 :]
        logs = [math.log(max(c, 1e-6)) for c in swapped]
        confidence = math.exp(sum(logs) / len(logs))
        options.append(
            RankedOption(confidence * format_prior(text), text, confidence, tuple(swapped))
        )
    options.extend(_trimmed_options(reading))
    options.sort(key=lambda option: option.rank, reverse=True)
    return options


_TRIM_PENALTY = 0.85
"""Rank factor for a reading with end characters dropped: below a reading that fits a format
as read, above one that fits none (0.75)."""


def _trimmed_options(reading: LineReading) -> list[RankedOption]:
    """Over-long readings whose middle fits a known format: the line also caught a sticker,
    a stacked suffix or a frame edge at one end."""
    text = reading.text
    options: list[RankedOption] = []
    if len(text) <= 7:
        return options
    for start in range(0, 3):
        for end in range(len(text), len(text) - 3, -1):
            middle = text[start:end]
            if len(middle) < 5 or middle == text or format_prior(middle) < 1.0:
                continue
            kept = reading.char_confidences[start:end]
            logs = [math.log(max(c, 1e-6)) for c in kept]
            confidence = math.exp(sum(logs) / len(logs))
            options.append(RankedOption(confidence * _TRIM_PENALTY, middle, confidence, kept))
    return options
