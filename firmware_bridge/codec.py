"""Frames and messages of the lane-controller serial protocol (see PROTOCOL.md).

This is the bottom layer of the bridge: bytes in, typed messages out, and back. It does no I/O
and keeps no state except the receive buffer of :class:`FrameDecoder`, so the link (agent side)
and the simulator (controller side) are built from exactly the same code.

A frame on the wire is ``0x00 | COBS(version | type | seq | payload | crc) | 0x00``; every integer
is little-endian and the CRC is CRC-16/CCITT-FALSE over version..payload.

Exceptions raised by this package::

    FirmwareBridgeError            base of everything firmware_bridge raises
    ├── FieldValueError            a message field is out of range (also a ValueError)
    ├── FrameError                 a received frame was rejected; carries the raw bytes
    │   ├── FramingError           not valid COBS, too short or too long
    │   ├── CrcError               CRC in the frame differs from the CRC of its contents
    │   ├── VersionError           protocol version this codec does not speak
    │   ├── UnknownTypeError       message type code not in the protocol
    │   └── PayloadError           known type whose payload does not parse
    ├── LinkClosedError            (link.py) the link was used after close()
    └── ScenarioError              (scenario.py) a scenario file is not valid

``str()`` of a :class:`FrameError` says what was expected and what arrived but never contains
the frame's bytes: those may carry a card number and are only logged at DEBUG.
"""

from __future__ import annotations

import enum
import logging
import struct
import time
from dataclasses import dataclass, field
from typing import ClassVar, Final, Self

logger = logging.getLogger(__name__)

# --- Constants. Every value here is part of the wire format documented in PROTOCOL.md. ---

PROTOCOL_VERSION: Final = 1
"""Value of the first byte of every decoded frame; a new layout means a new version."""

FRAME_DELIMITER: Final = 0x00
"""COBS guarantees that this byte never occurs inside an encoded frame."""

HEADER_SIZE: Final = 4
"""version (u8) + type (u8) + seq (u16 LE)."""

CRC_SIZE: Final = 2
MAX_PAYLOAD_SIZE: Final = 255
"""Largest payload either side may send; bounds every buffer on both sides."""

MIN_FRAME_SIZE: Final = HEADER_SIZE + CRC_SIZE
MAX_FRAME_SIZE: Final = HEADER_SIZE + MAX_PAYLOAD_SIZE + CRC_SIZE
MAX_ENCODED_SIZE: Final = MAX_FRAME_SIZE + MAX_FRAME_SIZE // 254 + 1
"""COBS adds one code byte per started run of 254 bytes: 263 bytes between delimiters."""

MAX_EPC_SIZE: Final = 62
"""Gen2 EPC memory holds at most 496 bits."""

MAX_TID_SIZE: Final = 62
MAX_CONTROLLER_ID_SIZE: Final = 32
MAX_FAULT_DETAIL_SIZE: Final = 64
SEQ_MODULO: Final = 0x10000
"""Sequence numbers are u16 and wrap from 0xFFFF to 0x0000."""

_CRC_POLY: Final = 0x1021
_CRC_INIT: Final = 0xFFFF


class MessageType(enum.IntEnum):
    """Type byte of a frame. 0x0_: both directions, 0x1_: controller to agent, 0x2_: agent to
    controller."""

    ACK = 0x01
    HELLO = 0x10
    TAG_READ = 0x11
    LOOP = 0x12
    HEARTBEAT = 0x13
    FAULT = 0x14
    PONG = 0x15
    SET_SIGNAL = 0x20
    PING = 0x21


EVENT_TYPES: Final = frozenset(
    {MessageType.HELLO, MessageType.TAG_READ, MessageType.LOOP, MessageType.FAULT}
)
"""Controller messages that take a sequence number and are resent until acknowledged."""


class SignalState(enum.IntEnum):
    """What the lane signal shows. MANUAL means: fall back to manual processing."""

    OFF = 0
    PROCEED = 1
    STOP = 2
    MANUAL = 3


class FaultCode(enum.IntEnum):
    """Fault codes the protocol defines; a controller may send others, which pass through."""

    READER_NO_RESPONSE = 0x0001
    ANTENNA_VSWR = 0x0002
    LOOP_DETECTOR = 0x0003
    EVENT_QUEUE_OVERFLOW = 0x0004
    HOST_SILENT = 0x0005
    SIGNAL_LAMP = 0x0006
    WATCHDOG_RESET = 0x0007


