"""The real ControllerLink against the real ControllerSimulator over a real pty."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import tty
from pathlib import Path

import pytest

from firmware_bridge.codec import (
    Fault,
    Heartbeat,
    Hello,
    Loop,
    SignalState,
    TagRead,
    encode_frame,
)
from firmware_bridge.link import (
    ControllerEvent,
    ControllerLink,
    EventOrigin,
    EventSequencer,
    LinkClosedError,
    LinkDown,
    LinkDownReason,
    LinkMessage,
    LinkUp,
    Offer,
    SignalAcked,
    SignalFailed,
)
from firmware_bridge.scenario import LinkMisbehaviour, load_scenario
from firmware_bridge.scenario_plan import plan_scenario
from tests.firmware_bridge.conftest import (
    FAST_LINK,
    WAIT_S,
    Collector,
    small_scenario,
    wait_until,
)

NOISY = LinkMisbehaviour(
    drop_probability=0.2,
    drop_incoming_probability=0.2,
    garbage_probability=0.2,
    garbage_max_bytes=40,
    corrupt_probability=0.15,
)


def link_states(collector: Collector) -> list[LinkMessage]:
    return collector.of_type(LinkUp | LinkDown)


def test_clean_link_says_link_up_then_delivers_every_event_once_in_order(make_simulator, make_link):
    scenario = small_scenario()
    simulator = make_simulator(scenario)
    collector = Collector()
    link = make_link(simulator.device_path, collector)

    assert simulator.wait_done(WAIT_S)
    assert collector.wait_for(lambda items: len(collector.events()) >= len(simulator.sent_events()))

    first = collector.items[0]
    assert isinstance(first, LinkUp)
    assert first.hello.controller_id == scenario.controller_id
    assert first.hello.boot_id == simulator.boot_id
    assert collector.events() == simulator.sent_events()
    assert link.stats().events_delivered == len(simulator.sent_events())
    assert link.is_up


def test_noisy_link_still_delivers_every_event_exactly_once_in_order(make_simulator, make_link):
    """Drops both ways, garbage and bit flips: resends fill the gaps, dedup removes repeats."""
    simulator = make_simulator(small_scenario(6, seed=5, link=NOISY))
    collector = Collector()
    link = make_link(simulator.device_path, collector)

    assert simulator.wait_done(WAIT_S)
    sent = simulator.sent_events()
    assert collector.wait_for(lambda items: len(collector.events()) >= len(sent))

    assert collector.events() == sent
    link_stats, sim_stats = link.stats(), simulator.stats()
    # The misbehaviour really happened, and the link saw and survived it.
    assert sim_stats.frames_dropped > 0
    assert sim_stats.frames_dropped_incoming > 0
    assert sim_stats.garbage_injections > 0
    assert sim_stats.frames_corrupted > 0
    assert link_stats.crc_errors > 0
    assert link_stats.framing_errors > 0
    assert link_stats.duplicates > 0
    assert link_stats.events_lost == 0


def test_shipped_noisy_link_scenario_plays_through_without_loss(make_simulator, make_link):
    scenario = load_scenario(Path(__file__).parents[2] / "config/scenarios/noisy_link.toml")
    simulator = make_simulator(scenario, speed=20.0)
    collector = Collector()
    make_link(simulator.device_path, collector)

    assert simulator.wait_done(WAIT_S)
    sent = simulator.sent_events()
    assert collector.wait_for(lambda _: len(collector.events()) >= len(sent))
    assert collector.events() == sent
    assert len(sent) == len(plan_scenario(scenario))


def test_set_signal_is_acknowledged_and_recorded_once_per_command(make_simulator, make_link):
    simulator = make_simulator(small_scenario(1))
    collector = Collector()
    link = make_link(simulator.device_path, collector)
    assert collector.wait_for_type(LinkUp)

    link.set_signal(SignalState.STOP)
    assert collector.wait_for_type(SignalAcked)
    link.set_signal(SignalState.PROCEED)
    assert collector.wait_for_type(SignalAcked, 2)

    assert collector.of_type(SignalAcked) == [
        SignalAcked(SignalState.STOP),
        SignalAcked(SignalState.PROCEED),
    ]
    assert simulator.signal_history == [SignalState.STOP, SignalState.PROCEED]
    assert simulator.current_signal is SignalState.PROCEED


def test_set_signal_is_resent_until_acknowledged_when_frames_to_the_controller_are_lost(
    make_simulator, make_link
):
    lossy = LinkMisbehaviour(drop_incoming_probability=0.5)
    simulator = make_simulator(small_scenario(1, link=lossy))
    collector = Collector()
    link = make_link(simulator.device_path, collector, signal_max_attempts=40)
    assert collector.wait_for_type(LinkUp)

    commanded = [SignalState.STOP, SignalState.MANUAL, SignalState.PROCEED, SignalState.STOP]
    for count, state in enumerate(commanded, start=1):
        link.set_signal(state)
        assert collector.wait_for_type(SignalAcked, count)

    assert simulator.signal_history == commanded
    assert link.stats().signal_frames_sent > len(commanded)
    assert collector.of_type(SignalFailed) == []


def test_set_signal_reports_failure_when_the_controller_never_answers(make_simulator, make_link):
    simulator = make_simulator(small_scenario(1))
    collector = Collector()
    link = make_link(simulator.device_path, collector, signal_max_attempts=3)
    assert collector.wait_for_type(LinkUp)
    simulator.set_silent(True)

    link.set_signal(SignalState.STOP)

    assert collector.wait_for_type(SignalFailed)
    assert collector.of_type(SignalFailed) == [SignalFailed(SignalState.STOP, 3)]
    assert collector.of_type(SignalAcked) == []
    assert simulator.signal_history == []
    assert link.stats().signals_failed == 1


def test_ping_is_answered_with_pong_and_round_trip_time_measured(make_simulator, make_link):
    simulator = make_simulator(small_scenario(1))
    link = make_link(simulator.device_path, Collector())

    assert wait_until(lambda: link.stats().pongs_received >= 3)
    assert simulator.stats().pings_answered >= 3
    stats = link.stats()
    assert stats.pings_sent >= stats.pongs_received >= 3
    assert stats.last_rtt_s is not None
    assert stats.last_rtt_s >= 0


def test_silent_controller_takes_the_link_down_and_recovery_loses_no_event(
    make_simulator, make_link
):
    """Events the controller queued while silent arrive after recovery, once and in order."""
    simulator = make_simulator(small_scenario(8, seed=3))
    collector = Collector()
    link = make_link(simulator.device_path, collector)
    assert collector.wait_for(lambda _: len(collector.events()) >= 3)

    simulator.set_silent(True)
    assert collector.wait_for_type(LinkDown)
    simulator.set_silent(False)

    assert collector.wait_for_type(LinkUp, 2)
    assert simulator.wait_done(WAIT_S)
    sent = simulator.sent_events()
    assert collector.wait_for(lambda _: len(collector.events()) >= len(sent))
    assert collector.events() == sent
    states = link_states(collector)
    assert [type(s) for s in states[:3]] == [LinkUp, LinkDown, LinkUp]
    assert states[1].reason is LinkDownReason.SILENCE
    assert link.stats().silences >= 1


def test_unplugged_cable_takes_the_link_down_and_replugging_recovers(
    make_simulator, make_link, tmp_path: Path
):
    """The device path vanishes; the link retries with back-off and picks up the new pty."""
    device = tmp_path / "ttyLANE"
    simulator = make_simulator(small_scenario(8, seed=4), link_path=device)
    collector = Collector()
    link = make_link(str(device), collector)
    assert collector.wait_for(lambda _: len(collector.events()) >= 3)

    simulator.unplug()
    assert collector.wait_for_type(LinkDown)
    assert collector.of_type(LinkDown)[0].reason is LinkDownReason.PORT_ERROR
    assert wait_until(lambda: link.stats().open_failures >= 1)
    assert not device.exists()
    simulator.replug()

    assert collector.wait_for_type(LinkUp, 2)
    assert simulator.wait_done(WAIT_S)
    sent = simulator.sent_events()
    assert collector.wait_for(lambda _: len(collector.events()) >= len(sent))
    assert collector.events() == sent
    assert link.stats().port_opens >= 2


def test_controller_reboot_is_reported_and_the_signal_state_is_sent_again(
    make_simulator, make_link
):
    simulator = make_simulator(small_scenario(1))
    collector = Collector()
    link = make_link(simulator.device_path, collector)
    assert collector.wait_for_type(LinkUp)
    link.set_signal(SignalState.STOP)
    assert collector.wait_for_type(SignalAcked)
    first_boot = simulator.boot_id

    simulator.reboot()

    assert collector.wait_for_type(LinkUp, 2)
    assert simulator.wait_signal(SignalState.STOP, WAIT_S)
    states = link_states(collector)
    assert states[1] == LinkDown(
        LinkDownReason.CONTROLLER_RESTARTED, f"new boot id {simulator.boot_id:08x}"
    )
    assert states[2].hello.boot_id == simulator.boot_id != first_boot
    assert simulator.signal_history == [SignalState.STOP, SignalState.STOP]
    assert link.stats().controller_restarts == 1


def test_signal_state_is_sent_again_after_the_controller_fell_back_to_manual_during_an_outage(
    make_simulator, make_link
):
    simulator = make_simulator(small_scenario(1), host_timeout_s=0.3)
    collector = Collector()
    link = make_link(simulator.device_path, collector)
    assert collector.wait_for_type(LinkUp)
    link.set_signal(SignalState.STOP)
    assert collector.wait_for_type(SignalAcked)

    simulator.set_silent(True)
    assert simulator.wait_signal(SignalState.MANUAL, WAIT_S)
    assert collector.wait_for_type(LinkDown)
    simulator.set_silent(False)

    assert collector.wait_for_type(SignalAcked, 2)
    assert simulator.current_signal is SignalState.STOP
    assert simulator.signal_history == [SignalState.STOP, SignalState.STOP]


def test_restarted_agent_asks_for_hello_and_resumes_where_the_controller_is(
    make_simulator, make_link
):
    """A new link has no seq to count from: it requests a HELLO and starts at resume_seq.

    Across the restart nothing is lost; an event whose ACK was lost may be delivered twice.
    """
    simulator = make_simulator(small_scenario(10, seed=8))
    first = Collector()
    first_link = make_link(simulator.device_path, first)
    assert first.wait_for(lambda _: len(first.events()) >= 5)
    first_link.close()

    second = Collector()
    second_link = make_link(simulator.device_path, second)
    assert simulator.wait_done(WAIT_S)
    sent = simulator.sent_events()
    before = first.events()
    assert second.wait_for(lambda _: len(before) + len(second.events()) >= len(sent))
    after = second.events()

    overlap = len(before) + len(after) - len(sent)
    assert overlap >= 0
    assert before + after[overlap:] == sent
    assert after[:overlap] == before[len(before) - overlap :]
    assert simulator.stats().hello_requests >= 1
    assert isinstance(second.items[0], LinkUp)
    assert second_link.stats().events_lost == 0


def test_a_port_in_use_is_not_opened_twice(make_simulator, make_link):
    """The exclusive lock keeps a second opener (ModemManager, a second agent) off the port."""
    simulator = make_simulator(small_scenario(1))
    collector = Collector()
    make_link(simulator.device_path, collector)
    assert collector.wait_for_type(LinkUp)

    intruder = make_link(simulator.device_path, Collector())
    assert wait_until(lambda: intruder.stats().open_failures >= 2)
    assert intruder.stats().port_opens == 0
    assert not intruder.is_up


def test_a_failing_callback_does_not_lose_events(make_simulator, make_link):
    """When on_message raises (a full queue), the event is kept and offered again."""
    delivered: queue.Queue[LinkMessage] = queue.Queue()
    calls = 0

    def sometimes_full(message: LinkMessage) -> None:
        nonlocal calls
        calls += 1
        if isinstance(message, TagRead) and calls % 3 == 0:
            raise queue.Full
        delivered.put_nowait(message)

    simulator = make_simulator(small_scenario(3, seed=2))
    link = make_link(simulator.device_path, sometimes_full)
    assert simulator.wait_done(WAIT_S)
    sent = simulator.sent_events()
    events: list[LinkMessage] = []
    while len(events) < len(sent):
        message = delivered.get(timeout=WAIT_S)
        if isinstance(message, TagRead | Loop | Fault):
            events.append(message)

    assert events == sent
    assert link.stats().callback_errors > 0


def test_close_stops_the_thread_releases_the_port_and_refuses_further_use(
    make_simulator, make_link
):
    simulator = make_simulator(small_scenario(1))
    collector = Collector()
    link = make_link(simulator.device_path, collector)
    assert collector.wait_for_type(LinkUp)

    assert link.is_running
    link.close()

    assert not link.is_running
    assert collector.of_type(LinkDown)[-1].reason is LinkDownReason.CLOSED
    with pytest.raises(LinkClosedError, match="is closed"):
        link.set_signal(SignalState.STOP)
    successor = Collector()
    make_link(simulator.device_path, successor)
    assert successor.wait_for_type(LinkUp)


def test_link_rejects_a_silence_timeout_shorter_than_the_ping_interval():
    with pytest.raises(ValueError, match=r"silence_timeout_s \(0.5\) must exceed ping_interval_s"):
        ControllerLink("/dev/null", print, ping_interval_s=1.0, silence_timeout_s=0.5)


# --- acknowledgement after delivery, origins and resume (the agent's input journal) ---------


class TakingCallback:
    """An ``on_event`` that stores each event with its origin, as the agent's journal does.

    ``die_after`` stores that many events and then fails on the last one *after* storing it, like
    an agent killed between storing an event and acknowledging it; from then on it takes nothing.
    """

    def __init__(self, die_after: int | None = None) -> None:
        self.taken: list[tuple[ControllerEvent, EventOrigin | None]] = []
        self.die_after = die_after
        self.dead = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, event: ControllerEvent, origin: EventOrigin | None) -> None:
        with self._lock:
            if self.dead.is_set():
                raise ConnectionAbortedError("this agent is gone")
            self.taken.append((event, origin))
            if self.die_after is not None and len(self.taken) >= self.die_after:
                self.dead.set()
                raise ConnectionAbortedError("killed after storing, before the ACK")

    def events(self) -> list[ControllerEvent]:
        with self._lock:
            return [event for event, _ in self.taken]

    def last_origin(self) -> EventOrigin | None:
        with self._lock:
            return self.taken[-1][1]


def test_events_are_acknowledged_only_once_their_callback_has_returned(make_simulator, make_link):
    """While the callback refuses every event, the controller keeps every one unacknowledged."""
    accepting = threading.Event()
    taken: list[ControllerEvent] = []

    def on_event(event: ControllerEvent, origin: EventOrigin | None) -> None:
        if not accepting.is_set():
            raise OSError("cannot store it now")
        taken.append(event)

    simulator = make_simulator(small_scenario(3, seed=3))
    link = make_link(simulator.device_path, Collector(), on_event=on_event)
    assert simulator.wait_for(lambda sim: sim.played, WAIT_S)
    assert wait_until(lambda: link.stats().callback_errors >= 3)
    assert simulator.stats().acks_received == 1, "only the boot HELLO, which delivers nothing"
    assert simulator.unacknowledged == len(plan_scenario(simulator.scenario))

    accepting.set()
    assert simulator.wait_done(WAIT_S)
    assert taken == simulator.sent_events()


def test_on_event_gets_each_event_with_its_controller_boot_and_seq(make_simulator, make_link):
    simulator = make_simulator(small_scenario(2, seed=4))
    callback = TakingCallback()
    collector = Collector()
    make_link(simulator.device_path, collector, on_event=callback)
    assert simulator.wait_done(WAIT_S)
    origins = [origin for _, origin in callback.taken]
    assert origins == [EventOrigin(simulator.boot_id, seq) for seq in range(1, len(origins) + 1)]
    assert callback.events() == simulator.sent_events()
    assert collector.events() == [], "controller events went to on_event only"
    assert collector.of_type(LinkUp), "link events still go to on_message"


@pytest.mark.parametrize("resume", [True, False], ids=["with_resume", "without_resume"])
def test_an_event_stored_but_not_acknowledged_is_delivered_again_unless_the_link_resumes(
    make_simulator, make_link, resume: bool
):
    """The agent died between storing an event and its ACK: the controller resends it.

    Told where the previous run stopped, the new link acknowledges the copy without delivering
    it; without ``resume`` it is delivered a second time (at-least-once).
    """
    simulator = make_simulator(small_scenario(6, seed=6))
    first = TakingCallback(die_after=5)
    first_link = make_link(simulator.device_path, Collector(), on_event=first)
    assert first.dead.wait(WAIT_S)
    first_link.close()

    second = TakingCallback()
    make_link(
        simulator.device_path,
        Collector(),
        on_event=second,
        resume=first.last_origin() if resume else None,
    )
    assert simulator.wait_done(WAIT_S)
    delivered = first.events() + second.events()
    sent = simulator.sent_events()
    if resume:
        assert delivered == sent
    else:
        assert delivered == sent[:5] + sent[4:], "the fifth event, a second time"


def test_a_restarted_link_never_waits_for_a_seq_the_controller_will_not_resend(
    make_simulator, make_link
):
    """Two agents die in a row with events in flight; the third still gets everything.

    The second agent's HELLO sits behind unacknowledged events; since the link acknowledges in
    seq order (HELLOs included) and the controller sends a HELLO's resume_seq as of each send,
    the third agent starts exactly at the oldest event the controller still holds.
    """
    simulator = make_simulator(small_scenario(10, seed=12))
    runs = [TakingCallback(die_after=2), TakingCallback(die_after=3)]
    for callback in runs:
        link = make_link(simulator.device_path, Collector(), on_event=callback)
        assert callback.dead.wait(WAIT_S)
        link.close()
    last = TakingCallback()
    make_link(simulator.device_path, Collector(), on_event=last)
    assert simulator.wait_done(WAIT_S), "the third agent stalled on a seq nobody resends"
    assert simulator.stats().hello_requests >= 2
    delivered = [event for callback in (*runs, last) for event in callback.events()]
    sent = simulator.sent_events()
    # Each dead agent's last event was stored but never acknowledged: it comes again.
    assert delivered == sent[:2] + sent[1:4] + sent[3:]


def _hello(boot_id: int, resume_seq: int) -> Hello:
    return Hello(1, 1, 0, 0, boot_id, resume_seq, "LANE-T")


@pytest.mark.parametrize(
    ("hello_seq", "resume_seq", "resume", "next_seq"),
    [
        (20, 12, EventOrigin(7, 14), 15),  # stored 14, ACK lost: 12..14 are copies
        (20, 12, EventOrigin(7, 19), 20),  # everything before the HELLO was stored
        (20, 12, EventOrigin(8, 14), 12),  # another boot: says nothing
        (20, 12, EventOrigin(7, 5), 12),  # the controller has moved past it
        (0, 0, EventOrigin(7, 14), 0),  # a new power-up that drew the same boot id
        (3, 0xFFFE, EventOrigin(7, 0xFFFF), 0),  # across the wrap
    ],
)
def test_resume_starts_after_the_last_stored_event_only_while_the_controller_still_holds_it(
    hello_seq: int, resume_seq: int, resume: EventOrigin, next_seq: int
):
    sequencer = EventSequencer(resume=resume)
    sequencer.hello(hello_seq, _hello(7, resume_seq))
    assert sequencer.next_seq == next_seq
    stored_before = (next_seq - 1) % 0x10000
    if next_seq != resume_seq:
        assert sequencer.offer(stored_before, Loop(0, 1, occupied=True)) is Offer.DUPLICATE
        assert sequencer.is_delivered(stored_before), "so its copy is acknowledged again"


def test_a_slow_callback_is_no_silence_of_the_controller(make_simulator, make_link):
    """Storing one event (an fsync on a busy disk) outlasts the silence timeout: no reopen."""
    slow_once = threading.Event()
    taken: list[ControllerEvent] = []

    def on_event(event: ControllerEvent, origin: EventOrigin | None) -> None:
        if not slow_once.is_set():
            slow_once.set()
            time.sleep(FAST_LINK["silence_timeout_s"] + 0.3)
        taken.append(event)

    simulator = make_simulator(small_scenario(2, seed=8))
    collector = Collector()
    link = make_link(simulator.device_path, collector, on_event=on_event)
    assert simulator.wait_done(WAIT_S)
    assert slow_once.is_set()
    assert taken == simulator.sent_events()
    assert link.stats().silences == 0
    assert not [m for m in collector.of_type(LinkDown) if m.reason is LinkDownReason.SILENCE]


class RawController:
    """The controller end of a pty, written frame by frame: for sequences no simulator makes."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def send(self, message: Hello | TagRead | Loop | Heartbeat, seq: int) -> None:
        os.write(self.master, encode_frame(message, seq))

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def test_events_orphaned_by_a_reboot_are_kept_until_the_callback_takes_them(make_link):
    """Events held behind a gap when the controller reboots are never resent: a callback that
    fails on them must get them again, before the new boot's events, like any other event."""
    controller = RawController()
    accepting = threading.Event()
    taken: list[tuple[ControllerEvent, EventOrigin | None]] = []

    def on_event(event: ControllerEvent, origin: EventOrigin | None) -> None:
        if not accepting.is_set():
            raise OSError("cannot store it now")
        taken.append((event, origin))

    orphan = Loop(0, 1, occupied=True)
    after_reboot = Loop(0, 1, occupied=False)
    try:
        link = make_link(controller.path, Collector(), on_event=on_event)
        assert wait_until(lambda: link.stats().port_open)  # opening flushes what came before
        controller.send(_hello(boot_id=1, resume_seq=0), 0)
        assert wait_until(lambda: link.is_up)
        controller.send(orphan, 2)  # seq 1 never arrives: held behind the gap
        assert wait_until(lambda: link._sequencer.held_count == 1)
        controller.send(_hello(boot_id=2, resume_seq=0), 0)  # the reboot releases it
        controller.send(after_reboot, 1)
        assert wait_until(lambda: link.stats().callback_errors >= 2)
        accepting.set()
        for _ in range(20):  # frames keep the link from going silent
            controller.send(Heartbeat(0, 0, 0, 0, 0), 0)
            if len(taken) == 2:
                break
            time.sleep(0.05)
    finally:
        controller.close()
    assert taken == [(orphan, None), (after_reboot, EventOrigin(2, 1))]


