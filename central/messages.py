"""What arrives from the lanes, read and checked: every message becomes a record or a refusal.

A message is accepted only when

* its topic is one of a lane's (``{prefix}/{port_id}/{lane_id}/{crossing|plate-image|status|
  availability}``, checked by rebuilding it with :class:`agent.wire.topics.Topics`);
* a JSON payload names, in its ``schema`` field, a schema of the topic's kind that this release
  ships (``lane-agent/crossing-event/N`` on ``…/crossing``, ``lane-agent/status/N`` on
  ``…/status``) and validates against exactly that schema, so events from older agents still in a
  lane's outbox are read by their own version;
* the lane it names is the topic's lane. The broker ties the topic to the certificate that
  published it (config/mosquitto: ``%u`` ACL patterns on the certificate's CN), so the topic *is*
  the authenticated identity and a payload naming another lane is refused, never stored as real.

Anything else becomes a :class:`Refused` with a reason code and a detail that names the field
and rule, never a value: card numbers, holder references and plates stay out of the detail (the
bytes themselves are kept in the quarantine table).

Only the core fields every crossing-event version carries are read into columns (see
:class:`Crossing`); the full event is stored as it came.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jsonschema_rs
import orjson

from agent.wire.schema import UnknownSchemaError, load_schema
from agent.wire.topics import InvalidTopicPartError, Topics

CROSSING = "crossing"
PLATE_IMAGE = "plate-image"
STATUS = "status"
AVAILABILITY = "availability"
SCHEMA_FAMILIES = {
    CROSSING: "lane-agent/crossing-event/",
    STATUS: "lane-agent/status/",
}
AVAILABILITY_VALUES = frozenset({"online", "offline", "stopped"})
_MAX_BIGINT = (1 << 63) - 1
_JPEG_MAGIC = b"\xff\xd8\xff"
_SHOWN_ERRORS = 3
_TOPIC_CACHE_MAX = 65536  # 4 topics a lane: a fleet of 16 000 lanes before the cache is cleared

# Reason codes of the quarantine table (docs/central.md lists each).
TOPIC_UNKNOWN = "topic_unknown"
NOT_JSON = "not_json"
SCHEMA_MISSING = "schema_missing"
SCHEMA_WRONG_KIND = "schema_wrong_kind"
SCHEMA_UNKNOWN = "schema_unknown"
SCHEMA_INVALID = "schema_invalid"
TOPIC_MISMATCH = "topic_mismatch"
CORE_INVALID = "core_invalid"
UNSTORABLE_TEXT = "unstorable_text"
NOT_JPEG = "not_jpeg"
AVAILABILITY_INVALID = "availability_invalid"
SEQ_CONFLICT = "seq_conflict"
EVENT_ID_CONFLICT = "event_id_conflict"
STORE_REFUSED = "store_refused"


@dataclass(frozen=True, slots=True)
class LaneKey:
    """A lane, as the topic names it."""

    port_id: str
    lane_id: str

    def __str__(self) -> str:
        return f"{self.port_id}/{self.lane_id}"


@dataclass(frozen=True, slots=True)
class Crossing:
    """A valid crossing event: the core columns and the event as received."""

    topic: str
    lane: LaneKey
    event_id: uuid.UUID
    seq: int
    schema_id: str
    opened_at: datetime
    closed_at: datetime
    committed_at: datetime
    recommendation: str
    reasons: tuple[str, ...]
    card_refs: tuple[str, ...]
    plate_text: str | None
    plate_image_sha256: str | None
    payload: str
    """The JSON text as published (UTF-8 decoded), stored as jsonb."""


@dataclass(frozen=True, slots=True)
class PlateImage:
    """A JPEG plate crop, named by its sha256."""

    topic: str
    lane: LaneKey
    sha256: str
    jpeg: bytes


@dataclass(frozen=True, slots=True)
class LaneStatus:
    """A valid status document and the fields the board shows."""

    topic: str
    lane: LaneKey
    time: datetime
    document: str
    agent_version: str | None
    uplink_state: str | None
    outbox_depth: int | None
    outbox_rows: int | None
    outbox_oldest_unsent_age_s: float | None
    lane_last_seq: int | None
    lane_acked_seq: int | None
    cache_version: int | None
    cache_age_s: float | None
    cache_stale: bool | None
    faults: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Availability:
    """The lane's retained availability: online, offline (its last will) or stopped."""

    topic: str
    lane: LaneKey
    value: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that is not stored as real: it goes to the quarantine table."""

    topic: str
    lane: LaneKey | None
    reason: str
    detail: str
    payload: bytes


Record = Crossing | PlateImage | LaneStatus | Availability | Refused


class MessageReader:
    """Turns (topic, payload) into a record; holds one compiled validator per schema id."""

    def __init__(self, prefix: str) -> None:
        Topics(prefix, "p", "l")  # rejects a prefix no lane could publish under
        self.prefix = prefix
        self._validators: dict[str, Any] = {}
        self._topics: dict[str, tuple[LaneKey, str] | None] = {}

    def read(self, topic: str, payload: bytes) -> Record:
        parsed = self.parse_topic(topic)
        if parsed is None:
            return Refused(
                topic, None, TOPIC_UNKNOWN, "not a lane topic under " + self.prefix, payload
            )
        lane, kind = parsed
        if kind == CROSSING:
            return self._crossing(topic, lane, payload)
        if kind == STATUS:
            return self._status(topic, lane, payload)
        if kind == PLATE_IMAGE:
            if not payload.startswith(_JPEG_MAGIC):
                return Refused(
                    topic, lane, NOT_JPEG, "payload does not start with a JPEG marker", payload
                )
            return PlateImage(topic, lane, hashlib.sha256(payload).hexdigest(), payload)
        text = payload.decode("ascii", errors="replace")
        if text not in AVAILABILITY_VALUES:
            return Refused(
                topic, lane, AVAILABILITY_INVALID, "expected online, offline or stopped", payload
            )
        return Availability(topic, lane, text)

    def parse_topic(self, topic: str) -> tuple[LaneKey, str] | None:
        """(lane, kind) of a lane topic under this prefix, else None (remembered per topic)."""
        try:
            return self._topics[topic]
        except KeyError:
            pass
        if len(self._topics) >= _TOPIC_CACHE_MAX:
            self._topics.clear()
        parsed = self._topics[topic] = self._parse_topic(topic)
        return parsed

    def _parse_topic(self, topic: str) -> tuple[LaneKey, str] | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        parts = topic[len(head) :].split("/")
        if len(parts) != 3:
            return None
        port_id, lane_id, kind = parts
        try:
            topics = Topics(self.prefix, port_id, lane_id)
        except InvalidTopicPartError:
            return None
        built = {
            CROSSING: topics.crossing,
            PLATE_IMAGE: topics.plate_image,
            STATUS: topics.status,
            AVAILABILITY: topics.availability,
        }
        if built.get(kind) != topic:
            return None
        return LaneKey(port_id, lane_id), kind

    # --- JSON documents ------------------------------------------------------------------------

    def _document(
        self, topic: str, lane: LaneKey, kind: str, payload: bytes
    ) -> tuple[dict[str, Any], str, str] | Refused:
        """The validated document, its text and schema id; or why not.

        orjson parses (a third of the stdlib's time); it is stricter than ``json``: NaN,
        Infinity and integers beyond 64 bits are refused as not JSON, which RFC 8259 allows.
        """
        try:
            text = payload.decode("utf-8")
            document = orjson.loads(payload)
        except UnicodeDecodeError as error:
            return Refused(topic, lane, NOT_JSON, f"not UTF-8 JSON at byte {error.start}", payload)
        except orjson.JSONDecodeError as error:
            where = f" at line {error.lineno} column {error.colno}"
            return Refused(topic, lane, NOT_JSON, f"not UTF-8 JSON{where}", payload)
        if not isinstance(document, dict):
            return Refused(
                topic, lane, NOT_JSON, f"a JSON {type(document).__name__}, not an object", payload
            )
        schema_id = document.get("schema")
        if not isinstance(schema_id, str) or not schema_id:
            return Refused(
                topic,
                lane,
                SCHEMA_MISSING,
                "no 'schema' field naming the payload's schema",
                payload,
            )
        family = SCHEMA_FAMILIES[kind]
        if not schema_id.startswith(family):
            shown = schema_id[:80]
            return Refused(
                topic,
                lane,
                SCHEMA_WRONG_KIND,
                f"schema {shown!r} on a {kind} topic (expected {family}N)",
                payload,
            )
        validator = self._validator(schema_id)
        if validator is None:
            return Refused(
                topic,
                lane,
                SCHEMA_UNKNOWN,
                f"schema {schema_id[:80]!r} is not known to this release",
                payload,
            )
        if not validator.is_valid(document):
            problems = [_describe(error) for error in validator.iter_errors(document)]
            shown = "; ".join(problems[:_SHOWN_ERRORS])
            more = (
                f" (+{len(problems) - _SHOWN_ERRORS} more)" if len(problems) > _SHOWN_ERRORS else ""
            )
            return Refused(topic, lane, SCHEMA_INVALID, f"{schema_id}: {shown}{more}", payload)
        if "\\u0000" in text:
            return Refused(
                topic,
                lane,
                UNSTORABLE_TEXT,
                "a string holds \\u0000, which PostgreSQL text cannot store",
                payload,
            )
        return document, text, schema_id

    def _validator(self, schema_id: str) -> Any:
        if schema_id not in self._validators:
            try:
                schema = load_schema(schema_id)
            except UnknownSchemaError:
                return None
            self._validators[schema_id] = jsonschema_rs.validator_for(schema)
        return self._validators[schema_id]

    def _crossing(self, topic: str, lane: LaneKey, payload: bytes) -> Crossing | Refused:
        read = self._document(topic, lane, CROSSING, payload)
        if isinstance(read, Refused):
            return read
        event, text, schema_id = read
        port_id, lane_id = str(event.get("port_id")), str(event.get("lane_id"))
        if port_id != lane.port_id or lane_id != lane.lane_id:
            return Refused(
                topic,
                lane,
                TOPIC_MISMATCH,
                f"payload names lane {LaneKey(port_id, lane_id)}, the topic is lane {lane}",
                payload,
            )
        try:
            cards = event.get("cards") or []
            plate = event.get("plate") or {}
            seq = event["seq"]
            if not isinstance(seq, int) or not 1 <= seq <= _MAX_BIGINT:
                raise ValueError("seq out of range")
            return Crossing(
                topic=topic,
                lane=lane,
                event_id=uuid.UUID(event["event_id"]),
                seq=seq,
                schema_id=schema_id,
                opened_at=_timestamp(event["opened_at"]),
                closed_at=_timestamp(event["closed_at"]),
                committed_at=_timestamp(event["committed_at"]),
                recommendation=str(event["recommendation"]),
                reasons=tuple(str(reason) for reason in event["reasons"]),
                card_refs=tuple(str(card["ref"]) for card in cards),
                plate_text=_optional_text(plate.get("text")),
                plate_image_sha256=_optional_text(plate.get("image_sha256")),
                payload=text,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            return Refused(
                topic,
                lane,
                CORE_INVALID,
                f"{schema_id}: core field unreadable ({type(error).__name__})",
                payload,
            )

    def _status(self, topic: str, lane: LaneKey, payload: bytes) -> LaneStatus | Refused:
        read = self._document(topic, lane, STATUS, payload)
        if isinstance(read, Refused):
            return read
        document, text, schema_id = read
        named = document.get("lane") or {}
        claimed = LaneKey(str(named.get("port_id")), str(named.get("lane_id")))
        if claimed != lane:
            return Refused(
                topic,
                lane,
                TOPIC_MISMATCH,
                f"payload names lane {claimed}, the topic is lane {lane}",
                payload,
            )
        try:
            outbox = _section(document, "outbox")
            cache = _section(document, "cache")
            uplink = _section(document, "uplink")
            return LaneStatus(
                topic=topic,
                lane=lane,
                time=_timestamp(document["time"]),
                document=text,
                agent_version=_optional_text(named.get("agent")),
                uplink_state=_optional_text(uplink.get("state")),
                outbox_depth=_optional_int(outbox.get("depth")),
                outbox_rows=_optional_int(outbox.get("rows")),
                outbox_oldest_unsent_age_s=_optional_float(outbox.get("oldest_unsent_age_s")),
                lane_last_seq=_optional_int((outbox.get("last_seq") or {}).get(CROSSING)),
                lane_acked_seq=_optional_int((outbox.get("acked_seq") or {}).get(CROSSING)),
                cache_version=_optional_int(cache.get("bundle_version")),
                cache_age_s=_optional_float(cache.get("age_s")),
                cache_stale=cache.get("stale") if isinstance(cache.get("stale"), bool) else None,
                faults=tuple(str(fault["code"]) for fault in document["faults"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            return Refused(
                topic,
                lane,
                CORE_INVALID,
                f"{schema_id}: field unreadable ({type(error).__name__})",
                payload,
            )


def _describe(error: Any) -> str:
    """Where and which rule, never the value (it may be a card number or a plate)."""
    where = "/".join(str(part) for part in error.instance_path) or "(root)"
    rule = str(error.schema_path[-1]) if error.schema_path else "schema"
    return f"{where}: fails {rule!r}"


def _timestamp(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError("timestamp is not a string")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("timestamp without a UTC offset")
    return moment


def _section(document: dict[str, Any], name: str) -> dict[str, Any]:
    section = document.get(name)
    return section if isinstance(section, dict) else {}


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _optional_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_BIGINT:
        return None
    return value


def _optional_float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
