"""A small Server-Sent Events reader over httpx, for the page's tests."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest


@dataclass(frozen=True)
class Event:
    kind: str
    data: Any


class EventReader:
    """Reads ``/events`` on a thread; :meth:`next` waits for the next event of a kind."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self._client = client
        self._url = url
        self._events: queue.Queue[Event | BaseException] = queue.Queue()
        self.status_code: int | None = None
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._connected.wait(10), "the event stream did not answer"

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._url, timeout=httpx.Timeout(10, read=30)) as r:
                self.status_code = r.status_code
                self._connected.set()
                kind, data = "message", ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "" and data:
                        self._events.put(Event(kind, json.loads(data)))
                        kind, data = "message", ""
        except BaseException as error:  # handed to the test thread
            self._events.put(error)
        finally:
            self._connected.set()

    def next(
        self, kind: str, timeout_s: float = 10.0, where: Callable[[Any], bool] = lambda _d: True
    ) -> Any:
        """The data of the next ``kind`` event that satisfies ``where`` (others are skipped)."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                item = self._events.get(timeout=remaining)
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                pytest.fail(f"event stream ended: {item!r}")
            if item.kind == kind and where(item.data):
                return item.data
        pytest.fail(f"no {kind!r} event within {timeout_s} s")
