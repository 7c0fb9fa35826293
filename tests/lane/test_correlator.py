"""Crossing correlation with plain data: one crossing per vehicle, whatever order things come in."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.lane.correlator import (
    ClosedBy,
    CorrelationSettings,
    Crossing,
    CrossingCorrelator,
    OpenedBy,
)
from agent.lane.events import LaneInput, LoopChanged, TagRead, Tick
from tests.lane.kit import arrive, depart, read

CARD_A = "E28011606000020000000A01"
CARD_B = "E28011606000020000000B02"
CARD_C = "E28011606000020000000C03"

SETTINGS = CorrelationSettings(
    presence_loop_id=1,
    idle_timeout_s=8.0,
    max_open_s=300.0,
    straggler_window_s=3.0,
    min_rssi_dbm=-85.0,
)


def run(events: list[LaneInput], settings: CorrelationSettings = SETTINGS) -> list[Crossing]:
    correlator = CrossingCorrelator(settings)
    closed: list[Crossing] = []
    for event in events:
        closed.extend(correlator.handle(event))
    return closed


def test_loop_occupied_then_clear_is_one_crossing_with_its_cards() -> None:
    crossings = run([arrive(10), read(11, CARD_A), read(12, CARD_B), depart(15)])
    assert len(crossings) == 1
    crossing = crossings[0]
    assert (crossing.opened_at, crossing.closed_at) == (10, 15)
    assert crossing.opened_by is OpenedBy.LOOP
    assert crossing.closed_by is ClosedBy.DEPARTURE
    assert crossing.vehicle_detected
    assert [c.ref for c in crossing.cards] == [CARD_A, CARD_B]


def test_repeated_reads_of_one_card_are_one_card_with_read_count_best_rssi_and_antennas() -> None:
    crossings = run(
        [
            arrive(0),
            read(1, CARD_A, rssi=-70, antenna=1),
            read(2, CARD_A, rssi=-45, antenna=2),
            read(3, CARD_A, rssi=-60, antenna=1),
            depart(4),
        ]
    )
    (card,) = crossings[0].cards
    assert card.reads == 3
    assert card.best_rssi_dbm == -45
    assert card.antennas == (1, 2)
    assert (card.first_at, card.last_at) == (1, 3)


def test_first_read_before_the_loop_opens_the_crossing_and_the_loop_confirms_the_vehicle() -> None:
    crossings = run([read(5, CARD_A), arrive(6), read(7, CARD_B), depart(9)])
    assert len(crossings) == 1
    assert crossings[0].opened_by is OpenedBy.TAG
    assert crossings[0].opened_at == 5
    assert crossings[0].vehicle_detected
    assert crossings[0].closed_by is ClosedBy.DEPARTURE
    assert [c.ref for c in crossings[0].cards] == [CARD_A, CARD_B]


def test_vehicle_without_cards_is_a_crossing_with_no_cards() -> None:
    crossings = run([arrive(0), depart(5)])
    assert len(crossings) == 1
    assert crossings[0].cards == ()


def test_reads_with_no_vehicle_close_after_idle_timeout_from_the_last_read() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    assert correlator.handle(read(0, CARD_A)) == []
    assert correlator.handle(read(5, CARD_A)) == []
    assert correlator.handle(Tick(12.9)) == []
    (crossing,) = correlator.handle(Tick(13.0))
    assert crossing.closed_by is ClosedBy.IDLE_TIMEOUT
    assert crossing.closed_at == 13.0
    assert not crossing.vehicle_detected
    assert not correlator.has_open_crossing


def test_a_vehicle_on_the_loop_never_idles_out_only_hits_the_max_duration() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(arrive(0))
    assert correlator.handle(Tick(299.9)) == []
    (crossing,) = correlator.handle(Tick(500))
    assert crossing.closed_by is ClosedBy.MAX_DURATION
    assert crossing.closed_at == 300.0


def test_a_late_event_closes_the_expired_crossing_before_it_is_applied() -> None:
    """A read arriving after the idle timeout belongs to a new crossing, not the stale one."""
    crossings = run([read(0, CARD_A), read(20, CARD_B), Tick(40)])
    assert [[c.ref for c in x.cards] for x in crossings] == [[CARD_A], [CARD_B]]
    assert crossings[0].closed_at == 8.0


def test_two_vehicles_in_a_row_each_get_their_own_cards() -> None:
    crossings = run(
        [
            arrive(0),
            read(1, CARD_A),
            depart(5),
            arrive(20),
            read(21, CARD_B),
            depart(25),
        ]
    )
    assert [[c.ref for c in x.cards] for x in crossings] == [[CARD_A], [CARD_B]]


def test_card_of_the_departed_vehicle_read_again_as_the_next_arrives_is_dropped() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    events: list[LaneInput] = [
        arrive(0),
        read(1, CARD_A),
        depart(5),
        arrive(6),
        read(6.5, CARD_A),  # straggler: the first vehicle is still in the reader field
        read(7, CARD_B),
        depart(10),
    ]
    crossings = [c for e in events for c in correlator.handle(e)]
    assert [[c.ref for c in x.cards] for x in crossings] == [[CARD_A], [CARD_B]]
    assert correlator.counters.straggler_reads == 1


def test_straggler_reads_alone_do_not_open_a_crossing() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    for event in [arrive(0), read(1, CARD_A), depart(2), read(3, CARD_A), Tick(30)]:
        correlator.handle(event)
    assert not correlator.has_open_crossing
    assert correlator.counters.straggler_reads == 1


def test_same_card_after_the_straggler_window_belongs_to_a_new_crossing() -> None:
    crossings = run(
        [arrive(0), read(1, CARD_A), depart(2), arrive(10), read(10.5, CARD_A), depart(12)]
    )
    assert [[c.ref for c in x.cards] for x in crossings] == [[CARD_A], [CARD_A]]


def test_card_already_in_the_open_crossing_keeps_counting_reads() -> None:
    """The straggler rule only protects the *next* vehicle: it never splits a crossing."""
    crossings = run([arrive(0), read(1, CARD_A), read(2, CARD_A), depart(3)])
    assert crossings[0].cards[0].reads == 2


def test_weak_reads_are_ignored_and_counted() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    for event in [arrive(0), read(1, CARD_A, rssi=-90), read(2, CARD_B, rssi=-85), depart(3)]:
        closed = correlator.handle(event)
    assert [c.ref for c in closed[0].cards] == [CARD_B]
    assert correlator.counters.weak_reads == 1


def test_weak_reads_do_not_open_a_crossing() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(read(0, CARD_A, rssi=-100))
    assert not correlator.has_open_crossing


def test_other_loops_are_ignored_and_counted() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    assert correlator.handle(arrive(0, loop=2)) == []
    assert correlator.handle(depart(1, loop=2)) == []
    assert not correlator.has_open_crossing
    assert correlator.counters.other_loop_events == 2


def test_clear_without_a_crossing_is_counted_not_fatal() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    assert correlator.handle(depart(0)) == []
    assert correlator.counters.unmatched_clears == 1


def test_occupied_twice_closes_the_first_vehicle_as_next_arrival() -> None:
    crossings = run([arrive(0), read(1, CARD_A), arrive(10), read(11, CARD_B), depart(12)])
    assert [x.closed_by for x in crossings] == [ClosedBy.NEXT_ARRIVAL, ClosedBy.DEPARTURE]
    assert [[c.ref for c in x.cards] for x in crossings] == [[CARD_A], [CARD_B]]


def test_clear_of_a_tag_opened_crossing_closes_it() -> None:
    """A lost 'occupied' edge must not leave the crossing open until the idle timeout."""
    crossings = run([read(0, CARD_A), depart(2)])
    assert crossings[0].closed_by is ClosedBy.DEPARTURE
    assert not crossings[0].vehicle_detected


def test_events_out_of_time_order_are_applied_at_the_latest_time_and_counted() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(arrive(10))
    correlator.handle(read(9, CARD_A))
    (crossing,) = correlator.handle(depart(12))
    assert crossing.cards[0].first_at == 10
    assert correlator.counters.out_of_order_events == 1


def test_close_all_returns_the_open_crossing_as_shutdown() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(arrive(0))
    correlator.handle(read(1, CARD_C))
    (crossing,) = correlator.close_all(2)
    assert crossing.closed_by is ClosedBy.SHUTDOWN
    assert correlator.close_all(3) == []


def test_the_cards_of_a_crossing_closed_at_shutdown_are_stragglers_right_after_it() -> None:
    """As after any close: the vehicle's next reads within the straggler window open nothing."""
    correlator = CrossingCorrelator(SETTINGS)
    correlator.handle(arrive(0))
    correlator.handle(read(1, CARD_C))
    correlator.close_all(2)
    assert correlator.handle(read(2 + SETTINGS.straggler_window_s / 2, CARD_C)) == []
    assert not correlator.has_open_crossing
    assert correlator.counters.straggler_reads == 1


