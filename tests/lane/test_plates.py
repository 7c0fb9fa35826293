"""Plate voting, jurisdiction formats, look-alike matching and the plate rules of the policy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.lane.correlator import (
    CardObservation,
    ClosedBy,
    CorrelationSettings,
    Crossing,
    CrossingCorrelator,
    OpenedBy,
)
from agent.lane.credentials import (
    Credential,
    CredentialStatus,
    DocumentType,
    Program,
    RegisteredVehicle,
)
from agent.lane.events import LoopChanged, PlateSeen, TagRead, Tick, VisionChanged, VisionFault
from agent.lane.plate_formats import (
    FAMILIES,
    JURISDICTIONS,
    JurisdictionFormats,
    compiled_formats,
    plate_legends,
    template_pattern,
    template_text,
)
from agent.lane.plates import (
    PlateCheck,
    PlateMatchKind,
    assess_plate,
    fits_known_format,
    fold_lookalikes,
    is_plate_legend,
    match_plate,
    normalise_plate,
    plate_formats,
    vote,
)
from agent.lane.policy import LanePolicy, LaneType, Reason, Recommendation, decide

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()
CHECK = PlateCheck(top_n=5, min_confidence=0.2)
CAMERA_LANE = LanePolicy(
    lane_type=LaneType.TRUSTED_TRAVELLER,
    allowed_programs=frozenset({Program.SENTRI}),
    plate_check=CHECK,
)
CARD_ONLY_LANE = LanePolicy(LaneType.TRUSTED_TRAVELLER, frozenset({Program.SENTRI}))
GENERAL_CAMERA_LANE = LanePolicy(LaneType.GENERAL, frozenset({Program.SENTRI}), CHECK)


def seen(
    text: str,
    confidence: float = 0.9,
    *,
    at: float = NOW,
    chars: tuple[float, ...] | None = None,
    candidates: tuple[tuple[str, float], ...] = (),
    crop: bytes = b"",
) -> PlateSeen:
    per_char = chars if chars is not None else (confidence,) * len(text)
    return PlateSeen(at, text, confidence, per_char, candidates, crop)


def holder(
    ref: str, *plates: str, status: CredentialStatus = CredentialStatus.ACTIVE
) -> Credential:
    return Credential(
        ref=ref,
        document_type=DocumentType.TRUSTED_TRAVELLER_CARD,
        program=Program.SENTRI,
        status=status,
        valid_from=datetime(2024, 1, 1, tzinfo=UTC),
        valid_until=datetime(2030, 1, 1, tzinfo=UTC),
        holder_ref=f"H-{ref[-4:]}",
        vehicles=tuple(RegisteredVehicle(plate, "US-CA") for plate in plates),
    )


def crossing(
    refs: tuple[str, ...],
    plates: tuple[PlateSeen, ...] = (),
    faults: tuple[VisionFault, ...] = (),
) -> Crossing:
    return Crossing(
        opened_at=NOW - 5,
        closed_at=NOW,
        opened_by=OpenedBy.LOOP,
        closed_by=ClosedBy.DEPARTURE,
        vehicle_detected=True,
        cards=tuple(CardObservation(ref, 3, NOW - 4, NOW - 1, -50.0, (1,), None) for ref in refs),
        plates=plates,
        vision_faults=faults,
    )


OWNER = holder("E2800000000000000000A001", "7ABC123", "8YOD4061")
SPOUSE = holder("E2800000000000000000A002", "8XYZ555", "4DEF321")
REVOKED_OWNER = holder("E2800000000000000000A003", "9RRR999", status=CredentialStatus.REVOKED)
CACHE = {c.ref: c for c in (OWNER, SPOUSE, REVOKED_OWNER)}


# --- voting ---


def test_vote_of_nothing_legible_is_none() -> None:
    assert vote([]) is None
    assert vote([seen("", 0.9), seen("--", 0.9), seen("7ABC123", 0.0)]) is None


def test_a_single_reading_is_its_own_vote_with_its_confidence() -> None:
    result = vote([seen("7ABC123", 0.9)])
    assert result is not None
    assert result.text == "7ABC123"
    assert result.readings == 1
    assert result.char_confidences == (0.9,) * 7
    assert result.confidence == pytest.approx(0.9**7, abs=1e-3)
    assert result.candidates[0].text == "7ABC123"


def test_character_level_voting_outvotes_each_frames_single_misread() -> None:
    """Every frame has one wrong character, never the same one: the vote reads the plate."""
    frames = [seen("7ABC128"), seen("7A8C123"), seen("1ABC123"), seen("7ABG123")]
    result = vote(frames)
    assert result is not None
    assert result.text == "7ABC123"
    assert result.readings == 4


def test_confident_characters_outweigh_more_numerous_unsure_ones() -> None:
    """Weights are per-character confidences, not head counts."""
    sure = seen("7ABC123", chars=(0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95))
    unsure = [
        seen("7ABC173", chars=(0.9, 0.9, 0.9, 0.9, 0.9, 0.2, 0.9)),
        seen("7ABC173", chars=(0.9, 0.9, 0.9, 0.9, 0.9, 0.3, 0.9)),
    ]
    result = vote([sure, *unsure])
    assert result is not None
    assert result.text == "7ABC123"


def test_plate_length_is_voted_so_a_dropped_character_does_not_shift_the_rest() -> None:
    frames = [seen("7ABC123"), seen("7ABC123"), seen("7AB123", 0.95)]
    result = vote(frames)
    assert result is not None
    assert result.text == "7ABC123"
    texts = [c.text for c in result.candidates]
    assert "7AB123" in texts, "a reading of another length stays a whole-string candidate"
    assert (
        result.candidates[0].confidence
        > {c.text: c.confidence for c in result.candidates}["7AB123"]
    )


def test_a_frames_runner_up_reading_carries_weight_where_it_differs() -> None:
    """Two frames unsure between 8 and B at one position, one frame sure: runner-ups count."""
    frames = [
        seen(
            "BXYZ555",
            chars=(0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9),
            candidates=(("BXYZ555", 0.5), ("8XYZ555", 0.45)),
        ),
        seen(
            "BXYZ555",
            chars=(0.5, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9),
            candidates=(("BXYZ555", 0.5), ("8XYZ555", 0.45)),
        ),
        seen("8XYZ555", chars=(0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9)),
    ]
    result = vote(frames)
    assert result is not None
    assert result.text == "8XYZ555"


def test_a_frame_listing_many_alternatives_still_casts_one_vote_per_position() -> None:
    unsure = seen(
        "8MKX145",
        0.81,
        chars=(0.35, 0.68, 0.94, 1.0, 1.0, 1.0, 1.0),
        candidates=(("8MKX145", 0.81), ("BMKX145", 0.87), ("BHKX145", 0.78), ("BMIX145", 0.58)),
    )
    sure = seen("8MKX145", 0.98)
    result = vote([unsure, sure])
    assert result is not None
    assert result.text == "8MKX145"
    assert result.char_confidences[0] == pytest.approx((0.35 + 0.98) / 2, abs=1e-3)


def test_jurisdiction_format_decides_between_lookalikes_the_frames_are_torn_on() -> None:
    """Equal evidence for O and 0 in a digit slot of a California plate: the format picks 0."""
    frames = [seen("7ABC1O3"), seen("7ABC103")]
    result = vote(frames)
    assert result is not None
    assert result.text == "7ABC103"
    assert "US-CA" in result.formats
    assert [c.text for c in result.candidates][:2] == ["7ABC103", "7ABC1O3"]


def test_a_lookalike_that_breaks_every_format_is_swapped_for_the_one_that_fits() -> None:
    """Readers read most O as 0: a lone T0E003 fits no format, TOE003 fits New Mexico's."""
    result = vote([seen("T0E003", 0.95)])
    assert result is not None
    assert result.text == "TOE003"
    assert "US-NM" in result.formats
    texts = [c.text for c in result.candidates]
    assert texts[0] == "TOE003"
    assert "T0E003" in texts[:3], "the reading as read stays a candidate"
    assert result.confidence < 0.95**6, "a swap costs confidence"


