"""Controller time with plain numbers: lane time follows the controller's clock, and a clock
that drifts or steps is caught and reported, never silently trusted."""

from __future__ import annotations

import pytest

from agent.lane.clock import (
    WRAP_MS,
    ClockFault,
    ClockNotSynced,
    ClockSettings,
    ControllerClock,
)

BOOT = 0x5EED0001
WALL = 1_800_000_000.0  # when the controller booted, on the agent's clock


def synced(settings: ClockSettings | None = None) -> ControllerClock:
    """A clock that heard the HELLO and a first heartbeat 10 s after the controller booted."""
    clock = ControllerClock(settings)
    clock.on_hello(BOOT)
    assert clock.on_heartbeat(10_000, WALL + 10.0) == pytest.approx(WALL + 10.0)
    return clock


def heartbeats(clock: ControllerClock, seconds: int, *, rate: float = 1.0, start: float = 10.0):
    """One heartbeat a second of the agent's clock, the controller's clock running at ``rate``."""
    for second in range(1, seconds + 1):
        clock.on_heartbeat(round((start + second * rate) * 1000), WALL + start + second)


def test_an_event_is_placed_by_its_own_timestamp_not_by_when_it_arrived() -> None:
    clock = synced()
    # Read 2 s after the heartbeat, delivered 40 s later (the agent was down meanwhile).
    assert clock.lane_time(BOOT, 12_000, received_at=WALL + 52.0) == pytest.approx(WALL + 12.0)


def test_a_heartbeat_that_arrives_late_does_not_move_lane_time_against_the_agents_clock() -> None:
    """Heartbeats only ever arrive late (the link thread was busy journalling a burst of reads):
    conversions go through the least delayed recent one, so a deadline in lane time is due when
    it is, not as late as the latest heartbeat happened to be read."""
    clock = synced()
    heartbeats(clock, 4)  # 1 s apart, no delay: lane time = agent time
    clock.on_heartbeat(15_000, WALL + 15.040)  # read 40 ms late
    assert clock.to_wall(WALL + 15.2) == pytest.approx(WALL + 15.2, abs=0.002)
    assert clock.lane_estimate(WALL + 15.5) == pytest.approx(WALL + 15.5, abs=0.002)
    assert clock.lane_now(WALL + 15.5, 0.02) == pytest.approx(WALL + 15.48, abs=0.002)


def test_events_of_a_boot_wait_for_its_first_heartbeat() -> None:
    clock = ControllerClock()
    clock.on_hello(BOOT)
    with pytest.raises(ClockNotSynced):
        clock.lane_time(BOOT, 500, received_at=WALL + 0.5)
    assert clock.counters.refused_unsynced == 1
    clock.on_heartbeat(1_000, WALL + 1.0)
    assert clock.lane_time(BOOT, 500, received_at=WALL + 1.1) == pytest.approx(WALL + 0.5)


def test_a_controller_that_sends_no_heartbeat_gets_its_base_from_an_event_in_the_end() -> None:
    settings = ClockSettings(base_wait_s=3.0)
    clock = ControllerClock(settings)
    clock.on_hello(BOOT)
    with pytest.raises(ClockNotSynced):
        clock.lane_time(BOOT, 1_000, received_at=WALL + 1.0)
    assert clock.lane_time(BOOT, 4_000, received_at=WALL + 4.5) == pytest.approx(WALL + 4.5)
    assert clock.counters.bases_from_events == 1


def test_a_new_boot_is_mapped_afresh_from_its_own_heartbeat() -> None:
    clock = synced()
    clock.on_hello(0xB0B)
    with pytest.raises(ClockNotSynced):
        clock.lane_time(0xB0B, 200, received_at=WALL + 100.3)
    clock.on_heartbeat(1_000, WALL + 101.0)  # rebooted at WALL + 100
    assert clock.lane_time(0xB0B, 200, received_at=WALL + 101.1) == pytest.approx(WALL + 100.2)
    assert clock.boot_id == 0xB0B
    assert clock.counters.boots == 2


