"""MQTT topic names: the only module that builds topic strings.

Every lane publishes under ``{prefix}/{port_id}/{lane_id}/``:

``…/crossing``
    One message per vehicle crossing, QoS 1, not retained. The payload is the crossing event JSON
    built by the lane engine; it carries the outbox sequence number of the ``crossing`` stream so
    central can spot gaps and drop the duplicates that at-least-once delivery allows::

        {"seq": 42, ...}

``…/availability``
    Retained plain text: ``online`` once connected, ``offline`` published by the broker as the last
    will when the connection dies, ``stopped`` after a clean shutdown.

``…/status``
    Retained JSON describing the lane agent's health; its schema comes with the release that
    publishes it.

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
    def availability(self) -> str:
        """Retained ``online`` / ``offline`` (last will) / ``stopped``."""
        return f"{self._base}/availability"

    @property
    def status(self) -> str:
        """Retained JSON health summary."""
        return f"{self._base}/status"


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
