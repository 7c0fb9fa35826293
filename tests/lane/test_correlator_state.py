"""The correlator's exported state: a restore followed by the rest of the inputs changes nothing.

This is what makes the input journal's replay exact: the agent stores the exported state with
each committed crossing and, after a crash, restores it and replays the inputs that came after.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.lane.correlator import CorrelationSettings, Crossing, CrossingCorrelator, OpenedBy
from agent.lane.events import LaneInput, LoopChanged, TagRead, Tick, VisionChanged, VisionFault
from tests.lane.kit import through_json

CARDS = ("E28011606000020000000A01", "E28011606000020000000B02", "E28011606000020000000C03")
SETTINGS = CorrelationSettings(
    idle_timeout_s=2.0, max_open_s=30.0, straggler_window_s=1.5, min_rssi_dbm=-85.0
)


def feed(correlator: CrossingCorrelator, inputs: list[LaneInput]) -> list[Crossing]:
    closed: list[Crossing] = []
    for lane_input in inputs:
        closed.extend(correlator.handle(lane_input))
    return closed


_inputs = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=3.0),
        st.one_of(
            st.tuples(st.just("read"), st.sampled_from(CARDS), st.floats(-95, -30)),
            st.tuples(st.just("loop"), st.sampled_from([1, 2]), st.booleans()),
            st.tuples(st.just("tick")),
            st.tuples(st.just("vision"), st.sampled_from([None, *VisionFault])),
        ),
    ),
    max_size=40,
)


def timeline(steps: list[tuple[float, tuple[object, ...]]]) -> list[LaneInput]:
    at = 0.0
    inputs: list[LaneInput] = []
    for gap, step in steps:
        at += gap
        match step:
            case ("read", str(epc), float(rssi)):
                inputs.append(TagRead(at=at, epc=epc, antenna=1, rssi_dbm=rssi))
            case ("loop", int(loop_id), bool(occupied)):
                inputs.append(LoopChanged(at=at, loop_id=loop_id, occupied=occupied))
            case ("tick",):
                inputs.append(Tick(at))
            case ("vision", fault):
                inputs.append(VisionChanged(at=at, fault=fault))  # type: ignore[arg-type]
    return inputs


@settings(max_examples=300, deadline=None)
@given(_inputs, st.integers(min_value=0, max_value=40))
def test_restoring_the_exported_state_anywhere_gives_the_same_crossings(
    steps: list[tuple[float, tuple[object, ...]]], cut: int
) -> None:
    inputs = timeline(steps)
    cut = min(cut, len(inputs))
    straight = CrossingCorrelator(SETTINGS)
    expected = feed(straight, inputs)

    first = CrossingCorrelator(SETTINGS)
    closed = feed(first, inputs[:cut])
    restored = through_json(first, SETTINGS)
    closed += feed(restored, inputs[cut:])

    assert closed == expected
    assert restored.closed_count == straight.closed_count == len(expected)
    assert restored.export_state() == straight.export_state()


def test_closed_count_numbers_crossings_across_a_restore() -> None:
    correlator = CrossingCorrelator(SETTINGS)
    feed(correlator, [LoopChanged(1.0, 1, True), LoopChanged(2.0, 1, False), Tick(4.0)])
    assert correlator.closed_count == 1
    restored = through_json(correlator, SETTINGS)
    feed(restored, [LoopChanged(10.0, 1, True)])
    assert restored.closed_count == 1, "an open crossing is not counted"
    restored.close_all(11.0)
    assert restored.closed_count == 2


def test_the_open_crossing_and_the_straggler_memory_survive_a_restore() -> None:
    """The vehicle at the booth keeps its cards; the one that just left keeps its stragglers out."""
    correlator = CrossingCorrelator(SETTINGS)
    left, staying = CARDS[0], CARDS[1]
    feed(
        correlator,
        [
            LoopChanged(1.0, 1, True),
            TagRead(1.2, left, 1, -50.0),
            TagRead(5.2, left, 1, -50.0),
            LoopChanged(6.0, 1, False),
            Tick(6.3),
            LoopChanged(6.4, 1, True),
            TagRead(6.6, staying, 2, -60.0, tid="E2003412"),
        ],
    )
    restored = through_json(correlator, SETTINGS)
    closed = feed(
        restored,
        [
            TagRead(6.7, left, 1, -70.0),  # the departed vehicle, driving off
            TagRead(7.0, staying, 2, -59.0),
            LoopChanged(12.0, 1, False),
            Tick(14.0),
        ],
    )
    assert len(closed) == 1
    crossing = closed[0]
    assert crossing.opened_at == 6.4
    assert crossing.opened_by is OpenedBy.LOOP
    assert [(c.ref, c.reads, c.tid) for c in crossing.cards] == [(staying, 2, "E2003412")]
    assert restored.counters.straggler_reads == 1


def test_a_state_of_another_version_or_shape_is_refused() -> None:
    state = CrossingCorrelator(SETTINGS).export_state()
    with pytest.raises(ValueError, match="version"):
        CrossingCorrelator.restore(SETTINGS, {**state, "version": 99})
    with pytest.raises(ValueError, match="malformed"):
        CrossingCorrelator.restore(SETTINGS, {"version": state["version"]})
