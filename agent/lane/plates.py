"""Licence plates in the lane core: multi-frame voting and matching against registered vehicles.

A fixed lane camera sees the same plate in many frames while the vehicle creeps to the booth
and stops. One frame can be misread (glare, a bolt head next to a character, motion blur), but
different frames are rarely misread the same way, so the readings of one crossing are combined
character by character, each character weighted by the reader's confidence in it:

1. the plate length is chosen by confidence-weighted vote over the readings (a reading that
   dropped or added a character must not shift every character after it);
2. readings of that length vote per position; the runner-up readings a frame offered vote too,
   where they differ from its best reading, so a close second is not thrown away;
3. candidate strings are built from the strongest characters per position (and their
   look-alikes), scored by the product of per-position vote shares times the share of the
   evidence that agreed on the length; readings of other lengths stay as whole-string
   candidates with their own, smaller, score;
4. jurisdiction formats (:mod:`agent.lane.plate_formats`: US states, every Mexican border state
   and the federal plates, Canadian provinces, the European plates seen most) are evidence,
   not rules: a candidate that fits no known format keeps half of its score, so vanity plates
   still read, but a look-alike character (O/0, I/1, B/8, S/5, Z/2), where readers are least
   reliable, goes the way the format says: ``TOE003`` read as ``T0E003`` votes ``TOE003``;
5. a jurisdiction's or country's name read instead of the plate (``ARIZONA``, ``USA``: printed
   on the plate, never its serial) does not vote at all.

Voting never looks at the registered vehicles: a misread is never "corrected" into a match.
Matching then compares the voted text with the plates registered to the holders of the
crossing's valid cards, exactly first and then with look-alike characters folded together
(O/0, I/1, B/8, S/5, Z/2). The two outcomes are reported differently because a look-alike
match can hide a different vehicle: ``8ABC123`` and ``BABC123`` are different plates.
"""

from __future__ import annotations

import enum
import functools
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.lane.credentials import RegisteredVehicle
from agent.lane.events import PlateSeen, VisionFault
from agent.lane.plate_formats import compiled_formats, plate_legends

LOOKALIKE_PAIRS: tuple[tuple[str, str], ...] = (
    ("O", "0"),
    ("I", "1"),
    ("B", "8"),
    ("S", "5"),
    ("Z", "2"),
)
"""Letter/digit pairs a plate reader (and a person) confuses; plate fonts make them close."""

_FOLD = str.maketrans(dict(LOOKALIKE_PAIRS))
_PARTNER: dict[str, str] = {
    **dict(LOOKALIKE_PAIRS),
    **{digit: letter for letter, digit in LOOKALIKE_PAIRS},
}

_COMPILED_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = compiled_formats()
"""Every standard format of :data:`agent.lane.plate_formats.JURISDICTIONS`, compiled once."""
_EVIDENCE_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = compiled_formats(evidence_only=True)
"""The formats specific enough to rank readings (see ``JurisdictionFormats.evidence``)."""

MAX_PLATE_LENGTH = 16
"""Longer readings are reader garbage (no jurisdiction issues plates this long)."""

OFF_FORMAT_FACTOR = 0.5
"""Score kept by a candidate that fits no known plate format (evidence, not a rule)."""

_OPTIONS_PER_POSITION = 3
_BEAM_WIDTH = 48
LOOKALIKE_SHARE = 0.75
"""Score kept per look-alike swap (O for 0, 8 for B…) that makes an off-format plate fit one.

Plate fonts draw these pairs nearly alike and readers lean one way (the shipped reader reads
almost every O as 0), so a confident reader is weak evidence between them. At 3/4 per swap, a
plate made to fit a standard format by one or two swaps beats the off-format reading (which
keeps half its score); where both or neither fit, the reader's choice stands."""
ZERO_SWAP_SHARE = 0.9
"""Score kept per O/0 swap, higher than other look-alikes': the reader writes O as 0 on every
plate but the European two-letters/three-digits/two-letters series (``agent.vision.reader``),
so a 0 it read says "O or 0" and the format decides, while a 2 it read is a 2 it saw. Where
one O/0 swap and one other swap each make a reading fit, the O/0 swap wins."""
_MAX_LOOKALIKE_SWAPS = 2
_SWAPPED_CANDIDATES = 8
"""Only the strongest candidates get look-alike variants (bounds a vote to about a millisecond)."""
_LOOKALIKE_FLOOR = 0.02
"""Vote share given to an unvoted look-alike partner, so frames torn between them can tie."""