def test_timestamps_go_on_across_the_u32_wrap() -> None:
    clock = ControllerClock()
    clock.on_hello(BOOT)
    clock.on_heartbeat(WRAP_MS - 2_000, WALL)
    before = clock.lane_time(BOOT, WRAP_MS - 1_000, received_at=WALL + 1.0)
    after = clock.lane_time(BOOT, 500, received_at=WALL + 2.5)
    assert after - before == pytest.approx(1.5)
    assert clock.counters.steps == 0


def test_an_event_older_than_the_one_before_it_is_a_step_back_taken_out() -> None:
    clock = synced()
    first = clock.lane_time(BOOT, 11_000, received_at=WALL + 11.0)
    stepped = clock.lane_time(BOOT, 6_000, received_at=WALL + 11.5)  # clock jumped back 5.5 s
    later = clock.lane_time(BOOT, 6_500, received_at=WALL + 12.0)
    assert stepped == pytest.approx(first)
    assert later - stepped == pytest.approx(0.5)
    assert clock.counters.steps == 1
    assert ClockFault.STEP in clock.faults(WALL + 12.0)


def test_an_event_from_the_future_is_a_step_forward_taken_out() -> None:
    clock = synced()
    heartbeats(clock, 2)
    stepped = clock.lane_time(BOOT, 3_612_500, received_at=WALL + 12.5)  # an hour ahead
    assert stepped == pytest.approx(WALL + 12.5, abs=0.01)
    assert clock.lane_time(BOOT, 3_613_000, received_at=WALL + 13.0) == pytest.approx(
        WALL + 13.0, abs=0.01
    )
    fault = clock.faults(WALL + 13.0)[ClockFault.STEP]
    assert "stepped +3600" in fault


def test_heartbeats_that_stay_off_the_prediction_reveal_a_step_one_late_heartbeat_does_not() -> (
    None
):
    clock = synced()
    heartbeats(clock, 5)
    assert clock.on_heartbeat(16_000, WALL + 19.0) is None  # one stalled heartbeat: skipped
    assert clock.counters.steps == 0
    for second in range(17, 20):
        clock.on_heartbeat(second * 1000 + 30_000, WALL + second)  # the clock jumped 30 s
    assert clock.counters.steps == 1
    assert clock.lane_estimate(WALL + 19.0) == pytest.approx(WALL + 19.0, abs=0.05)


def test_a_drifting_clock_is_measured_and_reported() -> None:
    clock = synced(ClockSettings(max_drift_ppm=1000.0))
    heartbeats(clock, 60, rate=1.0 + 2500e-6)
    assert clock.drift_ppm == pytest.approx(2500, rel=0.05)
    assert ClockFault.DRIFT in clock.faults(WALL + 70)
    healthy = synced()
    heartbeats(healthy, 60, rate=1.0 + 50e-6)
    assert ClockFault.DRIFT not in healthy.faults(WALL + 70)


def test_a_simulated_controller_four_times_faster_is_followed_and_reported_as_drift() -> None:
    clock = synced()
    heartbeats(clock, 40, rate=4.0)
    assert clock.rate == pytest.approx(4.0, rel=0.01)
    assert clock.lane_estimate(WALL + 50.5) == pytest.approx(WALL + 10 + 40 * 4 + 2.0, abs=0.05)
    assert clock.counters.steps == 0
    assert ClockFault.DRIFT in clock.faults(WALL + 50)


