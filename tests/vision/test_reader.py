"""The plate reader on plates rendered here: exact readings, boxes, confidences, CTC decoding."""

from __future__ import annotations

import string
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from agent.vision.detector import TextBox, TextDetector
from agent.vision.reader import (
    PLATE_ALPHABET,
    LineReading,
    PlateRecognizer,
    TextReader,
    apply_plate_conventions,
    decode_plate_ctc,
    format_prior,
    plate_likeness,
    rank_options,
)
from agent.vision.types import PlateRead

PLATE_W, PLATE_H = 250, 110


def render_plate_scene(
    text: str, *, seed: int = 0, at: tuple[int, int] = (200, 180)
) -> tuple[npt.NDArray[np.uint8], tuple[int, int, int, int]]:
    """A light plate with a dark frame and ``text`` on a flat car-coloured scene, blurred and
    noisy like a camera frame; returns the frame and the plate's x, y, w, h."""
    rng = np.random.default_rng(seed)
    scene = np.empty((360, 640, 3), dtype=np.uint8)
    scene[:] = rng.integers(50, 130, size=3)
    plate = np.full((PLATE_H, PLATE_W, 3), 235, dtype=np.uint8)
    cv2.rectangle(plate, (3, 3), (PLATE_W - 4, PLATE_H - 4), (40, 40, 40), 3)
    font, scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 1.7, 5
    (text_w, text_h), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = ((PLATE_W - text_w) // 2, (PLATE_H + text_h) // 2)
    cv2.putText(plate, text, origin, font, scale, (20, 20, 20), thickness, cv2.LINE_AA)
    x, y = at
    scene[y : y + PLATE_H, x : x + PLATE_W] = plate
    blurred = cv2.GaussianBlur(scene, (3, 3), 0).astype(np.float64)
    noisy = blurred + rng.normal(0.0, 4.0, scene.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), (x, y, PLATE_W, PLATE_H)


@pytest.fixture(scope="module")
def recognizer() -> PlateRecognizer:
    return PlateRecognizer.load(threads=2)


@pytest.mark.parametrize("text", ["ABC1234", "7XKP291", "GT679A", "MN83RT"])
def test_reads_rendered_plate_exactly(recognizer: PlateRecognizer, text: str) -> None:
    """A clean rendered plate is the best reading, character for character."""
    image, _ = render_plate_scene(text, seed=len(text))
    reads = recognizer.read(image)
    assert reads, "no plate found"
    assert reads[0].text == text


def test_separators_are_not_characters(recognizer: PlateRecognizer) -> None:
    """Dashes and spaces printed on a plate are dropped, not read as characters."""
    dashed, _ = render_plate_scene("KD-4821")
    spaced, _ = render_plate_scene("HWY 557", seed=3)
    assert recognizer.read(dashed)[0].text == "KD4821"
    assert recognizer.read(spaced)[0].text == "HWY557"


def test_reading_carries_box_confidences_and_candidates(recognizer: PlateRecognizer) -> None:
    """The best reading's box covers the plate, there is one confidence per character, every
    confidence is in 0..1, and the first candidate is the reading itself."""
    image, (px, py, pw, ph) = render_plate_scene("GT679A", at=(320, 60))
    best = recognizer.read(image)[0]
    assert isinstance(best, PlateRead)
    x, y, w, h = best.box
    assert px <= x + w / 2 <= px + pw
    assert py <= y + h / 2 <= py + ph
    assert len(best.char_confidences) == len(best.text)
    assert all(0.0 <= c <= 1.0 for c in (best.confidence, *best.char_confidences))
    assert best.candidates[0] == (best.text, best.confidence)
    assert all(
        set(text) <= set(string.ascii_uppercase + string.digits) for text, _ in best.candidates
    )


def _distant_plate_frame(text: str) -> npt.NDArray[np.uint8]:
    """A 1920x1080 frame with the rendered plate shrunk to about 38 x 17 pixels."""
    near, _ = render_plate_scene(text)
    far = cv2.resize(near, None, fx=0.155, fy=0.155, interpolation=cv2.INTER_AREA)
    frame = np.full((1080, 1920, 3), 90, dtype=np.uint8)
    frame[600 : 600 + far.shape[0], 1200 : 1200 + far.shape[1]] = far
    return frame


def test_distant_plate_is_read_by_the_full_resolution_pass(recognizer: PlateRecognizer) -> None:
    """A plate too small for the coarse pass is still read, because an unconvincing coarse
    result sends the frame through the detector again at full resolution; with both passes
    held to the coarse scale the same plate is not read."""
    frame = _distant_plate_frame("7XKP291")
    assert recognizer.read(frame)[0].text == "7XKP291"
    coarse_only = PlateRecognizer(
        TextDetector(recognizer.detector.session, max_side=recognizer.coarse_side),
        recognizer.reader,
    )
    assert [plate.text for plate in coarse_only.read(frame)][:1] != ["7XKP291"]


def test_empty_scene_has_no_plate(recognizer: PlateRecognizer) -> None:
    """A frame without text yields no reading rather than a guess."""
    assert recognizer.read(np.full((240, 320, 3), 100, dtype=np.uint8)) == []


def test_grayscale_frames_are_accepted_and_other_shapes_refused(
    recognizer: PlateRecognizer,
) -> None:
    """A single-channel frame reads like its colour version; a 4-channel array is a clear error."""
    image, _ = render_plate_scene("MN83RT")
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert recognizer.read(gray)[0].text == "MN83RT"
    with pytest.raises(ValueError, match="HxWx3"):
        recognizer.read(np.zeros((10, 10, 4), dtype=np.uint8))


def _steps(*classes: str) -> npt.NDArray[np.float32]:
    """Folded CTC steps, one per entry: '_' blank, '~' other symbol, else a plate character."""
    steps = np.full((len(classes), 2 + len(PLATE_ALPHABET)), 0.001, dtype=np.float32)
    for t, cls in enumerate(classes):
        column = {"_": 0, "~": 1}.get(cls)
        steps[t, column if column is not None else 2 + PLATE_ALPHABET.index(cls)] = 0.9
    return steps


def test_ctc_collapses_repeats_but_keeps_doubled_letters_split_by_blank() -> None:
    """Consecutive identical steps are one character; a blank between them makes two."""
    assert decode_plate_ctc(_steps("A", "A", "_", "A", "1", "1")).text == "AA1"


def test_ctc_other_symbols_separate_and_emit_nothing() -> None:
    """A dash or emblem step emits nothing but still separates repeated characters."""
    reading = decode_plate_ctc(_steps("7", "~", "7", "~", "~", "B"))
    assert reading.text == "77B"
    assert len(reading.char_confidences) == 3
    assert reading.runner_ups[0][0] != "7"


def _reading(text: str, alternatives: str | None = None) -> LineReading:
    runner_ups = tuple((alt, 0.2) for alt in (alternatives or "X" * len(text)))
    return LineReading(text, tuple(0.9 for _ in text), runner_ups)


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        ("HLOKTY1", "HL0KTY1"),  # US: one glyph for O and 0, recorded as the digit
        ("RK3OOAG", "RK300AG"),  # European LL DDD LL: digit positions take 0 ...
        ("ZA834C0", "ZA834CO"),  # ... letter positions take O
        ("BA2681M", "BA268IM"),  # ... and I where 1 was read in a letter position
        ("RRK828AG", "RK828AG"),  # the country band read as an extra leading letter
        ("00256M1", "00256M1"),  # digit pairs are not a European letter pair
    ],
)
def test_plate_conventions_settle_look_alikes_by_format(read: str, expected: str) -> None:
    """O/0 and I/1 are decided by the plate format, and a European band letter is dropped,
    keeping one confidence per character."""
    settled = apply_plate_conventions(_reading(read))
    assert settled.text == expected
    assert len(settled.char_confidences) == len(settled.runner_ups) == len(expected)