def normalise_plate(text: str) -> str:
    """Plate text as readers and registrations are compared: upper case, A-Z and 0-9 only."""
    return "".join(ch for ch in text.upper() if ch.isascii() and ch.isalnum())


def fold_lookalikes(text: str) -> str:
    """Map each look-alike letter to its digit, so look-alike readings compare equal."""
    return normalise_plate(text).translate(_FOLD)


_FOLDED_LEGENDS: frozenset[str] = frozenset(fold_lookalikes(legend) for legend in plate_legends())
"""The plate legends (:func:`agent.lane.plate_formats.plate_legends`), look-alikes folded."""


def is_plate_legend(text: str) -> bool:
    """``text`` is a jurisdiction's or a country's name as printed on plates (``ARIZONA``,
    ``QUEBEC``, ``USA``), look-alikes folded so ``ARIZ0NA`` counts: lettering beside the
    serial, never the serial. A vanity plate spelling exactly a state's name is the price."""
    return fold_lookalikes(text) in _FOLDED_LEGENDS


def plate_formats(text: str) -> tuple[str, ...]:
    """Jurisdictions whose standard plate format ``text`` fits (possibly several, or none)."""
    found = dict.fromkeys(name for name, pattern in _COMPILED_FORMATS if pattern.fullmatch(text))
    return tuple(found)


@functools.lru_cache(maxsize=4096)
def fits_known_format(text: str) -> bool:
    """``text`` fits a format specific enough to count as evidence that it is read right.

    Cached: one vote asks about the same few dozen strings many times, and each answer tries
    about a hundred patterns."""
    return any(pattern.fullmatch(text) for _, pattern in _EVIDENCE_FORMATS)


@dataclass(frozen=True, slots=True)
class PlateCandidate:
    """One possible plate text and the voting's confidence in it (0..1)."""

    text: str
    confidence: float


@dataclass(frozen=True, slots=True)
class PlateVote:
    """The plate of one crossing, combined from all its readings."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...]
    """Vote share of each character of ``text`` at its position (0..1)."""
    candidates: tuple[PlateCandidate, ...]
    """Best first; ``candidates[0]`` is ``text``."""
    readings: int
    """Readings that took part in the vote."""
    formats: tuple[str, ...]
    """Jurisdictions whose standard format ``text`` fits."""
    best_reading: PlateSeen
    """The single reading that agrees with ``text`` with the highest confidence (its crop is
    the image sent with the event), or the most confident reading when none agrees."""


@dataclass(slots=True)
class _Position:
    weights: dict[str, float]


def vote(readings: Sequence[PlateSeen], *, top_n: int = 5) -> PlateVote | None:
    """Combine the readings of one crossing; None when there is nothing legible.

    Confidence-weighted and character-level as described in the module docstring. ``top_n``
    bounds the candidates returned (at least 1).
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    # A legend read instead of the plate (the state's name, ``USA``) says nothing about the
    # serial: it does not vote, and a crossing with nothing else reads as no plate.
    usable = [
        (reading, text)
        for reading in readings
        if 0 < len(text := normalise_plate(reading.text)) <= MAX_PLATE_LENGTH
        and reading.confidence > 0.0
        and not is_plate_legend(text)
    ]
    if not usable:
        return None
    by_length: dict[int, float] = {}
    for reading, text in usable:
        by_length[len(text)] = by_length.get(len(text), 0.0) + reading.confidence
    total_weight = sum(by_length.values())
    # Ties go to the longer reading: a dropped character is a likelier error than an added one.
    length = max(by_length, key=lambda n: (by_length[n], n))
    length_share = by_length[length] / total_weight

    same_length = [(r, t) for r, t in usable if len(t) == length]
    positions = _position_votes(same_length, length)
    scored: dict[str, float] = {}
    for text, evidence in _beam(positions, len(same_length)):
        scored[text] = evidence * length_share
    for reading, text in usable:
        if len(text) != length:
            # On the same scale as the beam's strings: the chance that every character is
            # right (the product of the character confidences, not their geometric mean).
            share = by_length[len(text)] / total_weight
            whole = math.prod(_per_char_confidences(reading, text))
            scored[text] = max(scored.get(text, 0.0), share * whole)
    strongest = sorted(scored.items(), key=lambda item: -item[1])[:_SWAPPED_CANDIDATES]
    for text, score in strongest:
        if fits_known_format(text):
            continue
        for variant, share in _lookalike_variants(text):
            corrected = score * share
            if corrected > scored.get(variant, 0.0) and fits_known_format(variant):
                scored[variant] = corrected
    ranked = sorted(
        ((text, score * _format_factor(text)) for text, score in scored.items()),
        key=lambda item: (-item[1], item[0]),
    )[:top_n]
    best_text, best_score = ranked[0]
    char_confidences = _char_shares(positions, best_text, len(same_length))
    return PlateVote(
        text=best_text,
        confidence=_unit(best_score),
        char_confidences=char_confidences,
        candidates=tuple(PlateCandidate(text, _unit(score)) for text, score in ranked),
        readings=len(usable),
        formats=plate_formats(best_text),
        best_reading=_best_reading(usable, best_text),
    )


