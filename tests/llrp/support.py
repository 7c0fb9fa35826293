"""Helpers shared by the LLRP tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from llrp.messages import (
    AddROSpec,
    EnableROSpec,
    Message,
    ReaderEventNotification,
    ROAccessReport,
    SetReaderConfig,
    StartROSpec,
)
from llrp.parameters import (
    EventNotificationState,
    EventType,
    GpiPortCurrentState,
    ReaderEventNotificationSpec,
)
from llrp.specs import TagReportContentSelector, TagReportData, lane_rospec

if TYPE_CHECKING:
    from llrp.client import LlrpClient, Received

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


def start_lane(
    client: LlrpClient,
    antennas: Sequence[int] = (1, 2),
    *,
    n: int = 1,
    gpis: Sequence[int] = (1, 2),
    rospec_id: int = 1,
    content: TagReportContentSelector | None = None,
) -> None:
    """What a lane adapter does after connecting: GPI and ROSpec events on, the loop inputs
    enabled, one ROSpec over ``antennas`` reporting every ``n`` tags, started."""
    client.request(
        SetReaderConfig(
            reader_event_notification_spec=ReaderEventNotificationSpec(
                (
                    EventNotificationState(EventType.GPI, True),
                    EventNotificationState(EventType.ROSPEC, True),
                    EventNotificationState(EventType.READER_EXCEPTION, True),
                )
            ),
            gpi_port_current_states=tuple(GpiPortCurrentState(port, True) for port in gpis),
        )
    )
    client.request(
        AddROSpec(lane_rospec(rospec_id, antennas, report_every_n_tags=n, content=content))
    )
    client.request(EnableROSpec(rospec_id))
    client.request(StartROSpec(rospec_id))


def tag_reports(messages: Sequence[Message]) -> list[TagReportData]:
    """Every TagReportData of the RO_ACCESS_REPORTs among ``messages``, in order."""
    return [
        data
        for message in messages
        if isinstance(message, ROAccessReport)
        for data in message.tag_report_data
    ]


def gpi_events(messages: Sequence[Message]) -> list[tuple[int, bool]]:
    out = []
    for message in messages:
        if isinstance(message, ReaderEventNotification):
            event = message.reader_event_notification_data.gpi_event
            if event is not None:
                out.append((event.gpi_port_number, event.gpi_event))
    return out
