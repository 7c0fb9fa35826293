"""The lane's status document: one JSON object, retained on the lane's status topic.

Each subsystem contributes a section (``board.contribute("outbox", provider)``): a provider is a
function returning a small JSON-ready mapping, called whenever the document is built, so the
numbers are always current and no subsystem has to push them. Faults are raised and cleared by
code (``"outbox_full"``, ``"publish_refused"``…); the document lists the active ones and the last
one raised, so a fault that cleared before anyone looked is still visible.

``on_change`` is called (from the thread that changed something) when a fault is raised or cleared
or a contributor calls :meth:`StatusBoard.changed`; the uplink uses it to publish promptly instead
of waiting for the periodic refresh. The callback must be quick: it only wakes the publisher.

To add a section, in the composition root::

    board.contribute("camera", lambda: {"fps": camera.fps, "frames": camera.frames})

Section names are unique; ``lane``, ``time``, ``faults`` and ``last_fault`` are taken.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

STATUS_SCHEMA = "lane-agent/status/1"
_RESERVED_SECTIONS = frozenset({"schema", "lane", "time", "faults", "last_fault"})

StatusProvider = Callable[[], Mapping[str, Any]]


class SectionTakenError(ValueError):
    """A second contributor asked for a section name that is already in use."""

    def __init__(self, name: str) -> None:
        super().__init__(f"status section {name!r} is already contributed or reserved")
        self.name = name


@dataclass(frozen=True, slots=True)
class Fault:
    """An alarm on the status topic. ``message`` must not carry card numbers, plates or holders."""

    code: str
    message: str
    since: float


def iso_time(at: float) -> str:
    """UTC, millisecond precision, 'Z' suffix: the format the crossing events use."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StatusBoard:
    """Collects sections and faults into the status JSON; safe to use from any thread."""

    def __init__(
        self,
        lane: Mapping[str, Any],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lane = dict(lane)
        self._clock = clock
        self._lock = threading.Lock()
        self._sections: dict[str, StatusProvider] = {}
        self._faults: dict[str, Fault] = {}
        self._last_fault: Fault | None = None
        self._listeners: list[Callable[[], None]] = []

    def contribute(self, name: str, provider: StatusProvider) -> None:
        """Add a section whose content ``provider()`` returns each time the document is built."""
        with self._lock:
            if name in _RESERVED_SECTIONS or name in self._sections:
                raise SectionTakenError(name)
            self._sections[name] = provider

    def withdraw(self, name: str, listener: Callable[[], None] | None = None) -> None:
        """Remove the section ``name`` and ``listener``: their contributor is gone (an uplink
        replaced in-process), and a new one may contribute under the same name."""
        with self._lock:
            self._sections.pop(name, None)
            if listener is not None and listener in self._listeners:
                self._listeners.remove(listener)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every change worth publishing at once."""
        with self._lock:
            self._listeners.append(listener)

    def changed(self) -> None:
        """A contributor's numbers changed in a way central should see now, not at the next tick."""
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                log.exception("status change listener failed")

    def raise_fault(self, code: str, message: str) -> None:
        """Raise (or update the message of) the fault ``code``; logged at WARNING when new."""
        with self._lock:
            existing = self._faults.get(code)
            if existing is not None and existing.message == message:
                return
            fault = Fault(code, message, existing.since if existing else self._clock())
            self._faults[code] = fault
            self._last_fault = fault
        if existing is None:
            log.warning("fault raised: %s: %s", code, message)
        self.changed()

    def clear_fault(self, code: str) -> None:
        """Clear the fault ``code`` if it is active."""
        with self._lock:
            cleared = self._faults.pop(code, None)
        if cleared is not None:
            log.info("fault cleared: %s", code)
            self.changed()

    def active_faults(self) -> dict[str, Fault]:
        with self._lock:
            return dict(self._faults)

    def snapshot(self) -> dict[str, Any]:
        """The status document as a dict; a failing provider shows up as an ``error`` entry."""
        with self._lock:
            sections = dict(self._sections)
            faults = sorted(self._faults.values(), key=lambda fault: fault.since)
            last = self._last_fault
        now = self._clock()
        document: dict[str, Any] = {
            "schema": STATUS_SCHEMA,
            "lane": self._lane,
            "time": iso_time(now),
            "faults": [_fault_json(fault) for fault in faults],
            "last_fault": None if last is None else _fault_json(last),
        }
        for name, provider in sections.items():
            try:
                document[name] = dict(provider())
            except Exception as error:  # one broken section must not hide the rest
                log.exception("status section %s failed", name)
                document[name] = {"error": type(error).__name__}
        return document

    def encode(self) -> bytes:
        """The status document as compact JSON bytes."""
        return json.dumps(self.snapshot(), separators=(",", ":"), sort_keys=False).encode()


def _fault_json(fault: Fault) -> dict[str, str]:
    return {"code": fault.code, "message": fault.message, "since": iso_time(fault.since)}