class PingFlags(enum.IntFlag):
    """Bits of PING.flags."""

    NONE = 0
    HELLO_REQUEST = 0x01
    """The agent has no HELLO for this connection: the controller answers with a HELLO event."""


# --- Exceptions ---


class FirmwareBridgeError(Exception):
    """Base of every error raised by firmware_bridge."""


class FieldValueError(FirmwareBridgeError, ValueError):
    """A message field holds a value the wire format cannot carry."""

    def __init__(self, message_type: MessageType, field_name: str, expected: str, actual: object):
        self.message_type = message_type
        self.field_name = field_name
        self.expected = expected
        self.actual = actual
        super().__init__(f"{message_type.name}.{field_name}: expected {expected}, got {actual!r}")


class FrameError(FirmwareBridgeError):
    """A received frame was rejected. ``frame`` holds its raw bytes for DEBUG logging only."""

    def __init__(self, reason: str, frame: bytes = b""):
        self.reason = reason
        self.frame = frame
        super().__init__(reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, frame_len={len(self.frame)})"


class FramingError(FrameError):
    """The bytes between two delimiters are not a COBS frame of an allowed length."""


class CrcError(FrameError):
    """The CRC carried in the frame differs from the CRC computed over its contents."""

    def __init__(self, expected: int, actual: int, frame: bytes = b""):
        self.expected = expected
        self.actual = actual
        super().__init__(f"expected crc 0x{expected:04x}, got 0x{actual:04x}", frame)


class VersionError(FrameError):
    """The frame is intact but speaks a protocol version this codec does not."""

    def __init__(self, expected: int, actual: int, frame: bytes = b""):
        self.expected = expected
        self.actual = actual
        super().__init__(f"expected protocol version {expected}, got {actual}", frame)


class UnknownTypeError(FrameError):
    """The frame is intact but its type byte is not a message of this protocol."""

    def __init__(self, type_code: int, frame: bytes = b""):
        self.type_code = type_code
        super().__init__(f"unknown message type 0x{type_code:02x}", frame)


class PayloadError(FrameError):
    """The frame is intact and of a known type, but its payload does not parse."""

    def __init__(self, message_type: MessageType, detail: str, frame: bytes = b""):
        self.message_type = message_type
        self.detail = detail
        super().__init__(f"{message_type.name} payload: {detail}", frame)


# --- CRC and COBS ---


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc16_ccitt(data: bytes, crc: int = _CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).

    Check value: ``crc16_ccitt(b"123456789") == 0x29B1``. Pass the previous result as ``crc``
    to continue over several buffers.
    """
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[(crc >> 8) ^ byte]
    return crc


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: returns ``data`` without any 0x00 byte.

    Canonical form: a final run of exactly 254 non-zero bytes gets no trailing 0x01.
    """
    out = bytearray()
    segments = data.split(b"\x00")
    for index, segment in enumerate(segments):
        is_last = index == len(segments) - 1
        position = 0
        while True:
            run = segment[position : position + 254]
            position += len(run)
            if len(run) == 254:
                out.append(0xFF)
                out += run
                if is_last and position == len(segment):
                    break
                continue
            out.append(len(run) + 1)
            out += run
            break
    return bytes(out)


