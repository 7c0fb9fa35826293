"""A restart of the agent is downtime, not idle time: ``Resumed`` takes it out of every timer.

After a restart the controller resends what it had buffered, stamped with its new arrival time.
Without ``Resumed`` the gap would close the restored vehicle by the idle timeout (or the longest
stay) and drop its resent reads as stragglers; the times the crossing reports must stay the ones
the inputs carried.
"""

from __future__ import annotations

import json

import pytest

from agent.lane.correlator import ClosedBy, CorrelationSettings, CrossingCorrelator, OpenedBy
from agent.lane.events import LaneInput, LoopChanged, Resumed, TagRead, Tick
from tests.lane.kit import through_json

CARD = "E28011606000020000000A01"
OTHER = "E28011606000020000000B02"
SETTINGS = CorrelationSettings(
    idle_timeout_s=2.0, max_open_s=30.0, straggler_window_s=1.5, min_rssi_dbm=-85.0
)


def read(at: float, epc: str = CARD) -> TagRead:
    return TagRead(at=at, epc=epc, antenna=1, rssi_dbm=-50.0)


def loop(at: float, occupied: bool) -> LoopChanged:
    return LoopChanged(at=at, loop_id=1, occupied=occupied)


def feed(correlator: CrossingCorrelator, *inputs: LaneInput) -> list[tuple[object, ...]]:
    closed = []
    for lane_input in inputs:
        for crossing in correlator.handle(lane_input):
            cards = {card.ref: (card.reads, card.first_at) for card in crossing.cards}
            closed.append(
                (
                    crossing.opened_by,
                    crossing.closed_by,
                    crossing.opened_at,
                    crossing.closed_at,
                    cards,
                )
            )
    return closed


def test_a_tag_opened_crossing_survives_a_downtime_longer_than_the_idle_timeout() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, read(1.0), read(1.4))
    correlator = through_json(correlator, SETTINGS)
    # Down from 1.4 to 20.0; the vehicle reached the loop meanwhile and the controller resends.
    closed = feed(correlator, Resumed(20.0), Tick(20.5), loop(20.6, True), read(20.7))
    assert closed == []
    closed = feed(correlator, loop(23.0, False))
    assert closed == [(OpenedBy.TAG, ClosedBy.DEPARTURE, 1.0, 23.0, {CARD: (3, 1.0)})]


def test_without_resumed_the_same_downtime_closes_the_crossing_by_the_idle_timeout() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, read(1.0), read(1.4))
    correlator = through_json(correlator, SETTINGS)
    closed = feed(correlator, Tick(20.5))
    assert closed == [(OpenedBy.TAG, ClosedBy.IDLE_TIMEOUT, 1.0, 3.4, {CARD: (2, 1.0)})]


def test_the_idle_timeout_counts_on_from_the_resume_only_what_was_left() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, read(1.0), Tick(2.5))  # 1.5 s of the 2 s idle timeout gone before the crash
    feed(correlator, Resumed(10.0))
    assert feed(correlator, Tick(10.4)) == []
    closed = feed(correlator, Tick(10.6))
    assert closed == [(OpenedBy.TAG, ClosedBy.IDLE_TIMEOUT, 1.0, 10.5, {CARD: (1, 1.0)})]


def test_the_longest_stay_does_not_count_the_downtime() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, loop(1.0, True))
    correlator = through_json(correlator, SETTINGS)
    feed(correlator, Resumed(101.0))  # 100 s down
    assert feed(correlator, Tick(130.0)) == []
    correlator = through_json(correlator, SETTINGS)  # the pause survives a second restart
    closed = feed(correlator, Tick(131.5))
    assert closed == [(OpenedBy.LOOP, ClosedBy.MAX_DURATION, 1.0, 131.0, {})]


def test_the_straggler_window_of_the_vehicle_that_left_does_not_count_the_downtime() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, loop(1.0, True), read(1.5), loop(2.0, False))
    feed(correlator, Resumed(30.0))
    # Its card, still in the field as the next vehicle pulls up: a straggler, not a crossing.
    assert feed(correlator, read(30.5), loop(31.0, True), read(31.2, OTHER)) == []
    closed = feed(correlator, loop(32.0, False))
    assert closed == [(OpenedBy.LOOP, ClosedBy.DEPARTURE, 31.0, 32.0, {OTHER: (1, 31.2)})]
    assert correlator.counters.straggler_reads == 1


def test_a_resume_before_any_input_or_behind_the_last_one_changes_nothing() -> None:
    fresh = CrossingCorrelator(SETTINGS)
    feed(fresh, Resumed(5.0))
    assert fresh.export_state() == CrossingCorrelator(SETTINGS).export_state()
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, read(10.0))
    before = correlator.export_state()
    feed(correlator, Resumed(9.0))  # a clock step back
    assert correlator.export_state() == before


def test_a_state_written_before_pauses_existed_restores_with_none() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, loop(1.0, True))
    state = json.loads(json.dumps(correlator.export_state()))
    del state["open"]["paused_s"]
    restored = CrossingCorrelator.restore(SETTINGS, state)
    assert feed(restored, Tick(31.0)) == [(OpenedBy.LOOP, ClosedBy.MAX_DURATION, 1.0, 31.0, {})]


@pytest.mark.parametrize("state", [[], "text", 3, None])
def test_a_state_that_is_not_an_object_is_refused_with_value_error(state: object) -> None:
    with pytest.raises(ValueError, match="not an object"):
        CrossingCorrelator.restore(SETTINGS, state)  # type: ignore[arg-type]


def test_a_resume_after_a_controller_reboot_excises_nothing_and_closes_what_timed_out() -> None:
    """A rebooted controller lost what it held (the vehicle's departure among it): the downtime
    is then a plain advance of time, and the next vehicle is not merged into the restored one."""
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, read(1.0), read(1.4))
    correlator = through_json(correlator, SETTINGS)
    closed = feed(correlator, Resumed(20.0, excise=False))
    assert closed == [(OpenedBy.TAG, ClosedBy.IDLE_TIMEOUT, 1.0, 3.4, {CARD: (2, 1.0)})]
    closed = feed(correlator, loop(20.6, True), read(20.7, OTHER), loop(22.0, False))
    assert closed == [(OpenedBy.LOOP, ClosedBy.DEPARTURE, 20.6, 22.0, {OTHER: (1, 20.7)})]


def test_a_resume_after_a_controller_reboot_closes_a_loop_vehicle_at_its_longest_stay() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, loop(1.0, True), read(1.2))
    correlator = through_json(correlator, SETTINGS)
    closed = feed(correlator, Resumed(100.0, excise=False))
    assert closed == [(OpenedBy.LOOP, ClosedBy.MAX_DURATION, 1.0, 31.0, {CARD: (1, 1.2)})]