def test_format_prior_prefers_a_lookalike_swap_that_fits_a_known_format() -> None:
    """A reading that fits no known format yields to an almost as confident single swap that
    does (California 1ABC234), and the original stays among the candidates."""
    assert format_prior("4FCW553") > format_prior("4FCW5S3")
    reading = LineReading(
        "4FCW5S3",
        (0.99, 0.99, 0.99, 0.99, 0.99, 0.6, 0.99),
        (*((c, 0.0) for c in "4FCW5"), ("5", 0.4), ("3", 0.0)),
    )
    ranked = [option.text for option in rank_options(reading)]
    assert ranked[:2] == ["4FCW553", "4FCW5S3"]


def test_plate_likeness_ranks_serials_above_words_and_timestamps() -> None:
    """Letters-and-digits of plate length outrank all-letter words and long digit runs."""
    assert plate_likeness("7FR971") > plate_likeness("CHARTER")
    assert plate_likeness("7FR971") > plate_likeness("20140430")


def test_a_state_name_on_the_plate_is_never_reported_as_a_plate(
    recognizer: PlateRecognizer,
) -> None:
    """``ARIZONA`` (read as ``ARIZ0NA`` too) is printed on the plate, never its serial: a
    frame whose only lettering is a state's name has no plate, and next to a plate the name
    is not among the plates found."""
    image, _ = render_plate_scene("ARIZONA", seed=3)
    assert recognizer.read(image) == []
    image, _ = render_plate_scene("7XKP291", seed=2, at=(200, 200))
    cv2.putText(image, "ARIZONA", (40, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 4)
    texts = [plate.text for plate in recognizer.read(image)]
    assert texts[0] == "7XKP291"
    assert not any(text in ("ARIZONA", "ARIZ0NA") for text in texts)


def test_overlong_reading_yields_to_its_middle_when_that_fits_a_format() -> None:
    """An 8-character reading that fits no format ranks below its 7-character middle that
    does (the line caught a sticker or frame edge); the original stays a candidate."""
    reading = LineReading("4AYX8803", (0.5, *(0.99,) * 7), tuple(("X", 0.0) for _ in range(8)))
    ranked = [option.text for option in rank_options(reading)]
    assert ranked[0] == "AYX8803"
    assert "4AYX8803" in ranked


class _CountingDetector(TextDetector):
    """The real detector, remembering the scale of each pass."""

    def __init__(self, source: TextDetector) -> None:
        super().__init__(source.session)
        self.passes: list[int | None] = []

    def detect(
        self, image_bgr: npt.NDArray[np.uint8], *, max_side: int | None = None
    ) -> list[TextBox]:
        self.passes.append(max_side)
        return super().detect(image_bgr, max_side=max_side)


class _CountingReader(TextReader):
    """The real reader, remembering how many lines each call read."""

    def __init__(self, source: TextReader) -> None:
        super().__init__(source._session, path=Path("plate_text_reader.onnx"))
        self.calls: list[int] = []

    def read(
        self, image_bgr: npt.NDArray[np.uint8], quads: list[npt.NDArray[np.float32]]
    ) -> list[LineReading]:
        self.calls.append(len(quads))
        return super().read(image_bgr, quads)


def _counting(
    recognizer: PlateRecognizer,
) -> tuple[PlateRecognizer, _CountingDetector, _CountingReader]:
    detector = _CountingDetector(recognizer.detector)
    reader = _CountingReader(recognizer.reader)
    return PlateRecognizer(detector, reader), detector, reader


def _hd_frame(text: str) -> npt.NDArray[np.uint8]:
    """A 1280x720 frame with a plate large enough for the coarse pass."""
    image, _ = render_plate_scene(text, seed=5)
    return np.asarray(cv2.resize(image, (1280, 720)), dtype=np.uint8)


def test_confident_long_reading_outside_known_formats_settles_at_the_coarse_pass(
    recognizer: PlateRecognizer,
) -> None:
    """A plate in a format the list does not know (letter, five digits, letter) but read in full
    and with confidence is not looked at again at full resolution: formats are evidence, not a
    whitelist, and the full pass costs four times the coarse one."""
    assert format_prior("K17965K") < 1.0
    counting, detector, _ = _counting(recognizer)
    assert counting.read(_hd_frame("K17965K"))[0].text == "K17965K"
    assert detector.passes == [counting.coarse_side]


def test_short_reading_outside_known_formats_gets_the_full_resolution_pass(
    recognizer: PlateRecognizer,
) -> None:
    """A five-character reading in no known format may be a plate the coarse box clipped, so
    the frame goes through the detector again at full resolution."""
    assert format_prior("3127K") < 1.0
    counting, detector, _ = _counting(recognizer)
    assert counting.read(_hd_frame("3127K"))[0].text == "3127K"
    assert detector.passes == [counting.coarse_side, counting.detector.max_side]


def test_lines_that_cannot_outscore_a_sure_plate_are_not_read(
    recognizer: PlateRecognizer,
) -> None:
    """Lines are read tallest first, and once one is a convincing plate (or scores at least
    what a shorter line could reach: the square root of its height over the tallest's) the
    rest are left unread; a plate whose every character is sure gets no second looks unless
    told to look again below a higher bar."""
    image, _ = render_plate_scene("7XKP291", seed=2, at=(200, 200))
    for row, caption in enumerate(("DEALER AUTO SALES", "SERVICE 555 0123")):
        cv2.putText(
            image, caption, (40, 40 + 40 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (20, 20, 20), 2
        )
    counting, detector, reader = _counting(recognizer)
    assert counting.read(image)[0].text == "7XKP291"
    found = detector.detect(image, max_side=counting.coarse_side)
    assert len(found) >= 3, "the captions should be found as text lines too"
    assert reader.calls == [1]
    counting.second_look_below = 1.1
    reader.calls.clear()
    assert counting.read(image)[0].text == "7XKP291"
    assert reader.calls == [1, len(counting.second_looks)]


class _ShapeRecordingSession:
    """Stands in for the detector's onnxruntime session: records the input shape it is given
    and returns an empty probability map of that size."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def get_inputs(self) -> list[object]:
        class _Input:
            name = "x"

        return [_Input()]

    def run(self, _outputs: object, feeds: dict[str, npt.NDArray[np.float32]]) -> list[object]:
        (tensor,) = feeds.values()
        self.shapes.append(tuple(tensor.shape))
        return [np.zeros((1, 1, *tensor.shape[2:]), dtype=np.float32)]


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ((720, 1280), (704, 1280)),  # a 720p frame is read at its own resolution
        ((1080, 1920), (704, 1280)),  # 1080p costs what 720p does
        ((960, 1280), (832, 1120)),  # 4:3: the long-side cap alone would keep 1280x960
        ((480, 640), (480, 640)),  # small frames are never enlarged
    ],
)
def test_full_resolution_pass_is_bounded_by_area_as_well_as_long_side(
    frame: tuple[int, int], expected: tuple[int, int]
) -> None:
    """The detector's working memory follows its input's area, so the full pass shrinks a
    frame until both its long side and its area fit: a 4:3 or 1080p frame costs no more than a
    720p one, and every side stays a multiple of 32."""
    session = _ShapeRecordingSession()
    detector = TextDetector(session)  # type: ignore[arg-type]
    detector.detect(np.zeros((*frame, 3), dtype=np.uint8))
    (shape,) = session.shapes
    assert shape[2:] == expected
    assert shape[2] % 32 == 0
    assert shape[3] % 32 == 0
    assert shape[2] * shape[3] <= detector.max_pixels * 1.05


def test_sessions_plan_no_per_shape_memory_pattern() -> None:
    """Frames of two detector sizes and lines of many widths would each keep a planned memory
    pattern; the sessions are built without one (it cost ~75 MB of peak RSS and no speed)."""
    recognizer = PlateRecognizer.load(threads=1)
    for session in (recognizer.detector.session, recognizer.reader._session):
        assert session.get_session_options().enable_mem_pattern is False
