"""Fixtures for the bridge tests: a real simulator on a real pty, a real link, a collector."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from firmware_bridge.codec import Fault, Loop, TagRead
from firmware_bridge.link import ControllerLink, LinkMessage
from firmware_bridge.scenario import LinkMisbehaviour, Scenario, generate_scenario
from firmware_bridge.simulator import ControllerSimulator

KNOWN_REFS = tuple(f"E280689400005003A4B1C20{index}" for index in range(1, 7))
"""The demo refs listed at the top of config/scenarios/basic.toml."""

WAIT_S = 15.0
"""Upper bound for any wait on the link or simulator; tests normally finish far sooner."""

FAST_LINK: dict[str, Any] = {
    "ping_interval_s": 0.1,
    "silence_timeout_s": 1.0,
    "signal_retry_interval_s": 0.05,
    "reconnect_min_s": 0.02,
    "reconnect_max_s": 0.2,
    "poll_interval_s": 0.01,
}
FAST_SIMULATOR: dict[str, Any] = {"resend_timeout_s": 0.03, "heartbeat_interval_s": 0.1}


def small_scenario(
    vehicles: int = 4, *, seed: int = 1, link: LinkMisbehaviour | None = None
) -> Scenario:
    """A scenario that plays in well under a second at speed 1."""
    return generate_scenario(
        vehicles,
        KNOWN_REFS,
        seed,
        gap_s=(0.02, 0.06),
        dwell_s=(0.05, 0.12),
        no_card_ratio=0.1,
        link=link,
    )


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    """Poll ``predicate`` for counters that have no condition to wait on; bounded."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


class Collector:
    """An ``on_message`` target that records what the link delivers and lets tests wait on it.

    It only appends under a lock, as the link's contract asks of a callback.
    """

    def __init__(self) -> None:
        self._items: list[LinkMessage] = []
        self._changed = threading.Condition()

    def __call__(self, message: LinkMessage) -> None:
        with self._changed:
            self._items.append(message)
            self._changed.notify_all()

    @property
    def items(self) -> list[LinkMessage]:
        with self._changed:
            return list(self._items)

    def events(self) -> list[TagRead | Loop | Fault]:
        return [m for m in self.items if isinstance(m, TagRead | Loop | Fault)]

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [m for m in self.items if isinstance(m, kind)]

    def wait_for(
        self, predicate: Callable[[list[LinkMessage]], bool], timeout: float = WAIT_S
    ) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._items), timeout)

    def wait_for_type(self, kind: type[Any], count: int = 1, timeout: float = WAIT_S) -> bool:
        return self.wait_for(
            lambda items: sum(isinstance(m, kind) for m in items) >= count, timeout
        )


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., ControllerSimulator]]:
    """Build and start simulators with fast timings; all are stopped at teardown."""
    started: list[ControllerSimulator] = []

    def make(scenario: Scenario, **overrides: Any) -> ControllerSimulator:
        simulator = ControllerSimulator(scenario, **{**FAST_SIMULATOR, **overrides})
        started.append(simulator)
        simulator.start()
        return simulator

    yield make
    for simulator in started:
        simulator.stop()


@pytest.fixture
def make_link() -> Iterator[Callable[..., ControllerLink]]:
    """Build and start links with fast timings; all are closed at teardown."""
    started: list[ControllerLink] = []

    def make(
        port: str, on_message: Callable[[LinkMessage], None], **overrides: Any
    ) -> ControllerLink:
        link = ControllerLink(port, on_message, **{**FAST_LINK, **overrides})
        started.append(link)
        link.start()
        return link

    yield make
    for link in started:
        link.close()