def _position_votes(readings: Sequence[tuple[PlateSeen, str]], length: int) -> list[_Position]:
    positions = [_Position({}) for _ in range(length)]
    for reading, text in readings:
        per_char = _per_char_confidences(reading, text)
        for index, ch in enumerate(text):
            weights = positions[index].weights
            weights[ch] = weights.get(ch, 0.0) + per_char[index]
        # A frame's runner-up readings share what its best reading did not take, in proportion
        # to their confidence, at the positions where they differ from it: one frame never
        # weighs more than one vote per position, however many alternatives it lists.
        alternatives: list[dict[str, float]] = [{} for _ in range(length)]
        for alternative, confidence in reading.candidates:
            other = normalise_plate(alternative)
            if len(other) != length or other == text:
                continue
            for index, (mine, theirs) in enumerate(zip(text, other, strict=True)):
                if mine != theirs:
                    seen = alternatives[index]
                    seen[theirs] = max(seen.get(theirs, 0.0), min(1.0, max(0.0, confidence)))
        for index, offered in enumerate(alternatives):
            left = max(0.0, 1.0 - per_char[index])
            total = sum(offered.values())
            scale = min(1.0, left / total) if total > 0.0 else 0.0
            weights = positions[index].weights
            for ch, confidence in offered.items():
                weights[ch] = weights.get(ch, 0.0) + confidence * scale
    return positions


def _per_char_confidences(reading: PlateSeen, text: str) -> tuple[float, ...]:
    given = reading.char_confidences
    if len(given) == len(text):
        return tuple(min(1.0, max(0.0, c)) for c in given)
    # A reader that gave no per-character figures: spread the plate confidence evenly.
    per_char = min(1.0, max(0.0, reading.confidence)) ** (1.0 / len(text))
    return (per_char,) * len(text)


def _beam(positions: Sequence[_Position], readings: int) -> list[tuple[str, float]]:
    """Highest-product strings over the per-position vote shares (a small beam search)."""
    beam: list[tuple[str, float]] = [("", 1.0)]
    for position in positions:
        options = _options(position, readings)
        beam = sorted(
            ((prefix + ch, score * share) for prefix, score in beam for ch, share in options),
            key=lambda item: -item[1],
        )[:_BEAM_WIDTH]
    return beam


def _options(position: _Position, readings: int) -> list[tuple[str, float]]:
    shares = {ch: weight / readings for ch, weight in position.weights.items()}
    strongest = sorted(shares.items(), key=lambda item: (-item[1], item[0]))
    options = dict(strongest[:_OPTIONS_PER_POSITION])
    for ch, _share in strongest[:_OPTIONS_PER_POSITION]:
        partner = _PARTNER.get(ch)
        if partner is not None and partner not in options:
            options[partner] = max(shares.get(partner, 0.0), _LOOKALIKE_FLOOR)
    return list(options.items())


def _lookalike_variants(text: str) -> list[tuple[str, float]]:
    """``text`` with one or two of its look-alike characters swapped, and the share of the
    score each variant keeps (``ZERO_SWAP_SHARE`` per O/0 swap, ``LOOKALIKE_SHARE`` per other)."""
    positions = [index for index, ch in enumerate(text) if ch in _PARTNER]
    variants: list[tuple[str, float]] = []
    for count in range(1, _MAX_LOOKALIKE_SWAPS + 1):
        for chosen in itertools.combinations(positions, count):
            chars = list(text)
            share = 1.0
            for index in chosen:
                share *= ZERO_SWAP_SHARE if chars[index] in "O0" else LOOKALIKE_SHARE
                chars[index] = _PARTNER[chars[index]]
            variants.append(("".join(chars), share))
    return variants


def _char_shares(positions: Sequence[_Position], text: str, readings: int) -> tuple[float, ...]:
    if len(text) != len(positions) or readings == 0:
        return ()
    return tuple(
        _unit(position.weights.get(ch, 0.0) / readings)
        for position, ch in zip(positions, text, strict=True)
    )


