"""Crossing correlation with plain data: one crossing per vehicle, whatever the loop and the
reader do. Times are lane seconds; a vehicle here is read every half second at -50 dBm unless a
test says otherwise."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.lane.association import Association, Rule
from agent.lane.correlator import (
    ClosedBy,
    CorrelationSettings,
    Crossing,
    CrossingCorrelator,
    LoopAnomaly,
    LoopFault,
    OpenedBy,
)
from agent.lane.events import LaneInput, LoopChanged, TagRead, Tick
from tests.lane.kit import arrive, depart, in_time_order, read, reads

CARD_A = "E28011606000020000000A01"
CARD_B = "E28011606000020000000B02"
CARD_C = "E28011606000020000000C03"

SETTINGS = CorrelationSettings()


def run(events: list[LaneInput], settings: CorrelationSettings = SETTINGS) -> list[Crossing]:
    """Feed ``events``, then let time run out so that everything pending closes."""
    correlator = CrossingCorrelator(settings)
    closed: list[Crossing] = []
    for event in events:
        closed.extend(correlator.handle(event))
    end = events[-1].at if events else 0.0
    for step in range(1, 61):
        closed.extend(correlator.handle(Tick(end + step)))
    return closed


def cards(crossing: Crossing) -> list[str]:
    return [card.ref for card in crossing.cards]


def vehicle(start: float, end: float, *refs: str, rssi: float = -50.0) -> list[LaneInput]:
    """A vehicle on the loop from ``start`` to ``end`` with its cards read all along."""
    return in_time_order(
        arrive(start),
        *[reads(ref, start + 0.2, end - 0.2, rssi=rssi) for ref in refs],
        depart(end),
    )


# --- arrival and departure -------------------------------------------------------------


def test_loop_occupied_then_clear_is_one_crossing_with_its_cards_closed_at_the_clear() -> None:
    (crossing,) = run(vehicle(10, 20, CARD_A, CARD_B))
    assert (crossing.opened_at, crossing.closed_at) == (10, 20)
    assert (crossing.opened_by, crossing.closed_by) == (OpenedBy.LOOP, ClosedBy.DEPARTURE)
    assert crossing.vehicle_detected
    assert sorted(cards(crossing)) == [CARD_A, CARD_B]
    assert all(card.association is Association.ATTACHED for card in crossing.cards)


def test_the_departure_is_final_once_the_clear_has_lasted_the_confirmation() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    for event in vehicle(0, 10, CARD_A):
        assert correlator.handle(event) == []
    assert correlator.next_deadline() == 10 + SETTINGS.departure_confirm_s
    assert correlator.handle(Tick(10 + SETTINGS.departure_confirm_s - 0.01)) == []
    (crossing,) = correlator.handle(Tick(10 + SETTINGS.departure_confirm_s))
    assert crossing.closed_at == 10


def test_repeated_reads_of_one_card_are_one_card_with_read_count_best_rssi_and_antennas() -> None:
    (crossing,) = run(
        [
            arrive(0),
            read(1, CARD_A, rssi=-70, antenna=1),
            read(2, CARD_A, rssi=-45, antenna=2),
            read(3, CARD_A, rssi=-60, antenna=1),
            depart(5),
        ]
    )
    (card,) = crossing.cards
    assert card.reads == 3
    assert card.best_rssi_dbm == -45
    assert card.antennas == (1, 2)
    assert (card.first_at, card.last_at) == (1, 3)


def test_reads_on_the_approach_count_for_the_vehicle_that_arrives() -> None:
    (crossing,) = run(in_time_order(reads(CARD_A, 5, 5.8, rssi=-60), vehicle(6, 12, CARD_B)))
    assert crossing.opened_at == 6
    assert sorted(cards(crossing)) == [CARD_A, CARD_B]
    card_a = next(card for card in crossing.cards if card.ref == CARD_A)
    assert card_a.evidence is not None
    assert card_a.evidence.onset_s < 0


def test_vehicle_without_cards_is_a_crossing_with_no_cards() -> None:
    (crossing,) = run([arrive(0), depart(5)])
    assert crossing.cards == ()


def test_two_vehicles_in_a_row_each_get_their_own_cards() -> None:
    crossings = run(vehicle(0, 5, CARD_A) + vehicle(20, 25, CARD_B))
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_B]]


def test_a_vehicle_on_the_loop_never_idles_out_only_hits_the_max_duration() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(arrive(0))
    assert correlator.handle(Tick(SETTINGS.max_open_s - 0.1)) == []
    (crossing,) = correlator.handle(Tick(SETTINGS.max_open_s + 100))
    assert crossing.closed_by is ClosedBy.MAX_DURATION
    assert crossing.closed_at == SETTINGS.max_open_s
    assert crossing.anomalies == (LoopAnomaly.STUCK_OCCUPIED,)
    assert LoopFault.STUCK_OCCUPIED in correlator.loop_faults(SETTINGS.max_open_s + 100)


def test_weak_reads_are_ignored_and_counted() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(read(1, CARD_A, rssi=-90))
    assert correlator.counters.weak_reads == 1
    assert CARD_A not in [r for crossing in run(vehicle(0, 5, CARD_B)) for r in cards(crossing)]


def test_other_loops_are_ignored_and_counted() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    assert correlator.handle(arrive(0, loop=2)) == []
    assert correlator.handle(depart(1, loop=2)) == []
    assert not correlator.has_open_crossing
    assert correlator.counters.other_loop_events == 2


def test_clear_without_a_vehicle_is_counted_not_fatal() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    assert correlator.handle(depart(0)) == []
    assert correlator.counters.unmatched_clears == 1


def test_events_out_of_time_order_are_applied_at_the_latest_time_and_counted() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(arrive(10))
    correlator.handle(read(9, CARD_A))
    assert correlator.counters.out_of_order_events == 1
    correlator.handle(read(11, CARD_A))
    correlator.handle(depart(12))
    (crossing,) = correlator.handle(Tick(13))
    assert crossing.cards[0].first_at == 10


def test_close_all_returns_the_open_crossing_as_shutdown() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    for event in [arrive(0), read(1, CARD_C), read(1.5, CARD_C)]:
        correlator.handle(event)
    (crossing,) = correlator.close_all(2)
    assert crossing.closed_by is ClosedBy.SHUTDOWN
    assert cards(crossing) == [CARD_C]
    assert correlator.close_all(3) == []


# --- the loop's faults -----------------------------------------------------------------


def test_a_short_clear_under_a_vehicle_that_stays_is_chatter_not_a_departure() -> None:
    events = in_time_order(
        vehicle(0, 20, CARD_A), depart(8), arrive(8 + SETTINGS.departure_confirm_s / 2)
    )
    (crossing,) = run(events)
    assert (crossing.opened_at, crossing.closed_at) == (0, 20)
    assert crossing.anomalies == (LoopAnomaly.CHATTER,)


def test_chatter_while_rolling_onto_the_loop_needs_the_longer_confirmation() -> None:
    """After an occupation shorter than min_stay_s, a clear of up to short_stay_confirm_s is
    still the vehicle rolling on."""
    blip = SETTINGS.departure_confirm_s + 0.3
    assert blip < SETTINGS.short_stay_confirm_s
    events = in_time_order(vehicle(0, 15, CARD_A), depart(0.4), arrive(0.4 + blip))
    (crossing,) = run(events)
    assert (crossing.opened_at, crossing.closed_at) == (0, 15)


def test_a_trailer_after_the_hitch_gap_is_the_departed_vehicles_tail() -> None:
    """The loop occupied again right after a departure, briefly, with nothing new read."""
    events = in_time_order(
        vehicle(0, 10, CARD_A),
        arrive(10.6),
        depart(11.8),
        reads(CARD_A, 10.3, 11.3, rssi=-66),  # the cab driving off
    )
    crossings = run(events)
    assert [cards(x) for x in crossings] == [[CARD_A]]


def test_a_re_occupation_with_a_new_card_at_the_booth_is_a_tailgater() -> None:
    events = in_time_order(vehicle(0, 10, CARD_A), vehicle(10.5, 20, CARD_B))
    crossings = run(events)
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_B]]
    assert crossings[1].opened_at == 10.5


def test_a_re_occupation_that_stays_with_nothing_read_is_a_vehicle_without_cards() -> None:
    events = in_time_order(vehicle(0, 10, CARD_A), arrive(11), depart(20))
    crossings = run(events)
    assert [cards(x) for x in crossings] == [[CARD_A], []]
    assert (crossings[1].opened_at, crossings[1].closed_at) == (11, 20)


def test_a_dropout_under_a_vehicle_that_never_left_makes_no_second_crossing() -> None:
    """The loop clears for a second mid-stay; the cards go on being read at the booth as
    strongly as before: the rest of the stay is the same vehicle (a ghost)."""
    events = in_time_order(arrive(0), reads(CARD_A, 0.2, 29.8), depart(10), arrive(11), depart(30))
    crossings = run(events)
    assert [cards(x) for x in crossings] == [[CARD_A]]
    assert crossings[0].closed_at == 10  # published at the dropout, as it must be by then


def test_a_vehicle_that_stops_past_the_loop_is_not_a_second_crossing() -> None:
    """The loop clears but the cards are still read at the booth, steadily, for longer than a
    tail: the vehicle lingers; its reads make no new crossing."""
    events = in_time_order(arrive(0), reads(CARD_A, 0.2, 25.0), depart(10))
    crossings = run(events)
    assert [cards(x) for x in crossings] == [[CARD_A]]


def test_an_occupied_edge_while_occupied_closes_the_first_vehicle_as_next_arrival() -> None:
    events = in_time_order(
        arrive(0), reads(CARD_A, 0.2, 8), vehicle(12, 20, CARD_B)
    )  # the first vehicle's clear edge never came
    crossings = run(events)
    assert [x.closed_by for x in crossings] == [ClosedBy.NEXT_ARRIVAL, ClosedBy.DEPARTURE]
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_B]]
    assert crossings[0].anomalies == (LoopAnomaly.MISSING_CLEAR,)


def test_a_loop_stuck_occupied_is_split_by_the_cards_of_each_vehicle() -> None:
    events = in_time_order(
        arrive(0),
        reads(CARD_A, 0.5, 12),  # first vehicle
        reads(CARD_B, 16, 30),  # second vehicle, the loop never cleared
        reads(CARD_C, 34, 45),  # third
    )
    correlator = CrossingCorrelator(SETTINGS)
    crossings = [c for event in events for c in correlator.handle(event)]
    crossings += [c for step in range(46, 60) for c in correlator.handle(Tick(step))]
    crossings += correlator.close_all(60)
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_B], [CARD_C]]
    assert [x.closed_by for x in crossings[:2]] == [ClosedBy.EVIDENCE_SPLIT] * 2
    assert crossings[1].opened_by is OpenedBy.EVIDENCE
    assert all(LoopAnomaly.SPLIT_BY_CARDS in x.anomalies for x in crossings)
    assert 12 <= crossings[0].closed_at <= 16
    assert LoopFault.STUCK_OCCUPIED in correlator.loop_faults(50)
    assert LoopFault.EDGE_MISSING in correlator.loop_faults(50)


def test_tailgating_bumper_to_bumper_is_split_when_the_first_cars_cards_go_quiet() -> None:
    """No gap on the loop; the second car's cards read weakly behind, then strongly at the
    booth once the first car's cards have stopped."""
    events = in_time_order(
        arrive(0),
        reads(CARD_A, 0.3, 10),
        reads(CARD_B, 7.5, 10, rssi=(-82, -74)),
        reads(CARD_B, 10.5, 20),
        depart(20),
    )
    crossings = run(events)
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_B]]