def test_a_lookalike_swap_never_overrides_a_reading_that_fits_a_format() -> None:
    """1ABC234 (California) could be IABC234 (Ontario): both fit, the reader decides."""
    result = vote([seen("1ABC234")])
    assert result is not None
    assert result.text == "1ABC234"


def test_an_o_for_0_swap_beats_another_lookalike_swap_when_each_makes_a_format_fit() -> None:
    """The reader writes every O as 0 outside the European series, so a 0 it read is weak
    evidence; a 2 it read is a 2 it saw. ``JL0402`` fits no format; ``JLO402`` (Canadian
    LLL DDD, one O/0 swap) and ``JL040Z`` (one 2/Z swap) both do: the O/0 swap wins."""
    assert not fits_known_format("JL0402")
    assert fits_known_format("JLO402")
    assert fits_known_format("JL040Z")
    result = vote([seen("JL0402", 0.95)] * 5)
    assert result is not None
    assert result.text == "JLO402"
    assert "JL040Z" in [candidate.text for candidate in result.candidates]


def test_format_is_evidence_not_a_rule_so_vanity_plates_still_read() -> None:
    result = vote([seen("LUVMYCAR", 0.95)] * 3)
    assert result is not None
    assert result.text == "LUVMYCAR"
    assert result.formats == ()
    assert 0.2 < result.confidence < 0.95