def cobs_decode(encoded: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises :class:`FramingError` on malformed input."""
    if b"\x00" in encoded:
        raise FramingError(
            f"expected no 0x00 inside a COBS frame, got one at offset {encoded.index(0)}",
            encoded,
        )
    out = bytearray()
    position = 0
    length = len(encoded)
    while position < length:
        code = encoded[position]
        end = position + code
        if end > length:
            raise FramingError(
                f"COBS code 0x{code:02x} at offset {position} expected {code - 1} data bytes, "
                f"got {length - position - 1}",
                encoded,
            )
        out += encoded[position + 1 : end]
        position = end
        if code != 0xFF and position < length:
            out.append(0)
    return bytes(out)


# --- Payload helpers ---


class _PayloadReader:
    """Reads fields off a payload, raising PayloadError that names the field on short input."""

    def __init__(self, message_type: MessageType, payload: bytes):
        self._type = message_type
        self._payload = payload
        self._offset = 0

    def _take(self, field_name: str, size: int) -> bytes:
        available = len(self._payload) - self._offset
        if available < size:
            raise PayloadError(
                self._type,
                f"field {field_name} expected {size} bytes at offset {self._offset}, "
                f"got {max(available, 0)}",
            )
        chunk = self._payload[self._offset : self._offset + size]
        self._offset += size
        return chunk

    def u8(self, field_name: str) -> int:
        return self._take(field_name, 1)[0]

    def u16(self, field_name: str) -> int:
        value: int = struct.unpack("<H", self._take(field_name, 2))[0]
        return value

    def i16(self, field_name: str) -> int:
        value: int = struct.unpack("<h", self._take(field_name, 2))[0]
        return value

    def u32(self, field_name: str) -> int:
        value: int = struct.unpack("<I", self._take(field_name, 4))[0]
        return value

    def prefixed(self, field_name: str, minimum: int, maximum: int) -> bytes:
        length = self.u8(f"{field_name}_len")
        if not minimum <= length <= maximum:
            raise PayloadError(
                self._type, f"field {field_name}_len expected {minimum}..{maximum}, got {length}"
            )
        return self._take(field_name, length)

    def ascii(self, field_name: str, maximum: int) -> str:
        raw = self.prefixed(field_name, 0, maximum)
        if not _is_printable_ascii(raw):
            raise PayloadError(self._type, f"field {field_name} expected printable ASCII")
        return raw.decode("ascii")

    def end(self) -> None:
        if self._offset != len(self._payload):
            raise PayloadError(
                self._type,
                f"expected {self._offset} bytes, got {len(self._payload)} "
                f"({len(self._payload) - self._offset} trailing)",
            )


def _is_printable_ascii(raw: bytes) -> bool:
    return all(0x20 <= byte <= 0x7E for byte in raw)


def _check_int(
    message_type: MessageType, field_name: str, value: int, minimum: int, maximum: int
) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise FieldValueError(message_type, field_name, f"integer {minimum}..{maximum}", value)


def _check_bytes(
    message_type: MessageType, field_name: str, value: bytes, minimum: int, maximum: int
) -> None:
    if not isinstance(value, bytes) or not minimum <= len(value) <= maximum:
        # Only the length: these fields are card numbers, which stay out of messages and logs.
        shown = f"<{len(value)} bytes>" if isinstance(value, bytes) else type(value).__name__
        raise FieldValueError(message_type, field_name, f"{minimum}..{maximum} bytes", shown)


def _check_ascii(message_type: MessageType, field_name: str, value: str, maximum: int) -> None:
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not _is_printable_ascii(value.encode("ascii"))
        or len(value) > maximum
    ):
        raise FieldValueError(
            message_type, field_name, f"printable ASCII of at most {maximum} characters", value
        )


def _prefixed(raw: bytes) -> bytes:
    return bytes((len(raw),)) + raw


# --- Messages. One frozen dataclass per message type, fields named as in PROTOCOL.md. ---


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledges the event (controller) or SET_SIGNAL (agent) whose seq is ``acked_seq``."""

    message_type: ClassVar[MessageType] = MessageType.ACK
    acked_seq: int

    def __post_init__(self) -> None:
        _check_int(self.message_type, "acked_seq", self.acked_seq, 0, 0xFFFF)

    def to_bytes(self) -> bytes:
        return struct.pack("<H", self.acked_seq)

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        acked_seq = reader.u16("acked_seq")
        reader.end()
        return cls(acked_seq)


@dataclass(frozen=True, slots=True)
class Hello:
    """First event after a controller boots, and its answer to a PING with HELLO_REQUEST.

    ``boot_id`` changes on every power-up, which tells a resent HELLO from a reboot.
    ``resume_seq`` is the seq of the oldest event the controller holds unacknowledged (this
    HELLO's own seq when there is none): the agent delivers events from there on.
    """

    message_type: ClassVar[MessageType] = MessageType.HELLO
    protocol_version: int
    firmware_major: int
    firmware_minor: int
    firmware_patch: int
    boot_id: int
    resume_seq: int
    controller_id: str

    def __post_init__(self) -> None:
        for name in ("protocol_version", "firmware_major", "firmware_minor", "firmware_patch"):
            _check_int(self.message_type, name, getattr(self, name), 0, 0xFF)
        _check_int(self.message_type, "boot_id", self.boot_id, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "resume_seq", self.resume_seq, 0, 0xFFFF)
        _check_ascii(self.message_type, "controller_id", self.controller_id, MAX_CONTROLLER_ID_SIZE)

    @property
    def firmware_version(self) -> str:
        return f"{self.firmware_major}.{self.firmware_minor}.{self.firmware_patch}"

    def to_bytes(self) -> bytes:
        return struct.pack(
            "<BBBBIH",
            self.protocol_version,
            self.firmware_major,
            self.firmware_minor,
            self.firmware_patch,
            self.boot_id,
            self.resume_seq,
        ) + _prefixed(self.controller_id.encode("ascii"))

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        protocol_version = reader.u8("protocol_version")
        major = reader.u8("firmware_major")
        minor = reader.u8("firmware_minor")
        patch = reader.u8("firmware_patch")
        boot_id = reader.u32("boot_id")
        resume_seq = reader.u16("resume_seq")
        controller_id = reader.ascii("controller_id", MAX_CONTROLLER_ID_SIZE)
        reader.end()
        return cls(protocol_version, major, minor, patch, boot_id, resume_seq, controller_id)


@dataclass(frozen=True, slots=True)
class TagRead:
    """One read of one tag by one antenna. ``tid`` is None when the reader did not read it."""

    message_type: ClassVar[MessageType] = MessageType.TAG_READ
    timestamp_ms: int
    antenna: int
    rssi_deci_dbm: int
    epc: bytes
    tid: bytes | None = None

    def __post_init__(self) -> None:
        _check_int(self.message_type, "timestamp_ms", self.timestamp_ms, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "antenna", self.antenna, 0, 0xFF)
        _check_int(self.message_type, "rssi_deci_dbm", self.rssi_deci_dbm, -0x8000, 0x7FFF)
        _check_bytes(self.message_type, "epc", self.epc, 1, MAX_EPC_SIZE)
        if self.tid is not None:
            _check_bytes(self.message_type, "tid", self.tid, 1, MAX_TID_SIZE)

    @property
    def epc_hex(self) -> str:
        """The card reference as the credential cache keys it: upper-case hex."""
        return self.epc.hex().upper()

    @property
    def rssi_dbm(self) -> float:
        return self.rssi_deci_dbm / 10

    def to_bytes(self) -> bytes:
        return (
            struct.pack("<IBh", self.timestamp_ms, self.antenna, self.rssi_deci_dbm)
            + _prefixed(self.epc)
            + _prefixed(self.tid or b"")
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        timestamp_ms = reader.u32("timestamp_ms")
        antenna = reader.u8("antenna")
        rssi = reader.i16("rssi_deci_dbm")
        epc = reader.prefixed("epc", 1, MAX_EPC_SIZE)
        tid = reader.prefixed("tid", 0, MAX_TID_SIZE)
        reader.end()
        return cls(timestamp_ms, antenna, rssi, epc, tid or None)

    def __repr__(self) -> str:
        # The EPC is a card number: keep it out of reprs that end up in log lines and tracebacks.
        return (
            f"TagRead(timestamp_ms={self.timestamp_ms}, antenna={self.antenna}, "
            f"rssi_deci_dbm={self.rssi_deci_dbm}, epc=<{len(self.epc)} bytes>, "
            f"tid={'None' if self.tid is None else f'<{len(self.tid)} bytes>'})"
        )


@dataclass(frozen=True, slots=True)
class Loop:
    """A vehicle-presence loop changed state."""

    message_type: ClassVar[MessageType] = MessageType.LOOP
    timestamp_ms: int
    loop_id: int
    occupied: bool

    def __post_init__(self) -> None:
        _check_int(self.message_type, "timestamp_ms", self.timestamp_ms, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "loop_id", self.loop_id, 0, 0xFF)
        if not isinstance(self.occupied, bool):
            raise FieldValueError(self.message_type, "occupied", "bool", self.occupied)

    def to_bytes(self) -> bytes:
        return struct.pack("<IBB", self.timestamp_ms, self.loop_id, int(self.occupied))

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        timestamp_ms = reader.u32("timestamp_ms")
        loop_id = reader.u8("loop_id")
        state = reader.u8("state")
        reader.end()
        if state not in (0, 1):
            raise PayloadError(cls.message_type, f"field state expected 0 or 1, got {state}")
        return cls(timestamp_ms, loop_id, bool(state))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Periodic controller health; not acknowledged."""

    message_type: ClassVar[MessageType] = MessageType.HEARTBEAT
    uptime_ms: int
    tag_reads: int
    events_pending: int
    resends: int
    rx_errors: int

    def __post_init__(self) -> None:
        _check_int(self.message_type, "uptime_ms", self.uptime_ms, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "tag_reads", self.tag_reads, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "events_pending", self.events_pending, 0, 0xFFFF)
        _check_int(self.message_type, "resends", self.resends, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "rx_errors", self.rx_errors, 0, 0xFFFFFFFF)

    def to_bytes(self) -> bytes:
        return struct.pack(
            "<IIHII",
            self.uptime_ms,
            self.tag_reads,
            self.events_pending,
            self.resends,
            self.rx_errors,
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        uptime_ms = reader.u32("uptime_ms")
        tag_reads = reader.u32("tag_reads")
        events_pending = reader.u16("events_pending")
        resends = reader.u32("resends")
        rx_errors = reader.u32("rx_errors")
        reader.end()
        return cls(uptime_ms, tag_reads, events_pending, resends, rx_errors)


@dataclass(frozen=True, slots=True)
class Fault:
    """The controller detected a fault. ``code`` may be outside :class:`FaultCode`."""

    message_type: ClassVar[MessageType] = MessageType.FAULT
    timestamp_ms: int
    code: int
    detail: str = ""

    def __post_init__(self) -> None:
        _check_int(self.message_type, "timestamp_ms", self.timestamp_ms, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "code", self.code, 0, 0xFFFF)
        _check_ascii(self.message_type, "detail", self.detail, MAX_FAULT_DETAIL_SIZE)

    @property
    def code_name(self) -> str:
        """Name of a known code, or its hex form."""
        try:
            return FaultCode(self.code).name
        except ValueError:
            return f"0x{self.code:04x}"

    def to_bytes(self) -> bytes:
        return struct.pack("<IH", self.timestamp_ms, self.code) + _prefixed(
            self.detail.encode("ascii")
        )

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        timestamp_ms = reader.u32("timestamp_ms")
        code = reader.u16("code")
        detail = reader.ascii("detail", MAX_FAULT_DETAIL_SIZE)
        reader.end()
        return cls(timestamp_ms, code, detail)


@dataclass(frozen=True, slots=True)
class Pong:
    """Answer to a PING, echoing its nonce."""

    message_type: ClassVar[MessageType] = MessageType.PONG
    nonce: int

    def __post_init__(self) -> None:
        _check_int(self.message_type, "nonce", self.nonce, 0, 0xFFFFFFFF)

    def to_bytes(self) -> bytes:
        return struct.pack("<I", self.nonce)

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        nonce = reader.u32("nonce")
        reader.end()
        return cls(nonce)


@dataclass(frozen=True, slots=True)
class SetSignal:
    """Agent asks the controller to show ``state`` on the lane signal."""

    message_type: ClassVar[MessageType] = MessageType.SET_SIGNAL
    state: SignalState

    def __post_init__(self) -> None:
        if not isinstance(self.state, SignalState):
            raise FieldValueError(self.message_type, "state", "a SignalState", self.state)

    def to_bytes(self) -> bytes:
        return bytes((self.state,))

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        raw = reader.u8("state")
        reader.end()
        try:
            state = SignalState(raw)
        except ValueError:
            raise PayloadError(
                cls.message_type, f"field state expected 0..{max(SignalState)}, got {raw}"
            ) from None
        return cls(state)


@dataclass(frozen=True, slots=True)
class Ping:
    """Agent liveness probe; the controller answers with PONG carrying the same nonce."""

    message_type: ClassVar[MessageType] = MessageType.PING
    nonce: int
    flags: PingFlags = PingFlags.NONE

    def __post_init__(self) -> None:
        _check_int(self.message_type, "nonce", self.nonce, 0, 0xFFFFFFFF)
        _check_int(self.message_type, "flags", int(self.flags), 0, 0xFF)

    def to_bytes(self) -> bytes:
        return struct.pack("<IB", self.nonce, int(self.flags))

    @classmethod
    def from_bytes(cls, payload: bytes) -> Self:
        reader = _PayloadReader(cls.message_type, payload)
        nonce = reader.u32("nonce")
        flags = reader.u8("flags")
        reader.end()
        # Unknown flag bits are kept: a newer agent may set bits an older controller ignores.
        return cls(nonce, PingFlags(flags))


Message = Ack | Hello | TagRead | Loop | Heartbeat | Fault | Pong | SetSignal | Ping
ControllerMessage = Ack | Hello | TagRead | Loop | Heartbeat | Fault | Pong
"""What a controller sends."""
AgentMessage = Ack | SetSignal | Ping
"""What an agent sends."""

MESSAGE_CLASSES: Final[dict[MessageType, type[Message]]] = {
    MessageType.ACK: Ack,
    MessageType.HELLO: Hello,
    MessageType.TAG_READ: TagRead,
    MessageType.LOOP: Loop,
    MessageType.HEARTBEAT: Heartbeat,
    MessageType.FAULT: Fault,
    MessageType.PONG: Pong,
    MessageType.SET_SIGNAL: SetSignal,
    MessageType.PING: Ping,
}


# --- Frames ---


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """One valid frame: the sender's sequence number and the message it carried."""

    seq: int
    message: Message


def build_frame(message: Message, seq: int) -> bytes:
    """The decoded frame (header, payload, CRC) before COBS: what the CRC protects."""
    if not 0 <= seq <= 0xFFFF:
        raise FieldValueError(message.message_type, "seq", "integer 0..65535", seq)
    payload = message.to_bytes()
    if len(payload) > MAX_PAYLOAD_SIZE:
        raise FieldValueError(
            message.message_type, "payload", f"at most {MAX_PAYLOAD_SIZE} bytes", len(payload)
        )
    body = struct.pack("<BBH", PROTOCOL_VERSION, message.message_type, seq) + payload
    return body + struct.pack("<H", crc16_ccitt(body))


def encode_frame(message: Message, seq: int) -> bytes:
    """Bytes to write to the serial line: ``0x00 | COBS(frame) | 0x00``.

    The leading delimiter ends whatever garbage preceded the frame, so one corrupted frame
    never swallows the next.
    """
    return b"\x00" + cobs_encode(build_frame(message, seq)) + b"\x00"


def parse_frame(frame: bytes) -> DecodedFrame:
    """Check and parse a decoded (un-COBSed) frame; raises a :class:`FrameError` subclass."""
    if not MIN_FRAME_SIZE <= len(frame) <= MAX_FRAME_SIZE:
        raise FramingError(
            f"expected a frame of {MIN_FRAME_SIZE}..{MAX_FRAME_SIZE} bytes, got {len(frame)}",
            frame,
        )
    body = frame[:-CRC_SIZE]
    (carried_crc,) = struct.unpack("<H", frame[-CRC_SIZE:])
    computed_crc = crc16_ccitt(body)
    if carried_crc != computed_crc:
        raise CrcError(computed_crc, carried_crc, frame)
    version, type_code, seq = struct.unpack("<BBH", body[:HEADER_SIZE])
    if version != PROTOCOL_VERSION:
        raise VersionError(PROTOCOL_VERSION, version, frame)
    try:
        message_type = MessageType(type_code)
    except ValueError:
        raise UnknownTypeError(type_code, frame) from None
    message_class = MESSAGE_CLASSES[message_type]
    payload = body[HEADER_SIZE:]
    try:
        message = message_class.from_bytes(payload)
    except PayloadError as exc:
        raise PayloadError(message_type, exc.detail, frame) from None
    except FieldValueError as exc:
        raise PayloadError(
            message_type, f"field {exc.field_name} expected {exc.expected}, got {exc.actual!r}"
        ) from None
    return DecodedFrame(seq, message)


def decode_wire_frame(encoded: bytes) -> DecodedFrame:
    """Parse the bytes found between two delimiters."""
    if len(encoded) > MAX_ENCODED_SIZE:
        raise FramingError(
            f"expected at most {MAX_ENCODED_SIZE} encoded bytes, got {len(encoded)}", encoded
        )
    return parse_frame(cobs_decode(encoded))


@dataclass(slots=True)
class DecoderCounters:
    """What a :class:`FrameDecoder` accepted and rejected since it was created."""

    frames_ok: int = 0
    """Frames decoded and handed out."""
    crc_errors: int = 0
    framing_errors: int = 0
    version_errors: int = 0
    unknown_types: int = 0
    payload_errors: int = 0
    bytes_discarded: int = 0
    """Wire bytes (delimiters excluded) of rejected frames and of noise skipped while
    resynchronising."""

    @property
    def frames_rejected(self) -> int:
        return (
            self.crc_errors
            + self.framing_errors
            + self.version_errors
            + self.unknown_types
            + self.payload_errors
        )

    def copy(self) -> DecoderCounters:
        return DecoderCounters(
            self.frames_ok,
            self.crc_errors,
            self.framing_errors,
            self.version_errors,
            self.unknown_types,
            self.payload_errors,
            self.bytes_discarded,
        )


REJECT_WARNING_INTERVAL_S: Final = 60.0
"""Bad frames are summarised in the log at most this often."""

_COUNTER_FOR_ERROR: Final[dict[type[FrameError], str]] = {
    CrcError: "crc_errors",
    FramingError: "framing_errors",
    VersionError: "version_errors",
    UnknownTypeError: "unknown_types",
    PayloadError: "payload_errors",
}


@dataclass(slots=True)
class FrameDecoder:
    """Turns a byte stream into frames; bad frames are counted and skipped, never raised.

    The buffer never holds more than :data:`MAX_ENCODED_SIZE` bytes: a longer run without a
    delimiter is counted as one framing error and discarded up to the next 0x00, where decoding
    resynchronises. ``name`` goes into log lines to tell several decoders apart.
    """

    name: str = "serial"
    counters: DecoderCounters = field(default_factory=DecoderCounters)
    last_error: FrameError | None = None
    _buffer: bytearray = field(default_factory=bytearray, repr=False)
    _discarding: bool = field(default=False, repr=False)
    _last_warning_at: float = field(default=float("-inf"), repr=False)
    _rejected_since_warning: int = field(default=0, repr=False)

    def feed(self, data: bytes) -> list[DecodedFrame]:
        """Consume ``data``; return the frames it completed, in order."""
        frames: list[DecodedFrame] = []
        start = 0
        length = len(data)
        while start < length:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                break
            self._append(data[start:end])
            self._end_of_frame(frames)
            start = end + 1
        return frames

    def reset(self) -> None:
        """Forget a partial frame (the port was reopened); counters are kept."""
        self.counters.bytes_discarded += len(self._buffer)
        self._buffer.clear()
        self._discarding = False

    def _append(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self._discarding:
            self.counters.bytes_discarded += len(chunk)
            return
        if len(self._buffer) + len(chunk) > MAX_ENCODED_SIZE:
            discarded = len(self._buffer) + len(chunk)
            self._reject(
                FramingError(
                    f"expected a delimiter within {MAX_ENCODED_SIZE} bytes, got {discarded} "
                    "without one; discarding to the next delimiter",
                    bytes(self._buffer) + chunk,
                ),
                discarded,
            )
            self._buffer.clear()
            self._discarding = True
            return
        self._buffer += chunk

    def _end_of_frame(self, frames: list[DecodedFrame]) -> None:
        if self._discarding:
            self._discarding = False
            return
        if not self._buffer:
            return
        encoded = bytes(self._buffer)
        self._buffer.clear()
        try:
            frame = decode_wire_frame(encoded)
        except FrameError as exc:
            self._reject(exc, len(encoded))
            return
        self.counters.frames_ok += 1
        frames.append(frame)

    def _reject(self, error: FrameError, wire_bytes: int) -> None:
        for error_class, counter in _COUNTER_FOR_ERROR.items():
            if isinstance(error, error_class):
                setattr(self.counters, counter, getattr(self.counters, counter) + 1)
                break
        self.counters.bytes_discarded += wire_bytes
        self.last_error = error
        self._rejected_since_warning += 1
        now = time.monotonic()
        # A bad cable can corrupt hundreds of frames a second: say so at most once a minute,
        # with the count, and leave the per-frame detail at DEBUG.
        if now - self._last_warning_at >= REJECT_WARNING_INTERVAL_S:
            logger.warning(
                "%s: dropped %d bad frame(s) since the last report; latest: %s",
                self.name,
                self._rejected_since_warning,
                error,
            )
            self._last_warning_at = now
            self._rejected_since_warning = 0
        logger.debug("%s: dropped frame: %s", self.name, error)
        logger.debug("%s: dropped frame bytes: %s", self.name, error.frame.hex(" "))
