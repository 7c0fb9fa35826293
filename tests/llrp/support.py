"""Helpers shared by the LLRP tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llrp.client import Received
    from llrp.messages import Message

WAIT_S = 10.0
"""Upper bound for any wait; tests normally finish far sooner."""


def hexbytes(*parts: str) -> bytes:
    """Bytes from hex chunks written one field per line (spaces ignored)."""
    return bytes.fromhex("".join(parts))


class Inbox:
    """Collects what the client hands to ``on_message``; waits for messages by predicate."""

    def __init__(self) -> None:
        self._items: list[Received] = []
        self._changed = threading.Condition()

    def __call__(self, received: Received) -> None:
        with self._changed:
            self._items.append(received)
            self._changed.notify_all()

    def messages(self) -> list[Message]:
        with self._changed:
            return [item.message for item in self._items]

    def received(self) -> list[Received]:
        with self._changed:
            return list(self._items)

    def of_type(self, kind: type[Message]) -> list[Message]:
        return [message for message in self.messages() if isinstance(message, kind)]

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float = WAIT_S) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: predicate([item.message for item in self._items]), timeout
            )