def test_candidates_are_bounded_ranked_and_first_is_the_text() -> None:
    frames = [seen("7ABC123"), seen("7ABC128"), seen("1ABG123"), seen("7A8C123")]
    result = vote(frames, top_n=3)
    assert result is not None
    assert len(result.candidates) == 3
    assert result.candidates[0].text == result.text
    confidences = [c.confidence for c in result.candidates]
    assert confidences == sorted(confidences, reverse=True)
    with pytest.raises(ValueError, match="top_n"):
        vote(frames, top_n=0)


def test_best_reading_is_the_most_confident_frame_that_agrees_with_the_vote() -> None:
    frames = [
        seen("7ABC128", 0.99, crop=b"wrong"),
        seen("7ABC123", 0.8, crop=b"good"),
        seen("7ABC123", 0.9, crop=b"best"),
        seen("7ABC123", 0.7, crop=b"weak"),
    ]
    result = vote(frames)
    assert result is not None
    assert result.best_reading.crop_jpeg == b"best"


def test_reader_output_is_normalised_before_voting() -> None:
    result = vote([seen("7abc-123", chars=(0.9,) * 7)])
    assert result is not None
    assert result.text == "7ABC123"


@given(
    st.lists(
        st.tuples(
            st.text(alphabet="ABCOSZ0125789-", min_size=0, max_size=10),
            st.floats(min_value=0.0, max_value=1.0),
        ),
        max_size=12,
    )
)
def test_vote_always_returns_a_well_formed_result_or_none(
    readings: list[tuple[str, float]],
) -> None:
    result = vote([seen(text, confidence) for text, confidence in readings])
    if result is None:
        return
    assert result.text
    assert result.text == normalise_plate(result.text)
    assert 0.0 <= result.confidence <= 1.0
    assert result.candidates[0].text == result.text
    assert all(0.0 <= c.confidence <= 1.0 for c in result.candidates)
    assert len({c.text for c in result.candidates}) == len(result.candidates)


# --- formats and look-alikes ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7ABC123", "US-CA"),
        ("ABC1234", "US-TX"),
        ("ABC123", "US-NM"),
        ("AB123C", "CA-BC"),
        ("ABCD123", "CA-ON"),
        ("ABC123D", "MX-BCN"),
        ("ABC1234", "MX-TAM"),
        ("12AB3C", "MX-FED"),
        ("RK605AB", "EU-SK"),
        ("BMW1234", "EU-DE"),
        ("BRA2E19", "SA-BR"),
    ],
)
def test_standard_plate_formats_are_recognised(text: str, expected: str) -> None:
    assert expected in plate_formats(text)


def test_every_border_jurisdiction_has_formats_and_every_entry_names_its_source() -> None:
    codes = {entry.code for entry in JURISDICTIONS}
    border = {"US-CA", "US-AZ", "US-NM", "US-TX", "MX-BCN", "MX-SON", "MX-CHH", "MX-COA"}
    assert border | {"MX-NLE", "MX-TAM", "MX-FED"} <= codes
    assert len(codes) == len(JURISDICTIONS), "one entry per jurisdiction"
    for entry in JURISDICTIONS:
        assert entry.family in FAMILIES
        assert entry.templates, entry.code
        assert len(entry.source) > 20, f"{entry.code} names no source"
        for template in entry.templates:
            assert 2 <= len(template_text(template)) <= 8, template


