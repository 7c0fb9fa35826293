"""The agent's receive-side state machine (PROTOCOL.md §5), without any I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge.codec import Hello, Loop
from firmware_bridge.link import EventSequencer, Offer


def hello(boot_id: int = 1, resume_seq: int = 0) -> Hello:
    return Hello(1, 1, 0, 0, boot_id, resume_seq, "LANE-T")


def loop(n: int) -> Loop:
    return Loop(n, 1, occupied=n % 2 == 0)


def drain(sequencer: EventSequencer) -> list[object]:
    released = []
    while (event := sequencer.next_ready()) is not None:
        if not isinstance(event, Hello):
            released.append(event)
        sequencer.advance()
    return released


def synced(boot_id: int = 1, seq: int = 0) -> EventSequencer:
    sequencer = EventSequencer()
    sequencer.hello(seq, hello(boot_id, seq))
    drain(sequencer)
    return sequencer


def test_events_before_any_hello_are_refused_unacknowledged():
    sequencer = EventSequencer()
    assert sequencer.offer(0, loop(0)) is Offer.NOT_SYNCED
    assert not sequencer.synced


def test_in_order_events_are_released_at_once():
    sequencer = synced()
    assert sequencer.offer(1, loop(1)) is Offer.NEW
    assert drain(sequencer) == [loop(1)]
    assert sequencer.next_seq == 2


def test_a_repeated_event_is_a_duplicate_and_released_only_once():
    sequencer = synced()
    sequencer.offer(1, loop(1))
    assert drain(sequencer) == [loop(1)]
    assert sequencer.offer(1, loop(1)) is Offer.DUPLICATE
    assert drain(sequencer) == []


def test_an_early_event_is_held_until_the_gap_before_it_is_filled():
    sequencer = synced()
    assert sequencer.offer(2, loop(2)) is Offer.NEW
    assert sequencer.offer(2, loop(2)) is Offer.DUPLICATE
    assert drain(sequencer) == []
    sequencer.offer(1, loop(1))
    assert drain(sequencer) == [loop(1), loop(2)]


def test_an_event_beyond_the_receive_window_is_refused():
    sequencer = synced()
    assert sequencer.offer(1 + sequencer.window, loop(9)) is Offer.OUT_OF_WINDOW
    assert sequencer.held_count == 0


def test_sequence_numbers_wrap_from_ffff_to_zero():
    sequencer = synced(seq=0xFFFE)
    for seq in (0xFFFF, 0x0000, 0x0001):
        assert sequencer.offer(seq, loop(seq)) is Offer.NEW
    assert drain(sequencer) == [loop(0xFFFF), loop(0), loop(1)]
    assert sequencer.offer(0xFFFF, loop(0xFFFF)) is Offer.DUPLICATE


def test_hello_from_a_new_boot_releases_held_events_counts_the_gap_and_restarts_at_resume_seq():
    sequencer = synced(boot_id=1)
    sequencer.offer(3, loop(3))  # seqs 1 and 2 never arrive: the controller rebooted

    offer, orphans, new_boot = sequencer.hello(0, hello(boot_id=2, resume_seq=0))

    assert (offer, orphans, new_boot) == (Offer.NEW, [loop(3)], True)
    assert sequencer.events_lost == 2
    drain(sequencer)
    assert sequencer.offer(1, loop(1)) is Offer.NEW
    assert drain(sequencer) == [loop(1)]


def test_hello_from_the_same_boot_keeps_the_count():
    sequencer = synced(boot_id=7)
    sequencer.offer(1, loop(1))
    drain(sequencer)

    offer, orphans, new_boot = sequencer.hello(2, hello(boot_id=7, resume_seq=0))

    assert (offer, orphans, new_boot) == (Offer.NEW, [], False)
    assert sequencer.offer(1, loop(1)) is Offer.DUPLICATE


def test_events_older_than_resume_seq_count_as_already_delivered():
    """A restarted agent syncs mid-stream: older seqs were acknowledged to its predecessor."""
    sequencer = EventSequencer()
    sequencer.hello(40, hello(resume_seq=37))
    assert sequencer.offer(36, loop(36)) is Offer.DUPLICATE
    for seq in (39, 37, 38):
        assert sequencer.offer(seq, loop(seq)) is Offer.NEW
    assert drain(sequencer) == [loop(37), loop(38), loop(39)]


@given(
    count=st.integers(1, 40),
    window=st.integers(1, 8),
    start=st.integers(0, 0xFFFF),
    choices=st.lists(st.tuples(st.integers(0, 7), st.booleans(), st.booleans()), max_size=400),
)
def test_any_loss_and_reordering_within_the_window_gives_exactly_once_in_order(
    count: int, window: int, start: int, choices: list[tuple[int, bool, bool]]
):
    """A controller that resends any unacked event of its window, with frames and ACKs lost
    at random, always gets every event released exactly once and in order."""
    sequencer = EventSequencer()
    sequencer.hello(start, hello(resume_seq=start))
    released = drain(sequencer)
    events = [(start + 1 + n) % 0x10000 for n in range(count)]
    unacked: list[int] = []
    next_index = 0
    steps = iter(choices)
    while next_index < count or unacked:
        while next_index < count and len(unacked) < window:
            unacked.append(events[next_index])
            next_index += 1
        pick, frame_lost, ack_lost = next(steps, (0, False, False))
        seq = unacked[pick % len(unacked)]
        if frame_lost:
            continue
        offer = sequencer.offer(seq, loop(seq))
        assert offer in (Offer.NEW, Offer.DUPLICATE)
        released += drain(sequencer)
        if not ack_lost:
            unacked.remove(seq)
    assert released == [loop(seq) for seq in events]
