"""Occupant association with plain data: each rule, in order, decides what its name says."""

from __future__ import annotations

import pytest

from agent.lane.association import (
    AntennaZone,
    Association,
    AssociationSettings,
    Read,
    Rule,
    Stay,
    evidence_of,
    judge,
    judge_all,
)

SETTINGS = AssociationSettings()
STAY = Stay(start=100.0, end=120.0)  # a vehicle at the booth for 20 s


def series(
    start: float, end: float, every: float, rssi: float | tuple[float, float], antenna: int = 1
) -> list[Read]:
    count = round((end - start) / every) + 1
    first, last = (rssi, rssi) if isinstance(rssi, int | float) else rssi
    return [
        Read(start + i * every, first + (last - first) * i / max(1, count - 1), antenna)
        for i in range(count)
    ]


def judged(reads: list[Read], stay: Stay = STAY, settings: AssociationSettings = SETTINGS):
    return judge(evidence_of(reads, stay, settings), stay, settings)


def test_a_card_read_strongly_at_the_booth_is_attached() -> None:
    result = judged(series(100.5, 119.5, 0.5, -50.0))
    assert (result.association, result.rule) == (Association.ATTACHED, Rule.STRONG_AT_BOOTH)


def test_two_strong_reads_are_enough_one_is_not() -> None:
    two = judged([Read(105.0, -55.0, 1), Read(110.0, -56.0, 1)])
    assert two.association is Association.ATTACHED
    one = judged([Read(105.0, -55.0, 1)])
    assert (one.association, one.rule) == (Association.UNCERTAIN, Rule.SINGLE_READ)


def test_strong_reads_on_an_approach_antenna_do_not_make_a_card_strong_at_the_booth() -> None:
    zoned = AssociationSettings(antenna_zones=((3, AntennaZone.APPROACH),))
    reads = [Read(at, -50.0, 3) for at in (101.0, 102.0, 103.0)]
    result = judged(reads, settings=zoned)
    assert result.rule is not Rule.STRONG_AT_BOOTH
    assert result.evidence.zones == (AntennaZone.APPROACH,)


def test_a_shielded_card_read_weakly_but_all_through_the_stay_is_attached() -> None:
    result = judged(series(100.5, 119.0, 1.5, -79.0))
    assert (result.association, result.rule) == (Association.ATTACHED, Rule.STEADY_PRESENCE)


def test_a_steady_card_that_keeps_rising_is_not_steady() -> None:
    result = judged(series(100.5, 119.5, 1.0, (-84.0, -70.0)))
    assert result.association is not Association.ATTACHED


def test_a_card_first_read_late_and_rising_is_the_next_vehicle() -> None:
    reads = series(116.0, 119.8, 0.4, (-82.0, -70.0))  # pulls up behind in the last 4 s
    result = judged(reads)
    assert (result.association, result.rule) == (Association.NEXT_VEHICLE, Rule.LATE_APPROACH)


def test_a_card_first_read_late_and_weak_is_the_next_vehicle_even_when_not_rising() -> None:
    result = judged(series(115.0, 119.5, 0.5, -76.0))
    assert result.association is Association.NEXT_VEHICLE


def test_a_card_first_read_late_but_strong_is_only_uncertain() -> None:
    """Strong at the booth while this vehicle is there: perhaps its own card brought out late;
    never attached, never silently dropped."""
    result = judged(series(116.0, 119.5, 0.5, -50.0))
    assert (result.association, result.rule) == (Association.UNCERTAIN, Rule.LATE_APPROACH)


def test_a_late_short_burst_that_fades_is_another_lanes() -> None:
    result = judged([Read(117.0, -71.0, 1), Read(117.6, -78.0, 1)])
    assert (result.association, result.rule) == (Association.OTHER_LANE, Rule.SHORT_WEAK_BURST)


def test_a_card_read_early_in_the_stay_is_never_late() -> None:
    short_stay = Stay(100.0, 105.0)
    result = judged(series(100.2, 104.8, 0.4, -52.0), stay=short_stay)
    assert result.association is Association.ATTACHED


def test_a_short_weak_burst_in_the_middle_of_the_stay_is_another_lanes() -> None:
    result = judged([Read(108.0, -77.0, 2), Read(108.5, -74.0, 2), Read(109.0, -78.0, 2)])
    assert (result.association, result.rule) == (Association.OTHER_LANE, Rule.SHORT_WEAK_BURST)


def test_a_single_read_of_middling_strength_is_uncertain_a_single_weak_one_another_lanes() -> None:
    middling = judged([Read(108.0, -68.0, 1)])
    assert (middling.association, middling.rule) == (Association.UNCERTAIN, Rule.SINGLE_READ)
    weak = judged([Read(108.0, -79.0, 1)])
    assert (weak.association, weak.rule) == (Association.OTHER_LANE, Rule.SHORT_WEAK_BURST)


def test_a_card_read_only_before_the_arrival_is_another_lanes_unless_strong_up_to_it() -> None:
    weak_early = judged(series(90.0, 92.0, 0.5, -76.0))
    assert (weak_early.association, weak_early.rule) == (
        Association.OTHER_LANE,
        Rule.READ_ON_APPROACH_ONLY,
    )
    strong_up_to_arrival = judged(series(97.5, 99.5, 0.5, -55.0))
    assert (strong_up_to_arrival.association, strong_up_to_arrival.rule) == (
        Association.UNCERTAIN,
        Rule.READ_ON_APPROACH_ONLY,
    )


def test_a_card_much_weaker_than_its_peers_and_not_steady_is_another_lanes() -> None:
    cards = {
        "STRONG": series(100.5, 119.5, 0.5, -45.0),
        "FAINT": [Read(at, -68.0, 1) for at in (104.0, 107.0, 110.0)],
    }
    result = judge_all(cards, STAY, SETTINGS)
    assert result["STRONG"].association is Association.ATTACHED
    assert (result["FAINT"].association, result["FAINT"].rule) == (
        Association.OTHER_LANE,
        Rule.WEAKER_THAN_PEERS,
    )


def test_a_weak_card_with_no_strong_peer_and_no_pattern_is_uncertain() -> None:
    result = judged([Read(at, -68.0, 1) for at in (104.0, 107.0, 110.0)])
    assert (result.association, result.rule) == (Association.UNCERTAIN, Rule.INCONCLUSIVE)


def test_evidence_summarises_counts_timing_strength_and_trend() -> None:
    reads = [Read(98.0, -70.0, 2), Read(101.0, -60.0, 1), Read(110.0, -50.0, 1)]
    evidence = evidence_of(reads, STAY, SETTINGS)
    assert (evidence.reads, evidence.reads_at_booth) == (3, 2)
    assert (evidence.onset_s, evidence.end_gap_s) == (-2.0, 10.0)
    assert evidence.peak_rssi_dbm == -50.0
    assert evidence.strong_reads == 2  # -60 and -50; -70 is below strong_rssi_dbm
    assert evidence.rise_db == 20.0
    assert evidence.antennas == (1, 2)
    assert evidence.spread == pytest.approx(0.2)


def test_no_reads_is_no_evidence() -> None:
    with pytest.raises(ValueError, match="no reads"):
        evidence_of([], STAY, SETTINGS)


@pytest.mark.parametrize("association", list(Association))
def test_only_attached_and_uncertain_cards_are_carried(association: Association) -> None:
    assert association.carried is (association in (Association.ATTACHED, Association.UNCERTAIN))