def test_mexican_formats_leave_out_the_letters_the_standard_excludes() -> None:
    """NOM-001-SCT-2-2016 never issues I, O or Q in a letter position."""
    assert "MX-BCN" in plate_formats("ABC123D")
    assert not any(code.startswith("MX-") for code in plate_formats("AOC123D"))


def test_template_separators_are_printed_but_not_part_of_the_plate() -> None:
    assert template_text("LLL-DD·DD") == "LLLDDDD"
    assert template_pattern("LD A", letters="AB") == "[AB][0-9][AB0-9]"
    with pytest.raises(ValueError, match="not L, D, A"):
        template_pattern("LLX")


def test_formats_too_loose_to_be_evidence_are_reported_but_do_not_rank() -> None:
    """Germany's area-code format fits most short readings: it is named in ``formats`` but a
    reading that fits only it is still off-format for voting."""
    assert plate_formats("AYX88") == ("EU-DE",)
    assert not fits_known_format("AYX88")
    loose = JurisdictionFormats("XX", "Loose", "EU", ("LLDD",), "a test entry", evidence=False)
    assert compiled_formats((loose,), evidence_only=True) == ()
    assert len(compiled_formats((loose,))) == 1


def test_a_reading_outside_every_format_is_reported_as_read_never_forced_into_one() -> None:
    """No look-alike swap makes K7X9Q fit a format: the vote keeps it and names no format."""
    result = vote([seen("K7X9Q", 0.97)] * 3)
    assert result is not None
    assert result.text == "K7X9Q"
    assert result.formats == ()


@pytest.mark.parametrize("legend", ["USA", "ARIZ0NA", "QUEBEC", "NEWMEXICO", "MEXICO", "NUEVO"])
def test_a_state_or_country_name_read_beside_the_plate_does_not_vote(legend: str) -> None:
    """The legend printed on a plate is lettering, not the serial: a short vanity plate read
    in one frame wins over its state's name read in more frames, and a crossing that read
    only legends has no plate rather than a plate called ``ARIZONA``."""
    assert is_plate_legend(legend)
    result = vote([seen("WN", 0.9), seen(legend, 0.95), seen(legend, 0.95)])
    assert result is not None
    assert result.text == "WN"
    assert vote([seen(legend, 0.95)] * 3) is None


def test_legends_are_jurisdiction_and_country_names_only() -> None:
    """Serials, vanity words and badges are not legends; the legends come from the format
    table's names (accents and spaces dropped) and the countries, whole and by word."""
    legends = plate_legends()
    assert {"CALIFORNIA", "TEXAS", "BAJACALIFORNIA", "NUEVOLEON", "QUEBEC", "USA"} <= legends
    assert {"NEW", "DE", "HYBRID", "ISSUING"}.isdisjoint(legends)
    for text in ("7ABC123", "WN", "HYBRID", "CIVIC", "TEXAS1"):
        assert not is_plate_legend(text)


def test_lookalike_folding_maps_letters_to_their_digits_only() -> None:
    assert fold_lookalikes("OIBSZ") == "01852"
    assert fold_lookalikes("01852") == "01852"
    assert fold_lookalikes("7abc-123") == "7A8C123"


# --- matching ---


@pytest.mark.parametrize(
    ("read", "registered", "kind"),
    [
        ("7ABC123", ("7ABC123",), PlateMatchKind.EXACT),
        ("7ABC123", ("7abc 123",), PlateMatchKind.EXACT),
        ("8Y0D4061", ("8YOD4061",), PlateMatchKind.LOOKALIKE),  # fits no format: as read
        ("7A8C123", ("7ABC123",), PlateMatchKind.EXACT),  # the CA format corrects the 8
        ("OIBSZ", ("01852",), PlateMatchKind.LOOKALIKE),
        ("7ABC124", ("7ABC123",), PlateMatchKind.NOT_REGISTERED),
        ("7ABC123", (), PlateMatchKind.NOT_REGISTERED),
    ],
)
def test_match_distinguishes_exact_lookalike_and_not_registered(
    read: str, registered: tuple[str, ...], kind: PlateMatchKind
) -> None:
    voted = vote([seen(read)])
    result = match_plate(voted, [RegisteredVehicle(p, "US-CA") for p in registered])
    assert result.kind is kind
    assert (result.vehicle is not None) == (
        kind in (PlateMatchKind.EXACT, PlateMatchKind.LOOKALIKE)
    )