def test_a_pause_in_the_reads_of_a_card_read_every_few_seconds_is_no_departure() -> None:
    events = in_time_order(
        arrive(0),
        reads(CARD_A, 0.5, 60, every=2.5),
        reads(CARD_B, 0.8, 60, every=2.5),
        depart(60),
    )
    crossings = run(events)
    assert [sorted(cards(x)) for x in crossings] == [[CARD_A, CARD_B]]


def test_a_card_of_the_same_vehicle_read_late_does_not_split_it() -> None:
    events = in_time_order(arrive(0), reads(CARD_A, 0.5, 40), reads(CARD_B, 30, 40), depart(40))
    crossings = run(events)
    assert len(crossings) == 1


def test_frequent_chatter_raises_a_loop_fault() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    events: list[LaneInput] = [arrive(0)]
    for index in range(SETTINGS.chatter_fault_count):
        at = 5.0 + index
        events += [depart(at), arrive(at + 0.05)]
    for event in events:
        correlator.handle(event)
    assert LoopFault.CHATTER in correlator.loop_faults(20)
    assert LoopFault.CHATTER not in correlator.loop_faults(20 + SETTINGS.fault_hold_s)


# --- cards with nobody on the loop -------------------------------------------------------


def test_a_vehicle_the_loop_never_sees_is_a_crossing_from_its_strong_reads() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    crossings = [c for e in reads(CARD_A, 10, 20) for c in correlator.handle(e)]
    assert crossings == []
    assert correlator.has_open_crossing
    (crossing,) = correlator.handle(Tick(20 + SETTINGS.idle_timeout_s))
    assert (crossing.opened_by, crossing.closed_by) == (OpenedBy.TAG, ClosedBy.IDLE_TIMEOUT)
    assert not crossing.vehicle_detected
    assert (crossing.opened_at, crossing.closed_at) == (10, 20 + SETTINGS.idle_timeout_s)
    assert cards(crossing) == [CARD_A]