def test_lane_time_for_ticks_stands_still_when_the_controller_is_not_heard() -> None:
    clock = ControllerClock(ClockSettings(max_extrapolation_s=2.5))
    clock.on_hello(BOOT)
    assert clock.lane_now(WALL + 5.0) is None, "no heartbeat yet: no time passes"
    clock.on_heartbeat(10_000, WALL + 10.0)
    assert clock.lane_now(WALL + 11.0) == pytest.approx(WALL + 11.0)
    assert clock.lane_now(WALL + 11.0, lag_s=0.05) == pytest.approx(WALL + 10.95)
    assert clock.lane_now(WALL + 60.0) == pytest.approx(WALL + 12.5)


def test_after_a_restart_no_tick_runs_until_the_controllers_backlog_starts_to_arrive() -> None:
    clock = ControllerClock.restore(synced().export_state())
    clock.on_hello(BOOT)
    clock.on_heartbeat(40_000, WALL + 40.0, events_pending=9)
    assert clock.lane_now(WALL + 40.1) is None
    clock.lane_time(BOOT, 12_000, received_at=WALL + 40.2)
    assert clock.lane_now(WALL + 40.3) == pytest.approx(WALL + 12.0)


def test_while_the_controller_drains_a_backlog_ticks_wait_for_its_events() -> None:
    clock = synced()
    clock.lane_time(BOOT, 4_000, received_at=WALL + 10.2)  # an old event, resent
    clock.on_heartbeat(10_500, WALL + 10.5, events_pending=12)
    assert clock.lane_now(WALL + 10.6) == pytest.approx(WALL + 4.0)
    clock.on_heartbeat(11_500, WALL + 11.5, events_pending=0)
    assert clock.lane_now(WALL + 11.6) == pytest.approx(WALL + 11.6)


def test_wall_and_lane_time_convert_both_ways_through_the_offset() -> None:
    clock = ControllerClock()
    clock.on_hello(BOOT)
    clock.on_heartbeat(10_000, WALL + 10.0 + 3.0)  # the mapping is off by 3 s of transit
    lane = clock.lane_time(BOOT, 11_000, received_at=WALL + 14.0)
    assert clock.to_wall(lane) == pytest.approx(WALL + 14.0)
    assert clock.from_wall(WALL + 14.0) == pytest.approx(lane)


def test_a_restored_clock_maps_the_same_boot_as_before() -> None:
    clock = synced()
    before = clock.lane_time(BOOT, 20_000, received_at=WALL + 20.0)
    restored = ControllerClock.restore(clock.export_state())
    restored.on_hello(BOOT)
    # Resent after a restart, before any heartbeat: the boot is known, the event is placed.
    assert restored.lane_time(BOOT, 21_000, received_at=WALL + 90.0) == pytest.approx(before + 1.0)


def test_a_malformed_state_is_refused() -> None:
    with pytest.raises(ValueError, match="malformed"):
        ControllerClock.restore({"boot_id": "x"})
    assert ControllerClock.restore(None).boot_id is None


def test_the_status_section_says_how_the_controller_clock_stands() -> None:
    clock = synced()
    heartbeats(clock, 40)
    status = clock.status(WALL + 50)
    assert status["synced"] is True
    assert status["boot_id"] == f"{BOOT:#010x}"
    assert status["drift_ppm"] == pytest.approx(0.0, abs=1.0)
    assert (status["steps"], status["last_step_s"]) == (0, None)


def test_a_new_boot_goes_on_from_where_lane_time_had_got_to_never_behind_it() -> None:
    """A simulated controller played four times faster ran lane time ahead of the agent's
    clock; after the agent restarts and the controller reboots, lane time continues at that
    pace instead of jumping back to the agent's clock (which would make the next vehicle's
    reads older than the last one's)."""
    clock = synced()
    heartbeats(clock, 20, rate=4.0)
    last = clock.lane_time(BOOT, 90_000, received_at=WALL + 30.0)
    restored = ControllerClock.restore(clock.export_state())
    restored.on_hello(0xB0B)
    first = restored.on_heartbeat(500, WALL + 35.0)
    assert first is not None
    assert first == pytest.approx(last + 5 * 4.0, abs=0.5)
    assert first > last
