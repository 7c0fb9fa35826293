"""The page feed: the engine thread's calls never block, slow pages lose the oldest (counted),
and nothing but masked card numbers reaches a page."""

from __future__ import annotations

import json
import threading
import time

import pytest

from agent.page.feed import PageFeed
from agent.page.views import mask_ref
from tests.page.samples import CARD_REF, HOLDER, card, crossing_event, live_event


def _feed(**kwargs: int) -> PageFeed:
    return PageFeed(status=lambda: {"faults": []}, **kwargs)


def test_a_card_number_is_masked_to_its_last_four_characters() -> None:
    assert mask_ref("E2801160600002084A1B2C3D") == "\u2022\u2022\u2022\u20222C3D"
    assert mask_ref("ABC") == "\u2022\u2022\u2022\u2022", "a short ref is hidden whole"
    assert mask_ref(None) == "\u2022\u2022\u2022\u2022"


def test_no_full_card_number_or_holder_reference_reaches_a_page() -> None:
    feed = _feed()
    client = feed.subscribe(lambda: None)
    assert client is not None
    feed.live(live_event(), plate_crop=b"jpeg")
    feed.crossing(crossing_event(set_aside=[{"ref": CARD_REF, "association": "next_vehicle"}]))
    feed.read({"ref": CARD_REF, "antenna": 2, "rssi_dbm": -51.26, "at": 1796618167.5})
    messages, _dropped, _status = client.take()
    shown = json.dumps([m.data for m in messages]) + json.dumps(feed.hello())
    assert CARD_REF not in shown
    assert HOLDER not in shown
    assert CARD_REF[-4:] in shown
    read = messages[-1].data
    assert read == {
        "ref": mask_ref(CARD_REF),
        "antenna": 2,
        "rssi_dbm": -51.3,
        "at": "2026-12-07T04:36:07.500Z",
    }


def test_a_slow_page_loses_the_oldest_messages_and_they_are_counted() -> None:
    feed = _feed(client_queue=16)
    slow = feed.subscribe(lambda: None)
    fast = feed.subscribe(lambda: None)
    assert slow is not None
    assert fast is not None
    for n in range(40):
        feed.read({"ref": f"CARD{n:04d}", "antenna": 1, "rssi_dbm": -50.0, "at": 0.0})
        if n % 10 == 9:
            fast.take()
    messages, dropped, _ = slow.take()
    assert dropped == 24
    assert [m.data["ref"][-4:] for m in messages] == [f"{n:04d}" for n in range(24, 40)]
    assert feed.counters().dropped == 24, "the fast page lost nothing"
    assert slow.take()[1] == 0, "the count restarts after each take"


def test_the_engine_thread_never_waits_for_a_page_that_takes_nothing() -> None:
    """10 000 reads into a page that never reads its queue finish at once, with a page whose
    wake-up blocks forever: a read wakes a page only when its queue was empty."""
    feed = _feed(client_queue=64)
    blocked = threading.Event()
    wakes = []

    def wake() -> None:
        wakes.append(1)
        if len(wakes) > 1:
            blocked.wait()  # never set: a second wake-up would hang the test

    assert feed.subscribe(wake) is not None
    started = time.perf_counter()
    for n in range(10_000):
        feed.read({"ref": f"CARD{n:08d}", "antenna": n % 4, "rssi_dbm": -60.0, "at": 0.0})
    elapsed = time.perf_counter() - started
    assert len(wakes) == 1
    assert feed.counters().dropped == 10_000 - 64
    assert feed.counters().reads == 10_000
    assert elapsed < 5.0, f"10 000 reads took {elapsed:.1f} s"


def test_a_page_whose_loop_is_gone_does_not_hurt_the_engine_thread() -> None:
    feed = _feed()

    def wake() -> None:
        raise RuntimeError("Event loop is closed")

    assert feed.subscribe(wake) is not None
    feed.live(live_event())  # no exception
    assert feed.current() is not None


def test_an_empty_lane_is_announced_once_not_after_every_refresh() -> None:
    feed = _feed()
    client = feed.subscribe(lambda: None)
    assert client is not None
    feed.live(None)  # empty from the start: nothing to say
    feed.live(live_event())
    feed.live(None)
    feed.live(None)
    messages, _, _ = client.take()
    assert [(m.kind, m.data["crossing"] is None) for m in messages] == [
        ("live", False),
        ("live", True),
    ]
    assert feed.current() is None


def test_a_page_connecting_later_is_shown_the_booth_and_the_last_crossings_newest_first() -> None:
    feed = _feed(recent_crossings=3)
    for seq in range(1, 6):
        feed.crossing(crossing_event(f"c-{seq}", seq=seq), plate_crop=b"crop%d" % seq)
    feed.live(live_event("c-6", recommendation="REFER", cards=[card(result="unknown")]))
    hello = feed.hello()
    assert [c["seq"] for c in hello["crossings"]] == [5, 4, 3]
    assert hello["crossing"]["crossing_id"] == "c-6"
    assert hello["crossing"]["recommendation"] == "REFER"
    assert hello["crossing"]["cards"][0]["result"] == "unknown"
    assert hello["camera"] is False
    assert feed.plate_crop("c-5") == b"crop5"
    assert feed.plate_crop("nope") is None


def test_crossings_are_counted_by_recommendation_reason_association_and_result() -> None:
    feed = _feed()
    feed.crossing(crossing_event(recommendation="EXPEDITE", reasons=(), cards=[card()]))
    feed.crossing(
        crossing_event(
            recommendation="REFER",
            reasons=("UNKNOWN_CARD", "CARD_ASSOCIATION_UNCERTAIN"),
            cards=[card(result="unknown", association="uncertain")],
            set_aside=[{"ref": "X" * 24, "association": "next_vehicle"}],
            plate={"match": "not_registered", "text": "ABC123"},
        )
    )
    counters = feed.counters()
    assert counters.by_recommendation == {"EXPEDITE": 1, "REFER": 1}
    assert counters.by_reason == {"UNKNOWN_CARD": 1, "CARD_ASSOCIATION_UNCERTAIN": 1}
    assert counters.cards_by_association == {"attached": 1, "uncertain": 1, "next_vehicle": 1}
    assert counters.cards_by_result == {"valid": 1, "unknown": 1}
    assert counters.plates_by_match == {"not_registered": 1}


def test_pages_past_max_clients_are_refused_and_counted() -> None:
    feed = _feed(max_clients=2)
    first = feed.subscribe(lambda: None)
    assert first is not None
    assert feed.subscribe(lambda: None) is not None
    assert feed.subscribe(lambda: None) is None
    assert feed.counters().refused_clients == 1
    feed.unsubscribe(first)
    assert feed.subscribe(lambda: None) is not None


def test_a_status_change_wakes_every_page_once_with_a_status_push_due() -> None:
    feed = _feed()
    woken: list[str] = []
    a = feed.subscribe(lambda: woken.append("a"))
    b = feed.subscribe(lambda: woken.append("b"))
    assert a is not None
    assert b is not None
    feed.status_changed()
    feed.status_changed()
    assert sorted(woken) == ["a", "b"]
    assert a.take() == ([], 0, True)
    assert a.take() == ([], 0, False)


def test_closing_ends_every_stream_and_takes_no_new_page() -> None:
    feed = _feed()
    client = feed.subscribe(lambda: None)
    assert client is not None
    feed.close()
    assert client.closed
    assert feed.subscribe(lambda: None) is None


@pytest.mark.parametrize("size", [0, -1])
def test_sizes_below_one_are_refused(size: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        _feed(client_queue=size)
