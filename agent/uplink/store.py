"""What the uplink needs of the store it drains: its rows, and the few calls it makes.

The uplink is one adapter and the lane's outbox (:mod:`agent.state.outbox`) another; adapters do
not import each other. The uplink states here what it relies on, and the composition root
(``agent/delivery.py``) hands it the outbox, which satisfies these protocols structurally: strict
mypy checks it where the outbox is passed in.

What the uplink assumes beyond the signatures:

* :meth:`RowStore.pending` returns unsent rows by ascending priority (the lower the number, the
  more urgent), then in append order, and ``after`` continues a scan after the ``(priority, id)``
  of the last row of the previous batch;
* ``stream`` and ``seq`` number each row within its stream, the numbering central ingest's
  acknowledgement watermarks refer to (:mod:`agent.uplink.confirmation`);
* trouble with the storage itself (a locked database, a full disk, a closed file) is raised as
  one of the exception types the uplink is given (``MqttUplink(storage_errors=...)``): the uplink
  logs it, raises the ``outbox_error`` fault and tries again a second later. Anything else a store
  raises is a bug, and fails the publisher thread like a bug of the uplink's own.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

DEFAULT_URGENT_PRIORITY = 0
"""The priority of the rows that must not wait behind a read-ahead: the outbox's crossings
(``agent.state.outbox.PRIORITY_CROSSING``; a test keeps the two equal)."""


class PendingRow(Protocol):
    """One stored message the uplink publishes; it only reads these attributes."""

    @property
    def id(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def qos(self) -> int: ...
    @property
    def retain(self) -> bool: ...
    @property
    def priority(self) -> int: ...


class Confirmation(Protocol):
    """What applying one acknowledgement watermark did."""

    @property
    def removed(self) -> int:
        """Rows deleted because central has them."""
        ...

    @property
    def ahead(self) -> bool:
        """The watermark named a sequence number the store never handed out: not applied."""
        ...


class StoreStats(Protocol):
    @property
    def depth(self) -> int:
        """Rows not yet acknowledged by the broker."""
        ...


class RowStore(Protocol):
    """The durable store whose pending rows the uplink publishes."""

    def pending(
        self,
        limit: int,
        *,
        exclude_ids: Collection[int] = ...,
        exclude_topics: Collection[str] = ...,
        after: tuple[int, int] | None = ...,
    ) -> Sequence[PendingRow]:
        """Up to ``limit`` unsent rows in publishing order, skipping ``exclude_ids`` and rows on
        ``exclude_topics``, or continuing a scan ``after`` a ``(priority, id)`` (no exclusions)."""
        ...

    def pending_of_priority(
        self, priority: int, limit: int, *, exclude_ids: Collection[int] = ...
    ) -> Sequence[PendingRow]:
        """Up to ``limit`` unsent rows of one priority, in append order, but ``exclude_ids``."""
        ...

    def mark_sent_many(self, row_ids: Collection[int]) -> int:
        """Record the broker's acknowledgement of these rows in one transaction."""
        ...

    def confirm(self, stream: str, acked_seq: int) -> Confirmation:
        """Delete the rows of ``stream`` up to ``acked_seq``: central ingest stored them."""
        ...

    def requeue_unconfirmed(self) -> int:
        """Make rows sent but not confirmed by ingest pending again; how many."""
        ...

    def prune_sent(self) -> int:
        """Delete sent rows past their retention; how many."""
        ...

    def stats(self) -> StoreStats: ...