def test_an_exact_match_wins_over_a_lookalike_of_another_registered_vehicle() -> None:
    vehicles = [RegisteredVehicle("7A8C123", "US-AZ"), RegisteredVehicle("7ABC123", "US-CA")]
    result = match_plate(vote([seen("7ABC123")]), vehicles)
    assert result.kind is PlateMatchKind.EXACT
    assert result.vehicle == vehicles[1]


def test_matching_uses_the_voted_text_not_lower_candidates() -> None:
    """A registered plate that only appears as a runner-up is not evidence it is present."""
    voted = vote([seen("7ABC124", candidates=(("7ABC124", 0.9), ("7ABC123", 0.1)))])
    assert voted is not None
    assert "7ABC123" in [c.text for c in voted.candidates]
    assert match_plate(voted, [RegisteredVehicle("7ABC123", "US-CA")]).kind is (
        PlateMatchKind.NOT_REGISTERED
    )


@pytest.mark.parametrize(
    ("faults", "kind"),
    [
        ((), PlateMatchKind.NOT_READ),
        ((VisionFault.READER_UNAVAILABLE,), PlateMatchKind.READER_UNAVAILABLE),
        ((VisionFault.CAMERA_UNAVAILABLE,), PlateMatchKind.CAMERA_UNAVAILABLE),
        (
            (VisionFault.READER_UNAVAILABLE, VisionFault.CAMERA_UNAVAILABLE),
            PlateMatchKind.CAMERA_UNAVAILABLE,
        ),
    ],
)
def test_without_a_legible_plate_the_outcome_says_why(
    faults: tuple[VisionFault, ...], kind: PlateMatchKind
) -> None:
    outcome = assess_plate([], faults, [], any_valid_card=True, check=CHECK)
    assert outcome.match.kind is kind
    assert outcome.vote is None


def test_a_plate_below_min_confidence_counts_as_not_read_but_is_still_reported() -> None:
    outcome = assess_plate(
        [seen("7ABC123", 0.5)],
        (),
        [RegisteredVehicle("7ABC123", "US-CA")],
        any_valid_card=True,
        check=PlateCheck(min_confidence=0.9),
    )
    assert outcome.match.kind is PlateMatchKind.NOT_READ
    assert outcome.vote is not None
    assert outcome.vote.text == "7ABC123"


def test_a_fault_does_not_hide_a_plate_that_was_read() -> None:
    outcome = assess_plate(
        [seen("7ABC123")],
        (VisionFault.CAMERA_UNAVAILABLE,),
        [RegisteredVehicle("7ABC123", "US-CA")],
        any_valid_card=True,
        check=CHECK,
    )
    assert outcome.match.kind is PlateMatchKind.EXACT


def test_with_no_valid_card_a_read_plate_is_not_checked() -> None:
    outcome = assess_plate([seen("7ABC123")], (), [], any_valid_card=False, check=CHECK)
    assert outcome.match.kind is PlateMatchKind.NOT_CHECKED


# --- policy ---


@pytest.mark.parametrize(
    ("plates", "faults", "recommendation", "reasons"),
    [
        ((seen("7ABC123"),), (), Recommendation.EXPEDITE, ()),
        ((seen("8Y0D4061"),), (), Recommendation.PRIMARY, (Reason.PLATE_LOOKALIKE_MATCH,)),
        ((), (), Recommendation.PRIMARY, (Reason.PLATE_NOT_READ,)),
        (
            (),
            (VisionFault.CAMERA_UNAVAILABLE,),
            Recommendation.PRIMARY,
            (Reason.CAMERA_UNAVAILABLE,),
        ),
        (
            (),
            (VisionFault.READER_UNAVAILABLE,),
            Recommendation.PRIMARY,
            (Reason.PLATE_READER_UNAVAILABLE,),
        ),
        ((seen("5KKK555"),), (), Recommendation.REFER, (Reason.PLATE_NOT_REGISTERED,)),
    ],
)
def test_camera_lane_expedites_only_on_an_exact_plate_of_a_card_holder(
    plates: tuple[PlateSeen, ...],
    faults: tuple[VisionFault, ...],
    recommendation: Recommendation,
    reasons: tuple[Reason, ...],
) -> None:
    """Missing or uncertain plate evidence gives PRIMARY; contrary evidence gives REFER."""
    decision = decide(crossing((OWNER.ref,), plates, faults), CACHE.get, CAMERA_LANE)
    assert decision.recommendation is recommendation
    assert decision.reasons == reasons
    assert decision.plate is not None