def test_orphans_the_callback_never_took_are_counted_lost_at_close(make_link, caplog):
    """A closed link offers them to nobody again and the rebooted controller never resends
    them: they must show in ``events_lost`` and in the log, not vanish."""
    controller = RawController()

    def on_event(event: ControllerEvent, origin: EventOrigin | None) -> None:
        raise OSError("cannot store it now")

    try:
        link = make_link(controller.path, Collector(), on_event=on_event)
        assert wait_until(lambda: link.stats().port_open)
        controller.send(_hello(boot_id=1, resume_seq=0), 0)
        assert wait_until(lambda: link.is_up)
        controller.send(Loop(0, 1, occupied=True), 2)  # held behind the missing seq 1
        controller.send(Loop(0, 1, occupied=False), 3)
        assert wait_until(lambda: link._sequencer.held_count == 2)
        controller.send(_hello(boot_id=2, resume_seq=0), 0)  # the reboot releases them
        assert wait_until(lambda: link.stats().callback_errors >= 1)
        lost_before = link.stats().events_lost
        with caplog.at_level(logging.ERROR, logger="firmware_bridge.link"):
            link.close()
    finally:
        controller.close()
    assert link.stats().events_lost == lost_before + 2
    assert any("never taken by the callback" in r.getMessage() for r in caplog.records)