def test_weak_bursts_from_another_lane_in_an_empty_lane_make_no_crossing() -> None:
    events = in_time_order(
        reads(CARD_A, 10, 11.5, rssi=-77), reads(CARD_B, 30, 30.5, rssi=-74), Tick(60)
    )
    assert run(events) == []


def test_a_vehicle_announced_by_its_cards_reaches_the_loop_and_is_one_crossing() -> None:
    events = in_time_order(reads(CARD_A, 0, 15), arrive(6), depart(15))
    (crossing,) = run(events)
    assert crossing.opened_by is OpenedBy.TAG
    assert crossing.vehicle_detected
    assert crossing.closed_by is ClosedBy.DEPARTURE


# --- the neighbours: queue, next lane, stragglers, handed-back cards ----------------------


def test_cards_of_the_car_pulling_up_behind_go_to_the_next_crossing() -> None:
    events = in_time_order(
        vehicle(0, 20, CARD_A),
        reads(CARD_B, 17, 22, rssi=(-82, -72)),  # queued behind, then pulling up
        vehicle(23, 35, CARD_B),
    )
    first, second = run(events)
    assert cards(first) == [CARD_A]
    assert [(c.ref, c.association, c.rule) for c in first.set_aside] == [
        (CARD_B, Association.NEXT_VEHICLE, Rule.LATE_APPROACH)
    ]
    assert cards(second) == [CARD_B]