def test_plate_of_any_valid_card_holder_in_the_vehicle_matches() -> None:
    decision = decide(crossing((OWNER.ref, SPOUSE.ref), (seen("4DEF321"),)), CACHE.get, CAMERA_LANE)
    assert decision.recommendation is Recommendation.EXPEDITE
    assert decision.plate is not None
    assert decision.plate.match.vehicle == SPOUSE.vehicles[1]


def test_plate_of_a_revoked_holder_does_not_count_as_registered() -> None:
    decision = decide(
        crossing((OWNER.ref, REVOKED_OWNER.ref), (seen("9RRR999"),)), CACHE.get, CAMERA_LANE
    )
    assert decision.recommendation is Recommendation.ALERT
    assert Reason.PLATE_NOT_REGISTERED in decision.reasons


def test_card_problems_still_refer_when_the_plate_evidence_is_only_missing() -> None:
    decision = decide(crossing(("E2800000000000000000FFFF",)), CACHE.get, CAMERA_LANE)
    assert decision.recommendation is Recommendation.REFER
    assert decision.reasons == (Reason.UNKNOWN_CARD, Reason.PLATE_NOT_READ)


def test_lane_without_camera_decides_as_before_and_has_no_plate() -> None:
    decision = decide(crossing((OWNER.ref,)), CACHE.get, CARD_ONLY_LANE)
    assert decision.recommendation is Recommendation.EXPEDITE
    assert decision.plate is None


def test_general_lane_reports_plate_reasons_but_stays_primary() -> None:
    decision = decide(crossing((OWNER.ref,), (seen("5KKK555"),)), CACHE.get, GENERAL_CAMERA_LANE)
    assert decision.recommendation is Recommendation.PRIMARY
    assert decision.reasons == (Reason.PLATE_NOT_REGISTERED,)


# --- correlation of plate readings ---


def _correlator(**overrides: float) -> CrossingCorrelator:
    # The loop's debounce and tails are not the subject here: a clear is a departure at once.
    loop = {"departure_confirm_s": 0.0, "min_stay_s": 0.0, "rejoin_window_s": 0.0}
    return CrossingCorrelator(
        CorrelationSettings(plate_preroll_s=2.0, straggler_window_s=3.0, **{**loop, **overrides})  # type: ignore[arg-type]
    )


def test_plates_seen_during_and_shortly_before_the_crossing_join_it() -> None:
    correlator = _correlator()
    assert correlator.handle(seen("OLD0001", at=100.0)) == []  # too early: before pre-roll
    correlator.handle(seen("7ABC123", at=104.0))  # the camera sees the plate first
    correlator.handle(LoopChanged(105.0, 1, occupied=True))
    correlator.handle(seen("7ABC123", at=106.0))
    (closed,) = correlator.handle(LoopChanged(108.0, 1, occupied=False))
    assert [p.text for p in closed.plates] == ["7ABC123", "7ABC123"]


def test_the_departing_vehicles_plate_is_not_given_to_the_next_vehicle() -> None:
    correlator = _correlator()
    correlator.handle(LoopChanged(100.0, 1, occupied=True))
    correlator.handle(seen("7ABC123", at=101.0))
    correlator.handle(LoopChanged(103.0, 1, occupied=False))
    correlator.handle(seen("7A8C123", at=103.5))  # look-alike reading of the same plate
    correlator.handle(seen("5KKK555", at=104.0))
    correlator.handle(LoopChanged(104.5, 1, occupied=True))
    (closed,) = correlator.handle(LoopChanged(107.0, 1, occupied=False))
    assert [p.text for p in closed.plates] == ["5KKK555"]
    assert correlator.counters.straggler_plates == 1