# --- properties over random lanes ---------------------------------------------------------

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
    max_size=60,
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
def test_every_accepted_read_lands_in_exactly_one_crossing(
    steps: list[tuple[float, tuple[object, ...]]],
) -> None:
    """Reads in = reads in crossings + reads counted as weak or straggler; nothing vanishes."""
    events = _timeline(steps)
    correlator = CrossingCorrelator(SETTINGS)
    crossings = [c for e in events for c in correlator.handle(e)]
    crossings += correlator.close_all(events[-1].at if events else 0.0)
    reads_in = sum(isinstance(e, TagRead) for e in events)
    reads_out = sum(card.reads for crossing in crossings for card in crossing.cards)
    counted = correlator.counters.weak_reads + correlator.counters.straggler_reads
    assert reads_in == reads_out + counted


@settings(max_examples=300, deadline=None)
@given(_events)
def test_crossings_never_overlap_and_cards_are_unique_within_one(
    steps: list[tuple[float, tuple[object, ...]]],
) -> None:
    events = _timeline(steps)
    correlator = CrossingCorrelator(SETTINGS)
    crossings = [c for e in events for c in correlator.handle(e)]
    for crossing in crossings:
        assert crossing.opened_at <= crossing.closed_at
        refs = [card.ref for card in crossing.cards]
        assert len(refs) == len(set(refs))
        assert all(crossing.opened_at <= card.first_at <= card.last_at for card in crossing.cards)
        assert crossing.closed_at - crossing.opened_at <= SETTINGS.max_open_s
    for earlier, later in itertools.pairwise(crossings):
        assert earlier.closed_at <= later.opened_at
