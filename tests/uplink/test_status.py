"""The status board: sections contributed by subsystems, faults, change notifications."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.status import STATUS_SCHEMA, SectionTakenError, StatusBoard

LANE = {"port_id": "port-7", "lane_id": "lane-3"}


def board_at(now: list[float]) -> StatusBoard:
    return StatusBoard(LANE, clock=lambda: now[0])


def test_sections_are_read_from_their_providers_each_time_the_document_is_built() -> None:
    board = board_at([1_700_000_000.0])
    depth = [3]
    board.contribute("outbox", lambda: {"depth": depth[0]})
    assert board.snapshot()["outbox"] == {"depth": 3}
    depth[0] = 7
    document = json.loads(board.encode())
    assert document["outbox"] == {"depth": 7}
    assert document["schema"] == STATUS_SCHEMA
    assert document["lane"] == LANE
    assert document["time"] == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize("name", ["outbox", "faults", "lane"])
def test_a_section_name_can_be_contributed_once_and_reserved_names_never(name: str) -> None:
    board = board_at([0.0])
    board.contribute("outbox", dict)
    with pytest.raises(SectionTakenError, match=repr(name)):
        board.contribute(name, dict)


def test_a_failing_provider_shows_an_error_entry_and_the_other_sections_stay() -> None:
    board = board_at([0.0])

    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    board.contribute("camera", broken)
    board.contribute("outbox", lambda: {"depth": 1})
    document = board.snapshot()
    assert document["camera"] == {"error": "RuntimeError"}
    assert document["outbox"] == {"depth": 1}


def test_faults_are_listed_while_active_and_the_last_one_stays_after_it_clears() -> None:
    now = [100.0]
    board = board_at(now)
    changes: list[int] = []
    board.on_change(lambda: changes.append(1))
    board.raise_fault("outbox_full", "crossings cannot be stored")
    now[0] = 101.0
    board.raise_fault("outbox_full", "crossings cannot be stored")  # same: no change
    board.raise_fault("publish_refused", "not authorised")
    document = board.snapshot()
    assert [fault["code"] for fault in document["faults"]] == ["outbox_full", "publish_refused"]
    assert document["last_fault"]["code"] == "publish_refused"
    board.clear_fault("outbox_full")
    board.clear_fault("outbox_full")  # not active any more: no change
    document = board.snapshot()
    assert [fault["code"] for fault in document["faults"]] == ["publish_refused"]
    assert len(changes) == 3


def test_a_changed_call_reaches_every_listener_even_if_one_fails() -> None:
    board = board_at([0.0])
    heard: list[str] = []

    def failing() -> None:
        raise RuntimeError("listener broke")

    board.on_change(failing)
    board.on_change(lambda: heard.append("second"))
    board.changed()
    assert heard == ["second"]
