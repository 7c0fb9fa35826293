"""Repetitive link warnings stay readable: a flood of far-ahead frames gives one WARNING and
a count, not one line per frame, while the counters still count every frame."""

from __future__ import annotations

import logging

import pytest

from firmware_bridge.codec import Heartbeat, Loop
from tests.firmware_bridge.conftest import Collector, wait_until
from tests.firmware_bridge.test_link import RawController, _hello

FRAMES = 1000


def test_a_thousand_far_ahead_frames_log_a_bounded_number_of_warnings(
    make_link, caplog: pytest.LogCaptureFixture
) -> None:
    controller = RawController()
    try:
        link = make_link(controller.path, Collector())
        assert wait_until(lambda: link.stats().port_open)
        controller.send(_hello(boot_id=1, resume_seq=0), 0)
        assert wait_until(lambda: link.is_up)
        window = link._sequencer.window
        with caplog.at_level(logging.DEBUG, logger="firmware_bridge.link"):
            for n in range(FRAMES):
                # Seqs from 1 + window on: every one too far ahead of 1 to hold.
                controller.send(Loop(0, 1, occupied=n % 2 == 0), 1 + window + n % 200)
                if n % 100 == 99:
                    controller.send(Heartbeat(0, 0, 0, 0, 0), 0)  # keep the link from going quiet
            assert wait_until(lambda: link.stats().out_of_window == FRAMES)
        stats = link.stats()
    finally:
        controller.close()
    assert stats.out_of_window == FRAMES, "every frame is counted"
    assert stats.events_lost == 0
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "ahead of" in r.getMessage()
    ]
    assert 1 <= len(warnings) <= 3, warnings
    assert warnings[0] == (
        f"link {controller.path}: event seq {1 + window} is more than {window} ahead of 1;"
        " dropped unacknowledged"
    )
    detail = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "ahead of" in r.getMessage()
    ]
    assert len(detail) == FRAMES - len(warnings), "the rest stay at DEBUG, one each"


def test_the_count_of_suppressed_far_ahead_frames_is_reported_with_the_next_warning(
    make_link, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the interval has passed the next far-ahead frame logs again, saying how many were
    left out since the last line."""
    monkeypatch.setattr("firmware_bridge.link.REPEAT_WARNING_INTERVAL_S", 0.3)
    controller = RawController()
    try:
        link = make_link(controller.path, Collector())
        assert wait_until(lambda: link.stats().port_open)
        controller.send(_hello(boot_id=1, resume_seq=0), 0)
        assert wait_until(lambda: link.is_up)
        far = 1 + link._sequencer.window
        with caplog.at_level(logging.WARNING, logger="firmware_bridge.link"):
            for _ in range(10):
                controller.send(Loop(0, 1, occupied=True), far)
            assert wait_until(lambda: link.stats().out_of_window == 10)
            wait_until(lambda: False, timeout=0.4)
            controller.send(Loop(0, 1, occupied=True), far + 1)
            assert wait_until(lambda: link.stats().out_of_window == 11)
    finally:
        controller.close()
    warnings = [r.getMessage() for r in caplog.records if "ahead of" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert warnings[1].endswith(
        f"event seq {far + 1} is more than {far - 1} ahead of 1; dropped unacknowledged"
        " (9 more since the last report)"
    )
