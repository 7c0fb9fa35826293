"""The retained acknowledgement watermark, ``{prefix}/{port_id}/{lane_id}/ack``, published after
commit (docs/delivery.md, "Contract for central ingest").

A worker hands every committed batch's watermarks here; a lane's watermark is published when it
is above what this worker last published for it, at most every ``interval_s`` per lane (the
contract asks for "every second or two"; a newer retained message replaces the older one, so
nothing is lost by waiting). ``lanes.ack_published_seq`` records what the broker acknowledged,
and :meth:`WatermarkPublisher.missing` finds lanes whose stored watermark was never published —
a worker killed between its commit and its publish — so any worker publishes them.

Several workers publish for the same lane. Each publishes only values read from committed rows,
and a lane ignores a watermark lower than the one it holds, so two publishes crossing on the
wire cannot lose or unconfirm anything; at worst the retained copy lags until the lane's next
crossing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from agent.wire.topics import Topics
from central.messages import CROSSING, LaneKey

log = logging.getLogger(__name__)

PublishFunction = Callable[[str, bytes], int]
"""Publishes (topic, payload) retained at QoS 1 and returns the message id."""


def watermark_payload(seq: int) -> bytes:
    return json.dumps({"acked_seq": {CROSSING: seq}}, separators=(",", ":")).encode()


@dataclass
class _Lane:
    published: int = 0
    published_at: float = float("-inf")
    due: int = 0


class WatermarkPublisher:
    """Decides when to publish each lane's watermark; used from the writer thread only."""

    def __init__(self, publish: PublishFunction, prefix: str, interval_s: float) -> None:
        self._publish = publish
        self._prefix = prefix
        self._interval_s = interval_s
        self._lanes: dict[LaneKey, _Lane] = {}
        self._in_flight: dict[int, tuple[LaneKey, int]] = {}
        self._confirmed: dict[LaneKey, int] = {}

    def committed(self, watermarks: dict[LaneKey, int]) -> None:
        """Watermarks as committed in the database: by a batch of this worker, or found by the
        sweep for lanes whose watermark no worker recorded as published."""
        for lane, seq in watermarks.items():
            state = self._lanes.setdefault(lane, _Lane())
            if seq > max(state.published, state.due):
                state.due = seq

    def flush(self, now: float, *, force: bool = False) -> int:
        """Publish every due watermark whose lane's interval has passed; returns how many."""
        sent = 0
        for lane, state in self._lanes.items():
            if state.due <= state.published:
                continue
            if not force and now - state.published_at < self._interval_s:
                continue
            mid = self._publish(
                Topics(self._prefix, lane.port_id, lane.lane_id).ack, watermark_payload(state.due)
            )
            self._in_flight[mid] = (lane, state.due)
            state.published, state.published_at = state.due, now
            sent += 1
        return sent

    def next_due_in(self, now: float) -> float | None:
        """Seconds until the next watermark may be published (None: nothing is due)."""
        waits = [
            max(0.0, state.published_at + self._interval_s - now)
            for state in self._lanes.values()
            if state.due > state.published
        ]
        return min(waits, default=None)

    def acknowledged(self, mid: int, success: bool) -> None:
        """The broker's PUBACK for a watermark (success: reason code below 0x80)."""
        published = self._in_flight.pop(mid, None)
        if published is None:
            return
        lane, seq = published
        if success:
            self._confirmed[lane] = max(seq, self._confirmed.get(lane, 0))
        else:
            log.warning(
                "broker refused the ack watermark of lane %s: check its ACL for this worker", lane
            )
            state = self._lanes[lane]
            state.published = min(state.published, seq - 1)  # due again at the next flush

    def take_confirmed(self) -> dict[LaneKey, int]:
        """Watermarks the broker acknowledged since the last call (to record in the database)."""
        confirmed, self._confirmed = self._confirmed, {}
        return confirmed

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