def test_a_neighbours_burst_at_the_booth_is_set_aside_as_another_lanes() -> None:
    events = in_time_order(vehicle(0, 20, CARD_A), reads(CARD_B, 9, 10, rssi=-76))
    (crossing,) = run(events)
    assert cards(crossing) == [CARD_A]
    assert [(c.ref, c.association) for c in crossing.set_aside] == [
        (CARD_B, Association.OTHER_LANE)
    ]


def test_a_shielded_card_read_weakly_all_stay_is_attached() -> None:
    events = in_time_order(vehicle(0, 20, CARD_A), reads(CARD_B, 0.5, 19.5, every=1.5, rssi=-79))
    (crossing,) = run(events)
    assert sorted(cards(crossing)) == [CARD_A, CARD_B]
    shielded = next(c for c in crossing.cards if c.ref == CARD_B)
    assert (shielded.association, shielded.rule) == (Association.ATTACHED, Rule.STEADY_PRESENCE)


def test_stragglers_of_the_departed_vehicle_are_not_the_next_ones() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    events = in_time_order(
        vehicle(0, 10, CARD_A),
        reads(CARD_A, 10.5, 15, every=1.5, rssi=(-62, -74)),  # fading as it drives off
        vehicle(12, 22, CARD_B),
    )
    crossings = [c for e in events for c in correlator.handle(e)]
    crossings += [c for step in range(23, 40) for c in correlator.handle(Tick(step))]
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_B]]
    assert correlator.counters.straggler_reads >= 3


