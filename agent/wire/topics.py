"""MQTT topic names: the only module that builds topic strings.

Every lane publishes under ``{prefix}/{port_id}/{lane_id}/``:

``…/crossing``
    One message per vehicle crossing, QoS 1, not retained. The payload is the crossing event JSON
    built by the lane engine; it carries the outbox sequence number of the ``crossing`` stream so
    central can spot gaps and drop the duplicates that at-least-once delivery allows::

        {"seq": 42, ...}

``…/plate-image``
    The JPEG crop of the plate of a crossing, QoS 1, not retained; the payload is the raw JPEG.
    The crossing event names it by ``plate.image_sha256`` (the sha256 of the payload), so central
    pairs the two by hashing. Images are queued behind crossing events and are the first thing a
    full outbox gives up.

``…/live``
    The crossing of the vehicle at the booth as it forms, QoS 1, not retained: ``opened``,
    ``updated`` on every change an officer acts on, ``closed`` (schema
    ``lane-agent/live-crossing/1``, docs/live.md). Not stored by the lane: published while the
    uplink is up, dropped (counted) while it is not; each expires at the broker after a short
    while (MQTT v5 message expiry), so a booth that reconnects is not shown stale vehicles.

``…/current``
    Retained: the latest live event of the vehicle at the booth, or a zero-length payload (no
    retained message) when the lane is empty, so a screen that subscribes late shows the
    present vehicle at once. Expires at the broker after the lane's longest stay, in case the
    agent dies with a vehicle shown (``availability`` then says ``offline``).

``…/availability``
    Retained plain text: ``online`` once connected, ``offline`` published by the broker as the last
    will when the connection dies, ``stopped`` after a clean shutdown.

``…/status``
    Retained JSON describing the lane agent's health (``agent.status``): uplink state, outbox depth
    and oldest unsent age, active and last fault, counters. Refreshed on change and periodically.

``…/ack``
    Published by central ingest, retained, read by the lane: the acknowledgement watermark per
    stream, ``{"acked_seq": {"crossing": 41}}``: every event of the stream up to that sequence
    number is stored centrally. See docs/delivery.md.

Central subscribes to :func:`all_crossings_filter`, usually through :func:`shared_subscription` so a
group of consumers shares the load. Only standard MQTT v5 features are used, so any compliant broker
(Mosquitto, EMQX, HiveMQ) works.
"""

from __future__ import annotations

DEFAULT_PREFIX = "lane-agent/v1"

AVAILABILITY_ONLINE = b"online"
AVAILABILITY_OFFLINE = b"offline"
AVAILABILITY_STOPPED = b"stopped"

# MQTT v5 section 1.5.4: a UTF-8 encoded string is at most 65535 bytes.
_MAX_TOPIC_BYTES = 65535
_FORBIDDEN_CHARACTERS = {
    "+": "the '+' wildcard",
    "#": "the '#' wildcard",
    "\x00": "a NUL character",
}


class InvalidTopicPartError(ValueError):
    """A piece of a topic (prefix, port id, lane id, group, topic name) cannot be used in MQTT."""

    def __init__(self, part: str, value: str, reason: str) -> None:
        super().__init__(f"{part} {value!r} {reason}")
        self.part = part
        self.value = value
        self.reason = reason


def _check_levels(part: str, value: str, *, single_level: bool) -> None:
    """Reject what breaks the topic tree: wildcards, NUL, empty levels, '/' in a single level."""
    if not value:
        raise InvalidTopicPartError(part, value, "must not be empty")
    for character, description in _FORBIDDEN_CHARACTERS.items():
        if character in value:
            raise InvalidTopicPartError(part, value, f"must not contain {description}")
    if single_level and "/" in value:
        raise InvalidTopicPartError(part, value, "must be a single topic level: it contains '/'")
    if "" in value.split("/"):
        raise InvalidTopicPartError(
            part, value, "must not contain an empty topic level ('//' or a '/' at an end)"
        )


class Topics:
    """The topic names one lane publishes to.

    The prefix may span several levels (``lane-agent/v1``) so the payload schema version lives in
    the topic and a new major version can run side by side with the old one.
    """

    def __init__(self, prefix: str, port_id: str, lane_id: str) -> None:
        _check_levels("prefix", prefix, single_level=False)
        if prefix.startswith("$"):
            raise InvalidTopicPartError(
                "prefix", prefix, "must not start with '$' (reserved for the broker)"
            )
        _check_levels("port_id", port_id, single_level=True)
        _check_levels("lane_id", lane_id, single_level=True)
        self.prefix = prefix
        self.port_id = port_id
        self.lane_id = lane_id
        self._base = f"{prefix}/{port_id}/{lane_id}"
        validate_topic_name(self.availability)

    def __repr__(self) -> str:
        return f"Topics(prefix={self.prefix!r}, port_id={self.port_id!r}, lane_id={self.lane_id!r})"

    @property
    def crossing(self) -> str:
        """Crossing events, QoS 1, not retained."""
        return f"{self._base}/crossing"

    @property
    def plate_image(self) -> str:
        """JPEG plate crops, QoS 1, not retained; named by sha256 from the crossing event."""
        return f"{self._base}/plate-image"

    @property
    def live(self) -> str:
        """Live crossing events, QoS 1, not retained."""
        return f"{self._base}/live"

    @property
    def current(self) -> str:
        """Retained latest live event of the vehicle at the booth; empty when the lane is."""
        return f"{self._base}/current"

    @property
    def availability(self) -> str:
        """Retained ``online`` / ``offline`` (last will) / ``stopped``."""
        return f"{self._base}/availability"

    @property
    def status(self) -> str:
        """Retained JSON health summary."""
        return f"{self._base}/status"

    @property
    def ack(self) -> str:
        """Retained acknowledgement watermark, published by central ingest, read by the lane."""
        return f"{self._base}/ack"


