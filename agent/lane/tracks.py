"""Card tracks: every recent read of every card, and which of them a vehicle may still claim.

The correlator decides who a card belongs to only when a crossing closes, from everything read
of it around that vehicle's stay (:mod:`agent.lane.association`). So reads are kept per card for
as long as a future crossing could need them (the approach window before an arrival), not
folded into a crossing as they arrive. Two marks per card say which reads are spent:

* ``consumed_until`` — reads up to this time were judged by a crossing that closed then (the
  card was carried, or set aside as another lane's): no later crossing counts them again. Reads
  of a card judged to be in the *next* vehicle are not consumed: they are that vehicle's
  approach.
* ``carried_at`` — the close of the last crossing that carried the card. Its reads in the
  ``straggler_window_s`` after that close are the departing vehicle being read as it leaves
  (stragglers), except those read on a booth antenna, once the next vehicle has been at the
  booth for ``handed_back_after_s``, strongly and about as strongly as when it was carried
  (within ``handed_back_margin_db`` of its median then): a card handed back to the car behind
  is read at the booth again; the car driving off fades.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.lane.association import AntennaZone, AssociationSettings, Read


@dataclass(frozen=True, slots=True)
class TrackSettings:
    """How long reads are kept and what counts as a straggler."""

    straggler_window_s: float = 8.0
    handed_back_after_s: float = 1.5
    handed_back_margin_db: float = 8.0
    max_reads_per_card: int = 1000


@dataclass(slots=True)
class _Track:
    reads: deque[Read] = field(default_factory=deque)
    tid: str | None = None


class CardTracks:
    """Reads per card (lane time order), with the consumed and carried marks."""

    def __init__(self, settings: TrackSettings, association: AssociationSettings) -> None:
        self.settings = settings
        self.association = association
        self._tracks: dict[str, _Track] = {}
        self.consumed_until: dict[str, float] = {}
        self.carried_at: dict[str, float] = {}
        self.carried_level: dict[str, float] = {}

    def add(self, ref: str, read: Read, tid: str | None) -> None:
        track = self._tracks.get(ref)
        if track is None:
            track = self._tracks[ref] = _Track()
        track.reads.append(read)
        if tid and track.tid is None:
            track.tid = tid
        if len(track.reads) > self.settings.max_reads_per_card:
            self._decimate(track)

    def tid(self, ref: str) -> str | None:
        track = self._tracks.get(ref)
        return track.tid if track else None

    def refs(self) -> list[str]:
        return list(self._tracks)

    def eligible(
        self, ref: str, start: float, end: float, arrival: float | None = None
    ) -> list[Read]:
        """Reads of ``ref`` in ``[start, end]`` that a crossing may still claim, oldest first.

        ``arrival`` is when the vehicle claiming them reached the booth (None: no vehicle).
        """
        track = self._tracks.get(ref)
        if track is None:
            return []
        consumed = self.consumed_until.get(ref, float("-inf"))
        return [
            read
            for read in track.reads
            if start <= read.at <= end
            and read.at > consumed
            and not self.is_straggler(ref, read, arrival)
        ]

    def eligible_by_card(
        self, start: float, end: float, arrival: float | None = None
    ) -> dict[str, list[Read]]:
        """:meth:`eligible` for every card that has any such read."""
        found = {}
        for ref in self._tracks:
            reads = self.eligible(ref, start, end, arrival)
            if reads:
                found[ref] = reads
        return found

    def is_straggler(self, ref: str, read: Read, arrival: float | None = None) -> bool:
        """A read of ``ref`` as the vehicle that carried it drove off; ``arrival`` is when the
        next vehicle reached the booth (None: none has)."""
        carried_at = self.carried_at.get(ref)
        if carried_at is None or not 0 < read.at - carried_at <= self.settings.straggler_window_s:
            return False
        if arrival is None or read.at < arrival + self.settings.handed_back_after_s:
            return True
        if self.association.zone(read.antenna) is not AntennaZone.BOOTH:
            return True
        level = self.carried_level.get(ref, read.rssi_dbm)
        floor = max(self.association.strong_rssi_dbm, level - self.settings.handed_back_margin_db)
        return read.rssi_dbm < floor

    def raw(self, ref: str, start: float, end: float) -> list[Read]:
        """Every read of ``ref`` in ``[start, end]``, spent or not."""
        track = self._tracks.get(ref)
        return [] if track is None else [r for r in track.reads if start <= r.at <= end]

    def last_eligible_at(
        self, ref: str, start: float, end: float, arrival: float | None = None
    ) -> float | None:
        reads = self.eligible(ref, start, end, arrival)
        return reads[-1].at if reads else None

    def consume(self, ref: str, until: float, *, carried_level: float | None = None) -> None:
        """Reads of ``ref`` up to ``until`` were judged by a crossing that closed then; with
        ``carried_level`` (its median strength) that crossing carried the card."""
        self.consumed_until[ref] = max(until, self.consumed_until.get(ref, until))
        if carried_level is not None:
            self.carried_at[ref] = until
            self.carried_level[ref] = carried_level

    def prune(self, keep_after: float) -> None:
        """Forget reads at or before ``keep_after`` and marks that no longer matter."""
        window = self.settings.straggler_window_s
        for ref in list(self._tracks):
            reads = self._tracks[ref].reads
            while reads and reads[0].at <= keep_after:
                reads.popleft()
            if not reads:
                del self._tracks[ref]
        self.consumed_until = {
            ref: at
            for ref, at in self.consumed_until.items()
            if ref in self._tracks or at > keep_after
        }
        self.carried_at = {
            ref: at for ref, at in self.carried_at.items() if at + window > keep_after
        }
        self.carried_level = {
            ref: level for ref, level in self.carried_level.items() if ref in self.carried_at
        }

    def _decimate(self, track: _Track) -> None:
        """Halve the older two thirds of a very long track (a vehicle parked for many minutes),
        keeping its first read and its recent reads whole."""
        reads = list(track.reads)
        cut = len(reads) * 2 // 3
        kept = [reads[0], *reads[1:cut:2], *reads[cut:]]
        track.reads = deque(kept)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tracks)

    # --- state ---

    def export_state(self) -> dict[str, Any]:
        return {
            "tracks": {
                ref: {
                    "tid": track.tid,
                    # Exact floats: a restored lane must judge exactly as the one it continues.
                    "reads": [[r.at, r.rssi_dbm, r.antenna] for r in track.reads],
                }
                for ref, track in self._tracks.items()
            },
            "consumed_until": dict(self.consumed_until),
            "carried_at": dict(self.carried_at),
            "carried_level": dict(self.carried_level),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load what :meth:`export_state` wrote; raises KeyError/TypeError/ValueError if bad."""
        self._tracks = {}
        for ref, track in state["tracks"].items():
            tid = track["tid"]
            self._tracks[str(ref)] = _Track(
                reads=deque(
                    Read(float(at), float(rssi), int(antenna))
                    for at, rssi, antenna in track["reads"]
                ),
                tid=None if tid is None else str(tid),
            )
        self.consumed_until = {str(k): float(v) for k, v in state["consumed_until"].items()}
        self.carried_at = {str(k): float(v) for k, v in state["carried_at"].items()}
        self.carried_level = {str(k): float(v) for k, v in state.get("carried_level", {}).items()}
