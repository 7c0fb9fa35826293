"""Prometheus metrics: the status document read at each scrape, plus the feed's own counters.

Nothing is pushed into a metrics library while the lane works: a scrape builds the status
document once (:meth:`~agent.status.StatusBoard.snapshot`, the same numbers the status topic
carries) and turns its sections into metric families, and adds what the page feed counted
(crossings by recommendation and reason, card associations, tag reads by antenna). A section
that is missing (no camera, another reader family) gives no metrics rather than zeros that
would look like measurements. Every name is listed in docs/page.md.

Each lane agent has its own registry (not prometheus_client's global one), so two agents in one
process (the tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from agent.page.feed import FeedCounters, PageFeed

logger = logging.getLogger(__name__)

PREFIX = "lane_agent"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UPLINK_STATES = ("connecting", "connected", "disconnected", "stopped", "failed")
"""States shown as lane_agent_uplink_state{state}: the uplink's, plus any it reports."""


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def _section(document: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    section = document.get(name)
    return section if isinstance(section, Mapping) and "error" not in section else None


class LaneCollector(Collector):
    """The lane's metrics, built at each scrape."""

    def __init__(self, feed: PageFeed, status: Callable[[], Mapping[str, Any]]) -> None:
        self._feed = feed
        self._status = status

    def describe(self) -> Iterable[Any]:
        return []  # built at scrape time: nothing to describe ahead

    def collect(self) -> Iterator[Any]:
        try:
            document = self._status()
        except Exception:  # a scrape must still say what the feed knows
            logger.exception("status document for /metrics failed")
            document = {}
        yield from _lane(document)
        yield from _reader(document)
        yield from _outbox(document)
        yield from _uplink(document)
        yield from _cache(document)
        yield from _camera(document)
        yield from _fusion(document)
        yield from _feed(self._feed.counters(), self._feed.clients())


def build_registry(feed: PageFeed, status: Callable[[], Mapping[str, Any]]) -> CollectorRegistry:
    """A registry with the lane's metrics and the process' own (CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LaneCollector(feed, status))
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry`` (what ``/metrics`` answers)."""
    return generate_latest(registry)


def _gauge(name: str, doc: str, value: object) -> Iterator[GaugeMetricFamily]:
    number = _number(value)
    if number is not None:
        yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=number)


def _counter(name: str, doc: str, value: object) -> Iterator[CounterMetricFamily]:
    number = _number(value)
    if number is not None:
        yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=number)


def _lane(document: Mapping[str, Any]) -> Iterator[Any]:
    lane = document.get("lane")
    if isinstance(lane, Mapping):
        info = InfoMetricFamily(f"{PREFIX}_lane", "The lane this agent serves.")
        info.add_metric([], {str(k): str(v) for k, v in lane.items()})
        yield info
    faults = document.get("faults")
    if isinstance(faults, list):
        active = GaugeMetricFamily(
            f"{PREFIX}_fault_active",
            "1 for each fault raised on the status topic (label code).",
            labels=["code"],
        )
        for fault in faults:
            if isinstance(fault, Mapping):
                active.add_metric([str(fault.get("code"))], 1.0)
        yield active
        yield GaugeMetricFamily(f"{PREFIX}_faults", "Faults raised now.", value=len(faults))


def _reader(document: Mapping[str, Any]) -> Iterator[Any]:
    reader = _section(document, "reader")
    if reader is None:
        return
    found = reader.get("link")
    link: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    yield from _gauge("reader_up", "1 while the reader's link is up.", reader.get("up"))
    frames = reader.get("frames", link.get("frames_ok"))
    yield from _counter("reader_frames", "Frames received intact from the reader.", frames)
    crc = reader.get("crc_errors", link.get("crc_errors"))
    yield from _counter("reader_crc_errors", "Frames from the reader with a bad CRC.", crc)
    resyncs = reader.get("resyncs", link.get("framing_errors"))
    yield from _counter(
        "reader_resyncs", "Times the receiver resynchronised after garbage.", resyncs
    )
    yield from _counter("reader_link_ups", "Times the reader's link came up.", link.get("link_ups"))
    last = reader.get("last_read_at")
    yield from _gauge(
        "reader_last_read_timestamp_seconds", "Agent time of the last tag read (Unix).", last
    )


def _outbox(document: Mapping[str, Any]) -> Iterator[Any]:
    outbox = _section(document, "outbox")
    if outbox is None:
        return
    yield from _gauge("outbox_depth", "Events stored and not yet sent.", outbox.get("depth"))
    yield from _gauge(
        "outbox_oldest_unsent_age_seconds",
        "Age of the oldest event not yet sent (0: none waiting).",
        outbox.get("oldest_unsent_age_s") or 0.0,
    )
    yield from _gauge("outbox_size_bytes", "Size of the outbox file.", outbox.get("size_bytes"))
    yield from _gauge("outbox_max_bytes", "Size cap of the outbox file.", outbox.get("max_bytes"))
    yield from _gauge(
        "outbox_held_in_memory",
        "Crossings the outbox could not store yet (the lane is on manual).",
        outbox.get("held_in_memory"),
    )


def _uplink(document: Mapping[str, Any]) -> Iterator[Any]:
    uplink = _section(document, "uplink")
    if uplink is None:
        return
    state = str(uplink.get("state"))
    family = GaugeMetricFamily(
        f"{PREFIX}_uplink_state",
        "1 for the uplink's current state, 0 for the others (label state).",
        labels=["state"],
    )
    for name in sorted({*UPLINK_STATES, state}):
        family.add_metric([name], 1.0 if name == state else 0.0)
    yield family
    yield from _counter(
        "uplink_published", "Events published to the broker.", uplink.get("published")
    )
    yield from _counter(
        "uplink_delivered", "Events the broker acknowledged.", uplink.get("delivered")
    )
    yield from _counter("uplink_refused", "Publishes the broker refused.", uplink.get("refused"))
    yield from _counter(
        "uplink_connects", "Connections made to the broker.", uplink.get("connects")
    )
    yield from _counter(
        "uplink_connection_losses",
        "Connections to the broker lost.",
        uplink.get("connection_losses"),
    )
    yield from _gauge("uplink_in_flight", "Publishes awaiting PUBACK.", uplink.get("in_flight"))