def validate_topic_name(topic: str) -> None:
    """Check that ``topic`` can be published to: non-empty, no wildcards or NUL, and short enough.

    Empty levels are legal MQTT but never produced by :class:`Topics`, so they are accepted here to
    avoid rejecting rows written by a future version with a different scheme.
    """
    if not topic:
        raise InvalidTopicPartError("topic", topic, "must not be empty")
    for character, description in _FORBIDDEN_CHARACTERS.items():
        if character in topic:
            raise InvalidTopicPartError("topic", topic, f"must not contain {description}")
    if len(topic.encode("utf-8")) > _MAX_TOPIC_BYTES:
        raise InvalidTopicPartError(
            "topic", topic[:40] + "…", f"is longer than {_MAX_TOPIC_BYTES} bytes"
        )


def all_crossings_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for the crossing topic of every lane at every port under ``prefix``."""
    _check_levels("prefix", prefix, single_level=False)
    return f"{prefix}/+/+/crossing"


def all_statuses_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for the status topic of every lane at every port under ``prefix``."""
    _check_levels("prefix", prefix, single_level=False)
    return f"{prefix}/+/+/status"


def all_plate_images_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for the plate-image topic of every lane at every port under ``prefix``."""
    _check_levels("prefix", prefix, single_level=False)
    return f"{prefix}/+/+/plate-image"


def all_live_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for the live crossing topic of every lane under ``prefix``."""
    _check_levels("prefix", prefix, single_level=False)
    return f"{prefix}/+/+/live"


def all_current_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for the retained current vehicle of every lane under ``prefix``."""
    _check_levels("prefix", prefix, single_level=False)
    return f"{prefix}/+/+/current"


def all_availability_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for the availability topic of every lane at every port under ``prefix``."""
    _check_levels("prefix", prefix, single_level=False)
    return f"{prefix}/+/+/availability"


def shared_subscription(group: str, topic_filter: str) -> str:
    """MQTT v5 shared subscription: each matching message goes to one member of ``group``."""
    _check_levels("group", group, single_level=True)
    if not topic_filter:
        raise InvalidTopicPartError("topic_filter", topic_filter, "must not be empty")
    if topic_filter.startswith("$share/"):
        raise InvalidTopicPartError(
            "topic_filter", topic_filter, "is already a shared subscription"
        )
    return f"$share/{group}/{topic_filter}"


# --- credential cache updates (docs/bundles.md) ---------------------------------------------

CACHE_UPDATE_KINDS = ("snapshot", "delta", "revocation", "freshness")
"""The last level of a cache update topic: the kind of signed bundle it carries."""


def cache_update_topic(prefix: str, port_id: str, kind: str) -> str:
    """Where central publishes signed cache bundles of ``kind`` for every lane of a port.

    ``{prefix}/cache/{port_id}/{kind}``, QoS 1; central may retain the freshness notice.
    """
    _check_levels("prefix", prefix, single_level=False)
    _check_levels("port_id", port_id, single_level=True)
    if kind not in CACHE_UPDATE_KINDS:
        raise InvalidTopicPartError("kind", kind, f"must be one of {', '.join(CACHE_UPDATE_KINDS)}")
    return f"{prefix}/cache/{port_id}/{kind}"


def cache_updates_filter(prefix: str, port_id: str) -> str:
    """What a lane subscribes to for its port's cache bundles: ``{prefix}/cache/{port_id}/+``."""
    _check_levels("prefix", prefix, single_level=False)
    _check_levels("port_id", port_id, single_level=True)
    return f"{prefix}/cache/{port_id}/+"


def cache_update_kind(topic: str) -> str | None:
    """The bundle kind a cache update topic carries (its last level), None if not one."""
    kind = topic.rsplit("/", 1)[-1]
    return kind if kind in CACHE_UPDATE_KINDS else None


def cache_resync_topic(prefix: str, port_id: str, lane_id: str) -> str:
    """Where a lane asks central for a snapshot or a delta from its version, QoS 1, not retained.

    ``{prefix}/{port_id}/{lane_id}/cache/resync``.
    """
    return f"{Topics(prefix, port_id, lane_id)._base}/cache/resync"


def all_cache_resyncs_filter(prefix: str = DEFAULT_PREFIX) -> str:
    """Subscription filter for every lane's resync requests under ``prefix``."""
    _check_levels("prefix", prefix, single_level=False)
    return f"{prefix}/+/+/cache/resync"