def _format_factor(text: str) -> float:
    return 1.0 if fits_known_format(text) else OFF_FORMAT_FACTOR


def _unit(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4) if math.isfinite(value) else 0.0


def _best_reading(usable: Sequence[tuple[PlateSeen, str]], text: str) -> PlateSeen:
    agreeing = [reading for reading, read_text in usable if read_text == text]
    pool = agreeing or [reading for reading, _ in usable]
    return max(pool, key=lambda reading: reading.confidence)


class PlateMatchKind(enum.StrEnum):
    """How the voted plate relates to the vehicles registered to the crossing's card holders."""

    EXACT = "exact"
    """The voted plate is one of the registered plates, character for character."""
    LOOKALIKE = "lookalike"
    """Equal only with look-alike characters folded (O/0, I/1, B/8, S/5, Z/2)."""
    NOT_REGISTERED = "not_registered"
    """A plate was read and it is registered to none of the holders of the valid cards."""
    NOT_READ = "not_read"
    """The camera worked but no plate was read with enough confidence."""
    CAMERA_UNAVAILABLE = "camera_unavailable"
    """The camera gave no frames while the vehicle was at the booth."""
    READER_UNAVAILABLE = "reader_unavailable"
    """The plate models could not be loaded or failed while the vehicle was at the booth."""
    NOT_CHECKED = "not_checked"
    """No valid card, so there is no registration to compare with."""


@dataclass(frozen=True, slots=True)
class PlateMatch:
    """Result of comparing the voted plate with the registered vehicles."""

    kind: PlateMatchKind
    vehicle: RegisteredVehicle | None = None
    """The registered vehicle matched (EXACT or LOOKALIKE), else None."""


def match_plate(
    vote_result: PlateVote | None, registered: Iterable[RegisteredVehicle]
) -> PlateMatch:
    """Compare the voted plate with ``registered``: exact first, then look-alike folded.

    Only the voted text is compared, never the lower-ranked candidates: a candidate the
    frames did not prefer is not evidence that the registered vehicle is present.
    """
    if vote_result is None:
        return PlateMatch(PlateMatchKind.NOT_READ)
    vehicles = tuple(registered)
    read = normalise_plate(vote_result.text)
    for vehicle in vehicles:
        if normalise_plate(vehicle.plate) == read:
            return PlateMatch(PlateMatchKind.EXACT, vehicle)
    folded = fold_lookalikes(read)
    for vehicle in vehicles:
        if fold_lookalikes(vehicle.plate) == folded:
            return PlateMatch(PlateMatchKind.LOOKALIKE, vehicle)
    return PlateMatch(PlateMatchKind.NOT_REGISTERED)


@dataclass(frozen=True, slots=True)
class PlateCheck:
    """How a lane with a camera weighs plates (from the ``[vision]`` config section)."""

    top_n: int = 5
    """Candidates kept per crossing."""
    min_confidence: float = 0.2
    """A voted plate below this confidence counts as not read."""


@dataclass(frozen=True, slots=True)
class PlateOutcome:
    """Everything the lane concluded about the plate of one crossing."""

    vote: PlateVote | None
    """The voted plate, also when it was too uncertain to match (None: nothing legible)."""
    match: PlateMatch


def assess_plate(
    readings: Sequence[PlateSeen],
    faults: Iterable[VisionFault],
    registered: Iterable[RegisteredVehicle],
    *,
    any_valid_card: bool,
    check: PlateCheck,
) -> PlateOutcome:
    """Vote the crossing's readings and match the result against ``registered``.

    Without a legible plate the outcome says why: a camera fault outranks a reader fault,
    which outranks "not read" (the vehicle was there and the reader found nothing). With a
    plate but no valid card there is no registration to compare with (``NOT_CHECKED``).
    """
    voted = vote(readings, top_n=check.top_n)
    if voted is None or voted.confidence < check.min_confidence:
        present = set(faults)
        if VisionFault.CAMERA_UNAVAILABLE in present:
            kind = PlateMatchKind.CAMERA_UNAVAILABLE
        elif VisionFault.READER_UNAVAILABLE in present:
            kind = PlateMatchKind.READER_UNAVAILABLE
        else:
            kind = PlateMatchKind.NOT_READ
        return PlateOutcome(voted, PlateMatch(kind))
    if not any_valid_card:
        return PlateOutcome(voted, PlateMatch(PlateMatchKind.NOT_CHECKED))
    return PlateOutcome(voted, match_plate(voted, registered))