def _cache(document: Mapping[str, Any]) -> Iterator[Any]:
    cache = _section(document, "cache")
    if cache is None:
        return
    yield from _gauge(
        "cache_bundle_version",
        "Version of the signed bundle in force (absent: plain import, no bundle yet).",
        cache.get("bundle_version"),
    )
    yield from _gauge(
        "cache_revocation_serial",
        "Last revocation serial installed.",
        cache.get("revocation_serial"),
    )
    yield from _gauge(
        "cache_age_seconds",
        "Age of the credential data since central last vouched for it.",
        cache.get("age_s"),
    )
    yield from _gauge(
        "cache_max_age_seconds", "Age past which the data is stale.", cache.get("max_cache_age_s")
    )
    yield from _gauge("cache_stale", "1 while the credential data is stale.", cache.get("stale"))


def _camera(document: Mapping[str, Any]) -> Iterator[Any]:
    camera = _section(document, "camera")
    if camera is None:
        return
    yield from _gauge(
        "camera_up", "1 while the camera streams frames.", camera.get("state") == "streaming"
    )
    yield from _gauge("camera_fps", "Frames per second from the camera.", camera.get("fps"))
    yield from _counter("camera_frames", "Frames captured.", camera.get("frames"))
    yield from _counter(
        "camera_corrupt_frames", "Corrupt frames skipped.", camera.get("corrupt_frames")
    )
    yield from _gauge(
        "camera_last_frame_age_seconds", "Age of the newest frame.", camera.get("last_frame_age_s")
    )
    ms = _number(camera.get("last_inference_ms"))
    yield from _gauge(
        "plate_read_seconds",
        "Time the plate reader took on the last frame it read.",
        None if ms is None else ms / 1000.0,
    )
    yield from _counter(
        "plate_frames_read", "Frames the plate reader read.", camera.get("frames_read")
    )
    yield from _counter(
        "plates_seen", "Plates read with enough confidence.", camera.get("plates_seen")
    )
    yield from _counter(
        "plate_inference_errors", "Plate reader inference errors.", camera.get("inference_errors")
    )


def _fusion(document: Mapping[str, Any]) -> Iterator[Any]:
    correlation = _section(document, "correlation")
    if correlation is None:
        return
    cards = CounterMetricFamily(
        f"{PREFIX}_fusion_cards",
        "Cards judged by occupant association, by where they were placed (label association).",
        labels=["association"],
    )
    events = CounterMetricFamily(
        f"{PREFIX}_correlation_events",
        "What the correlator met and handled (label event: weak_reads, chatter, "
        "missing_clears, evidence_splits...).",
        labels=["event"],
    )
    for key, value in sorted(correlation.items()):
        number = _number(value)
        if number is None:
            continue
        if key.startswith("cards_"):
            cards.add_metric([key.removeprefix("cards_")], number)
        else:
            events.add_metric([key], number)
    yield cards
    yield events


def _labelled(
    kind: type[CounterMetricFamily] | type[GaugeMetricFamily],
    name: str,
    doc: str,
    label: str,
    counts: Mapping[str, int],
) -> CounterMetricFamily | GaugeMetricFamily:
    family = kind(f"{PREFIX}_{name}", doc, labels=[label])
    for key, value in sorted(counts.items()):
        family.add_metric([key], float(value))
    return family


def _feed(counters: FeedCounters, clients: int) -> Iterator[Any]:
    yield _labelled(
        CounterMetricFamily,
        "crossings",
        "Crossings stored since start, by recommendation.",
        "recommendation",
        counters.by_recommendation,
    )
    yield _labelled(
        CounterMetricFamily,
        "crossing_reasons",
        "Reasons given with the crossings stored since start (a crossing may have several).",
        "reason",
        counters.by_reason,
    )
    yield _labelled(
        CounterMetricFamily,
        "crossing_cards",
        "Cards in the crossings stored since start, by their association.",
        "association",
        counters.cards_by_association,
    )
    yield _labelled(
        CounterMetricFamily,
        "crossing_card_results",
        "Carried cards in the crossings stored since start, by their match result.",
        "result",
        counters.cards_by_result,
    )
    yield _labelled(
        CounterMetricFamily,
        "crossing_plates",
        "Plate outcomes of the crossings stored since start (label match).",
        "match",
        counters.plates_by_match,
    )
    yield _labelled(
        CounterMetricFamily,
        "tag_reads",
        "Tag reads applied by the lane since start, by antenna.",
        "antenna",
        counters.reads_by_antenna,
    )
    yield CounterMetricFamily(
        f"{PREFIX}_live_updates",
        "Live views of the vehicle at the booth.",
        value=counters.live_events,
    )
    yield GaugeMetricFamily(f"{PREFIX}_page_clients", "Pages connected now.", value=clients)
    yield CounterMetricFamily(
        f"{PREFIX}_page_dropped_messages",
        "Messages a page was too slow to take (the oldest were dropped).",
        value=counters.dropped,
    )
    yield CounterMetricFamily(
        f"{PREFIX}_page_refused_clients",
        "Pages turned away because page.max_clients were connected.",
        value=counters.refused_clients,
    )