def test_straggler_reads_alone_do_not_open_a_crossing() -> None:
    events = in_time_order(vehicle(0, 5, CARD_A), reads(CARD_A, 5.5, 7, rssi=-55))
    assert [cards(x) for x in run(events)] == [[CARD_A]]


def test_a_card_handed_back_to_the_car_behind_is_in_both_crossings() -> None:
    events = in_time_order(vehicle(0, 10, CARD_A), vehicle(12, 25, CARD_A, CARD_B))
    crossings = run(events)
    assert [sorted(cards(x)) for x in crossings] == [[CARD_A], [CARD_A, CARD_B]]


def test_the_same_card_after_the_straggler_window_belongs_to_a_new_crossing() -> None:
    gap = SETTINGS.straggler_window_s + 5
    crossings = run(vehicle(0, 5, CARD_A) + vehicle(5 + gap, 12 + gap, CARD_A))
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_A]]


# --- properties over random lanes --------------------------------------------------------

_events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=5.0),
        st.one_of(
            st.tuples(
                st.just("read"), st.sampled_from([CARD_A, CARD_B, CARD_C]), st.floats(-95, -30)
            ),
            st.tuples(st.just("loop"), st.sampled_from([1, 2]), st.booleans()),
            st.tuples(st.just("tick")),
        ),
    ),
    max_size=80,
)


def _timeline(steps: list[tuple[float, tuple[object, ...]]]) -> list[LaneInput]:
    at = 0.0
    events: list[LaneInput] = []
    for gap, action in steps:
        at += gap
        match action:
            case ("read", str(epc), float(rssi)):
                events.append(read(at, epc, rssi=rssi))
            case ("loop", int(loop), bool(occupied)):
                events.append(LoopChanged(at=at, loop_id=loop, occupied=occupied))
            case _:
                events.append(Tick(at))
    return events


@settings(max_examples=300, deadline=None)
@given(_events)
def test_no_read_is_carried_twice_and_crossings_never_overlap(
    steps: list[tuple[float, tuple[object, ...]]],
) -> None:
    """Whatever the lane does: crossings follow one another, a card appears once in a crossing
    (carried or set aside), its reads lie within the crossing's window, and no more reads are
    carried than were accepted."""
    events = _timeline(steps)
    correlator = CrossingCorrelator(SETTINGS)
    crossings = [c for e in events for c in correlator.handle(e)]
    crossings += correlator.close_all(events[-1].at if events else 0.0)
    for crossing in crossings:
        assert crossing.opened_at <= crossing.closed_at
        refs = cards(crossing) + [card.ref for card in crossing.set_aside]
        assert len(refs) == len(set(refs))
        window = crossing.opened_at - SETTINGS.approach_window_s
        assert all(window <= card.first_at <= card.last_at for card in crossing.cards)
        assert all(card.last_at <= crossing.closed_at for card in crossing.cards)
        assert crossing.closed_at - crossing.opened_at <= SETTINGS.max_open_s
    for earlier, later in itertools.pairwise(crossings):
        assert earlier.closed_at <= later.opened_at
    accepted = sum(isinstance(e, TagRead) and e.rssi_dbm >= SETTINGS.min_rssi_dbm for e in events)
    assert sum(card.reads for x in crossings for card in x.cards) <= accepted


def test_a_car_right_behind_with_only_the_card_handed_back_is_a_vehicle_of_its_own() -> None:
    """Re-occupied within the rejoin window and nothing new read: the card's reads dip as the
    first car drives off and come back with the second, so it is no dropout."""
    events = in_time_order(
        vehicle(0, 10, CARD_A),
        reads(CARD_A, 10.3, 11.0, rssi=(-66, -74)),  # driving off
        arrive(11.2),
        reads(CARD_A, 11.4, 24.0, rssi=-52),
        depart(24.2),
    )
    crossings = run(events)
    assert [cards(x) for x in crossings] == [[CARD_A], [CARD_A]]
    assert crossings[1].cards[0].association is Association.ATTACHED