def test_the_departing_plate_is_dropped_even_once_the_next_crossing_opened() -> None:
    correlator = _correlator()
    correlator.handle(LoopChanged(100.0, 1, occupied=True))
    correlator.handle(seen("7ABC123", at=101.0))
    correlator.handle(LoopChanged(103.0, 1, occupied=False))
    correlator.handle(LoopChanged(103.5, 1, occupied=True))
    correlator.handle(seen("7ABC123", at=104.0))
    correlator.handle(seen("5KKK555", at=104.5))
    correlator.handle(seen("7ABC123", at=106.5))  # outside the straggler window: kept
    (closed,) = correlator.handle(LoopChanged(107.0, 1, occupied=False))
    assert [p.text for p in closed.plates] == ["5KKK555", "7ABC123"]
    assert correlator.counters.straggler_plates == 1


def test_a_late_reading_goes_where_its_frame_was_captured_or_is_dropped() -> None:
    """Inference finishes after the frame was taken: the capture time decides, not arrival."""
    correlator = _correlator()
    correlator.handle(LoopChanged(100.0, 1, occupied=True))
    correlator.handle(Tick(102.0))
    correlator.handle(seen("7ABC123", at=101.5))  # captured while open, arrives later: kept
    (closed,) = correlator.handle(LoopChanged(103.0, 1, occupied=False))
    correlator.handle(seen("7A8C12", at=102.9))  # captured before the close: too late
    correlator.handle(LoopChanged(103.5, 1, occupied=True))
    correlator.handle(seen("OLD0001", at=101.0))  # before the previous close: too late
    (second,) = correlator.handle(LoopChanged(106.0, 1, occupied=False))
    assert [p.text for p in closed.plates] == ["7ABC123"]
    assert second.plates == ()
    assert correlator.counters.late_plates == 2
    assert correlator.counters.out_of_order_events == 0, "a late reading is not out of order"


def test_vision_faults_during_a_crossing_are_recorded_on_it() -> None:
    correlator = _correlator()
    correlator.handle(VisionChanged(99.0, VisionFault.READER_UNAVAILABLE))
    correlator.handle(LoopChanged(100.0, 1, occupied=True))
    correlator.handle(VisionChanged(101.0, VisionFault.CAMERA_UNAVAILABLE))
    correlator.handle(VisionChanged(102.0, None))
    (first,) = correlator.handle(LoopChanged(103.0, 1, occupied=False))
    assert first.vision_faults == (
        VisionFault.CAMERA_UNAVAILABLE,
        VisionFault.READER_UNAVAILABLE,
    )
    correlator.handle(LoopChanged(110.0, 1, occupied=True))
    (second,) = correlator.handle(LoopChanged(112.0, 1, occupied=False))
    assert second.vision_faults == ()


def test_readings_per_crossing_are_bounded_keeping_the_most_confident() -> None:
    correlator = _correlator(max_plate_readings=3)
    correlator.handle(LoopChanged(100.0, 1, occupied=True))
    for index, confidence in enumerate((0.5, 0.9, 0.4, 0.8, 0.95)):
        correlator.handle(seen("7ABC123", confidence, at=100.1 + index / 10))
    correlator.handle(Tick(101.0))
    (closed,) = correlator.handle(LoopChanged(102.0, 1, occupied=False))
    assert sorted(p.confidence for p in closed.plates) == [0.8, 0.9, 0.95]
    assert correlator.counters.plates_over_limit == 2


def test_card_reads_and_plates_open_the_same_crossing() -> None:
    """A tag-opened crossing takes the pre-roll plates as a loop-opened one does."""
    correlator = _correlator()
    correlator.handle(seen("7ABC123", at=99.5))
    correlator.handle(TagRead(100.0, OWNER.ref, 1, -50.0))
    correlator.handle(LoopChanged(101.0, 1, occupied=True))
    (closed,) = correlator.handle(LoopChanged(103.0, 1, occupied=False))
    assert [p.text for p in closed.plates] == ["7ABC123"]
    assert [c.ref for c in closed.cards] == [OWNER.ref]
