"""LLRP binary encoding: message header, TLV and TV parameters, and framing over a TCP stream.

This is the bottom layer of the package: bytes in, typed messages out, and back. It does no I/O,
so the client (``client.py``) and the emulated reader (``emulator.py``) are built from exactly
the same code. The typed parameters live in ``parameters.py`` and the messages in
``messages.py``; both describe their fields to the :class:`Writer` and :class:`BodyReader` here.

Wire format (EPCglobal LLRP 1.0.1, all integers big-endian)::

    message    = Rsvd(3) Ver(3) Type(10) | Length(u32, whole message) | MessageID(u32) | body
    TLV param  = Rsvd(6) Type(10) | Length(u16, whole parameter) | fields | sub-parameters
    TV param   = 1 Type(7) | value (a fixed size per type)

Types 1..127 are TV parameters, 128..1023 TLV. A receiver skips a TLV parameter whose type it
does not know (vendor ``Custom``, 1023, included): its length says how far. A TV parameter of an
unknown type cannot be skipped (its size is not on the wire), so it is an error.

Exceptions::

    LlrpError                       base of everything llrp raises
    ├── LlrpEncodeError             a field is out of range for its wire type (also a ValueError)
    ├── LlrpDecodeError             bytes that are not a valid LLRP message; names where and what
    │   ├── LlrpFramingError        the TCP stream cannot be framed any more (absurd length)
    │   ├── UnsupportedVersionError header version other than 1
    │   └── UnknownMessageTypeError message type this codec does not know
    └── (client.py) LlrpConnectionError, LlrpTimeoutError, LlrpStatusError

Error text never contains raw bytes: a tag report carries card numbers.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final, Self, TypeVar

if TYPE_CHECKING:
    from llrp.messages import Message

LLRP_PORT: Final = 5084
"""IANA port of LLRP over TCP."""

LLRP_VERSION: Final = 1
"""Header version of LLRP 1.0.1; LLRP 1.1 is 2 and is only spoken after SET_PROTOCOL_VERSION."""

MESSAGE_HEADER_SIZE: Final = 10
TLV_HEADER_SIZE: Final = 4
MAX_TLV_SIZE: Final = 0xFFFF
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20
"""Largest message a decoder accepts unless told otherwise. A report of a thousand tags is about
60 KiB; a length field above this is taken as a broken stream, not a message."""

MAX_NESTING: Final = 16
"""Deepest parameter nesting accepted (LLRP's deepest is about 7: ROSpec > AISpec > ...)."""

CUSTOM_PARAMETER_TYPE: Final = 1023


class MessageType(enum.IntEnum):
    """Message type numbers of LLRP 1.0.1 (section 16.1 of the specification)."""

    GET_READER_CAPABILITIES = 1
    GET_READER_CONFIG = 2
    SET_READER_CONFIG = 3
    CLOSE_CONNECTION_RESPONSE = 4
    GET_READER_CAPABILITIES_RESPONSE = 11
    GET_READER_CONFIG_RESPONSE = 12
    SET_READER_CONFIG_RESPONSE = 13
    CLOSE_CONNECTION = 14
    ADD_ROSPEC = 20
    DELETE_ROSPEC = 21
    START_ROSPEC = 22
    STOP_ROSPEC = 23
    ENABLE_ROSPEC = 24
    DISABLE_ROSPEC = 25
    GET_ROSPECS = 26
    ADD_ROSPEC_RESPONSE = 30
    DELETE_ROSPEC_RESPONSE = 31
    START_ROSPEC_RESPONSE = 32
    STOP_ROSPEC_RESPONSE = 33
    ENABLE_ROSPEC_RESPONSE = 34
    DISABLE_ROSPEC_RESPONSE = 35
    GET_ROSPECS_RESPONSE = 36
    ADD_ACCESSSPEC = 40
    DELETE_ACCESSSPEC = 41
    ENABLE_ACCESSSPEC = 42
    DISABLE_ACCESSSPEC = 43
    GET_ACCESSSPECS = 44
    ADD_ACCESSSPEC_RESPONSE = 50
    DELETE_ACCESSSPEC_RESPONSE = 51
    ENABLE_ACCESSSPEC_RESPONSE = 52
    DISABLE_ACCESSSPEC_RESPONSE = 53
    GET_ACCESSSPECS_RESPONSE = 54
    GET_REPORT = 60
    RO_ACCESS_REPORT = 61
    KEEPALIVE = 62
    READER_EVENT_NOTIFICATION = 63
    ENABLE_EVENTS_AND_REPORTS = 64
    KEEPALIVE_ACK = 72
    ERROR_MESSAGE = 100
    CUSTOM_MESSAGE = 1023


class ParameterType(enum.IntEnum):
    """TLV parameter type numbers used by this package (section 16.2 of the specification)."""

    UTC_TIMESTAMP = 128
    UPTIME = 129
    GENERAL_DEVICE_CAPABILITIES = 137
    RECEIVE_SENSITIVITY_TABLE_ENTRY = 139
    PER_ANTENNA_AIR_PROTOCOL = 140
    GPIO_CAPABILITIES = 141
    LLRP_CAPABILITIES = 142
    ROSPEC = 177
    RO_BOUNDARY_SPEC = 178
    ROSPEC_START_TRIGGER = 179
    PERIODIC_TRIGGER_VALUE = 180
    GPI_TRIGGER_VALUE = 181
    ROSPEC_STOP_TRIGGER = 182
    AISPEC = 183
    AISPEC_STOP_TRIGGER = 184
    TAG_OBSERVATION_TRIGGER = 185
    INVENTORY_PARAMETER_SPEC = 186
    ACCESS_SPEC = 207
    ACCESS_SPEC_STOP_TRIGGER = 208
    ACCESS_COMMAND = 209
    LLRP_CONFIGURATION_STATE_VALUE = 217
    IDENTIFICATION = 218
    GPO_WRITE_DATA = 219
    KEEPALIVE_SPEC = 220
    ANTENNA_PROPERTIES = 221
    ANTENNA_CONFIGURATION = 222
    RF_RECEIVER = 223
    RF_TRANSMITTER = 224
    GPI_PORT_CURRENT_STATE = 225
    EVENTS_AND_REPORTS = 226
    RO_REPORT_SPEC = 237
    TAG_REPORT_CONTENT_SELECTOR = 238
    ACCESS_REPORT_SPEC = 239
    TAG_REPORT_DATA = 240
    EPC_DATA = 241
    READER_EVENT_NOTIFICATION_SPEC = 244
    EVENT_NOTIFICATION_STATE = 245
    READER_EVENT_NOTIFICATION_DATA = 246
    GPI_EVENT = 248
    ROSPEC_EVENT = 249
    REPORT_BUFFER_LEVEL_WARNING_EVENT = 250
    REPORT_BUFFER_OVERFLOW_ERROR_EVENT = 251
    READER_EXCEPTION_EVENT = 252
    ANTENNA_EVENT = 255
    CONNECTION_ATTEMPT_EVENT = 256
    CONNECTION_CLOSE_EVENT = 257
    LLRP_STATUS = 287
    FIELD_ERROR = 288
    PARAMETER_ERROR = 289
    C1G2_TAG_SPEC = 338
    C1G2_TARGET_TAG = 339
    C1G2_READ = 341
    C1G2_EPC_MEMORY_SELECTOR = 348
    C1G2_READ_OP_SPEC_RESULT = 349
    CUSTOM = 1023


class TvType(enum.IntEnum):
    """TV parameter types (1..127); the value size of each is in :data:`TV_VALUE_SIZES`."""

    ANTENNA_ID = 1
    FIRST_SEEN_TIMESTAMP_UTC = 2
    FIRST_SEEN_TIMESTAMP_UPTIME = 3
    LAST_SEEN_TIMESTAMP_UTC = 4
    LAST_SEEN_TIMESTAMP_UPTIME = 5
    PEAK_RSSI = 6
    CHANNEL_INDEX = 7
    TAG_SEEN_COUNT = 8
    ROSPEC_ID = 9
    INVENTORY_PARAMETER_SPEC_ID = 10
    C1G2_CRC = 11
    C1G2_PC = 12
    EPC_96 = 13
    SPEC_INDEX = 14
    CLIENT_REQUEST_OP_SPEC_RESULT = 15
    ACCESS_SPEC_ID = 16
    OP_SPEC_ID = 17
    C1G2_SINGULATION_DETAILS = 18
    C1G2_XPC_W1 = 19
    C1G2_XPC_W2 = 20


TV_VALUE_SIZES: Final[dict[int, int]] = {
    TvType.ANTENNA_ID: 2,
    TvType.FIRST_SEEN_TIMESTAMP_UTC: 8,
    TvType.FIRST_SEEN_TIMESTAMP_UPTIME: 8,
    TvType.LAST_SEEN_TIMESTAMP_UTC: 8,
    TvType.LAST_SEEN_TIMESTAMP_UPTIME: 8,
    TvType.PEAK_RSSI: 1,
    TvType.CHANNEL_INDEX: 2,
    TvType.TAG_SEEN_COUNT: 2,
    TvType.ROSPEC_ID: 4,
    TvType.INVENTORY_PARAMETER_SPEC_ID: 2,
    TvType.C1G2_CRC: 2,
    TvType.C1G2_PC: 2,
    TvType.EPC_96: 12,
    TvType.SPEC_INDEX: 2,
    TvType.CLIENT_REQUEST_OP_SPEC_RESULT: 2,
    TvType.ACCESS_SPEC_ID: 4,
    TvType.OP_SPEC_ID: 2,
    TvType.C1G2_SINGULATION_DETAILS: 4,
    TvType.C1G2_XPC_W1: 2,
    TvType.C1G2_XPC_W2: 2,
}
"""Value bytes after the type byte of each TV parameter (LLRP 1.0.1; 19 and 20 from 1.1)."""


class StatusCode(enum.IntEnum):
    """LLRPStatus codes: M_ about the message, P_ about a parameter, A_ about a field value,
    R_ about the reader."""

    M_SUCCESS = 0
    M_PARAMETER_ERROR = 100
    M_FIELD_ERROR = 101
    M_UNEXPECTED_PARAMETER = 102
    M_MISSING_PARAMETER = 103
    M_DUPLICATE_PARAMETER = 104
    M_OVERFLOW_PARAMETER = 105
    M_OVERFLOW_FIELD = 106
    M_UNKNOWN_PARAMETER = 107
    M_UNKNOWN_FIELD = 108
    M_UNSUPPORTED_MESSAGE = 109
    M_UNSUPPORTED_VERSION = 110
    M_UNSUPPORTED_PARAMETER = 111
    P_PARAMETER_ERROR = 200
    P_FIELD_ERROR = 201
    P_UNEXPECTED_PARAMETER = 202
    P_MISSING_PARAMETER = 203
    P_DUPLICATE_PARAMETER = 204
    P_OVERFLOW_PARAMETER = 205
    P_OVERFLOW_FIELD = 206
    P_UNKNOWN_PARAMETER = 207
    P_UNKNOWN_FIELD = 208
    P_UNSUPPORTED_PARAMETER = 209
    A_INVALID = 300
    A_OUT_OF_RANGE = 301
    R_DEVICE_ERROR = 401


def status_name(code: int) -> str:
    """``M_ParameterError``-style name of a status code, or its number if unknown."""
    try:
        name = StatusCode(code).name
    except ValueError:
        return str(code)
    prefix, _, rest = name.partition("_")
    return prefix + "_" + "".join(part.capitalize() for part in rest.split("_"))


def type_name(parameter_type: int) -> str:
    """Spec-style name of a parameter type for error text: ``GPIEvent (248)``."""
    try:
        name = ParameterType(parameter_type).name if parameter_type >= 128 else None
        name = name or TvType(parameter_type).name
    except ValueError:
        return f"parameter type {parameter_type}"
    return f"{name} ({parameter_type})"


# --- Errors ---


class LlrpError(Exception):
    """Base of every error raised by the llrp package."""


class LlrpEncodeError(LlrpError, ValueError):
    """A value cannot be put on the wire: out of range for its field, or a parameter too long."""


class LlrpDecodeError(LlrpError, ValueError):
    """Bytes that are not a valid LLRP message. ``where`` is the path of the part being read
    (``RO_ACCESS_REPORT > TagReportData``) and ``problem`` what was wrong with it."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


class LlrpFramingError(LlrpDecodeError):
    """The byte stream cannot be cut into messages any more (a header with an impossible length):
    LLRP has no resynchronisation marker, so the connection has to be closed."""


class UnsupportedVersionError(LlrpDecodeError):
    """A message with a header version this codec does not speak. The rest of the stream is
    still framed (the length is in the same place in every version)."""

    def __init__(self, version: int, message_type: int, message_id: int):
        self.version = version
        self.message_type = message_type
        self.message_id = message_id
        super().__init__(
            f"message type {message_type} id {message_id}",
            f"expected LLRP version {LLRP_VERSION}, got {version}",
        )


class UnknownMessageTypeError(LlrpDecodeError):
    """A message type this codec does not know; the message was framed and can be answered."""

    def __init__(self, message_type: int, message_id: int):
        self.message_type = message_type
        self.message_id = message_id
        super().__init__(f"message id {message_id}", f"unknown message type {message_type}")


# --- Writing ---

_RANGES: Final = {
    "B": (0, 0xFF),
    "H": (0, 0xFFFF),
    "I": (0, 0xFFFFFFFF),
    "Q": (0, 0xFFFFFFFFFFFFFFFF),
    "b": (-0x80, 0x7F),
    "h": (-0x8000, 0x7FFF),
}


class Writer:
    """Builds the body of one parameter or message; every value is range-checked and an error
    names the field (``where.field``)."""

    __slots__ = ("_buffer", "where")

    def __init__(self, where: str):
        self.where = where
        self._buffer = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self._buffer)

    def _pack(self, fmt: str, name: str, value: int) -> None:
        low, high = _RANGES[fmt]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise LlrpEncodeError(
                f"{self.where}.{name} = {value!r}: expected an integer {low}..{high}"
            )
        self._buffer += struct.pack(">" + fmt, value)

    def u8(self, name: str, value: int) -> None:
        self._pack("B", name, value)

    def u16(self, name: str, value: int) -> None:
        self._pack("H", name, value)

    def u32(self, name: str, value: int) -> None:
        self._pack("I", name, value)

    def u64(self, name: str, value: int) -> None:
        self._pack("Q", name, value)

    def s8(self, name: str, value: int) -> None:
        self._pack("b", name, value)

    def s16(self, name: str, value: int) -> None:
        self._pack("h", name, value)

    def flags8(self, *bits: bool) -> None:
        """Up to 8 one-bit fields, the first in the most significant bit, the rest reserved 0."""
        self._buffer.append(_pack_bits(bits, 8))

    def flags16(self, *bits: bool) -> None:
        self._buffer += _pack_bits(bits, 16).to_bytes(2, "big")

    def utf8(self, name: str, text: str) -> None:
        """``utf8v``: u16 byte count, then the UTF-8 bytes."""
        self.u8v(name, text.encode("utf-8"))

    def u8v(self, name: str, data: bytes) -> None:
        """``u8v``: u16 count, then that many bytes."""
        self._count(name, len(data))
        self._buffer += data

    def u16v(self, name: str, data: bytes) -> None:
        """``u16v`` of 16-bit words given as bytes (big-endian pairs): u16 word count, words."""
        if len(data) % 2:
            raise LlrpEncodeError(
                f"{self.where}.{name}: expected whole 16-bit words, got {len(data)} bytes"
            )
        self._count(name, len(data) // 2)
        self._buffer += data

    def u16_list(self, name: str, values: Iterable[int]) -> None:
        """``u16v`` of integers: u16 count, then each value."""
        items = list(values)
        self._count(name, len(items))
        for index, value in enumerate(items):
            self.u16(f"{name}[{index}]", value)

    def u8_list(self, name: str, values: Iterable[int]) -> None:
        items = list(values)
        self._count(name, len(items))
        for index, value in enumerate(items):
            self.u8(f"{name}[{index}]", value)

    def u1v(self, name: str, bit_count: int, data: bytes) -> None:
        """``u1v``: u16 bit count, then the bits padded with zeros to whole bytes."""
        if not 0 <= bit_count <= 0xFFFF or len(data) != (bit_count + 7) // 8:
            raise LlrpEncodeError(
                f"{self.where}.{name}: {bit_count} bits need {(bit_count + 7) // 8} bytes, got {len(data)}"
            )
        self._buffer += struct.pack(">H", bit_count) + data

    def raw(self, data: bytes) -> None:
        self._buffer += data

    def _count(self, name: str, count: int) -> None:
        if count > 0xFFFF:
            raise LlrpEncodeError(f"{self.where}.{name}: {count} items, at most 65535 fit")
        self._buffer += struct.pack(">H", count)

    def parameter(self, parameter: Parameter | None) -> None:
        """A TLV sub-parameter (nothing when None)."""
        if parameter is not None:
            self._buffer += encode_parameter(parameter)

    def parameters(self, parameters: Iterable[Parameter]) -> None:
        for parameter in parameters:
            self._buffer += encode_parameter(parameter)

    def tv(self, tv_type: TvType, fmt: str, value: int | None) -> None:
        """A TV sub-parameter holding one integer (nothing when None)."""
        if value is None:
            return
        self._buffer.append(0x80 | tv_type)
        self._pack(fmt, tv_type.name, value)


def _pack_bits(bits: tuple[bool, ...], width: int) -> int:
    if len(bits) > width:
        raise LlrpEncodeError(f"{len(bits)} one-bit fields do not fit in {width} bits")
    value = 0
    for index, bit in enumerate(bits):
        if bit:
            value |= 1 << (width - 1 - index)
    return value


# --- Parameters: the base class and the registry ---


class Parameter:
    """A TLV parameter. Subclasses are frozen dataclasses with ``TYPE`` and the two methods."""

    __slots__ = ()
    TYPE: ClassVar[int]

    def encode_body(self, writer: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        raise NotImplementedError


_P = TypeVar("_P", bound=Parameter)
_E = TypeVar("_E")
PARAMETER_CLASSES: Final[dict[int, type[Parameter]]] = {}
"""TLV parameter classes by type; a TLV of any other type is skipped when decoding."""


def parameter_class(cls: type[_P]) -> type[_P]:
    """Class decorator: register a parameter class for decoding by its ``TYPE``."""
    if cls.TYPE in PARAMETER_CLASSES:
        raise RuntimeError(f"parameter type {cls.TYPE} registered twice")
    PARAMETER_CLASSES[cls.TYPE] = cls
    return cls


def encode_parameter(parameter: Parameter) -> bytes:
    """A whole TLV parameter: header and body."""
    writer = Writer(type(parameter).__name__)
    parameter.encode_body(writer)
    body = writer.getvalue()
    length = TLV_HEADER_SIZE + len(body)
    if length > MAX_TLV_SIZE:
        raise LlrpEncodeError(
            f"{type(parameter).__name__}: {length} bytes, a parameter holds at most {MAX_TLV_SIZE}"
        )
    return struct.pack(">HH", parameter.TYPE & 0x3FF, length) + body


# --- Reading ---


@dataclass(slots=True)
class DecodeStats:
    """What a decode skipped: parameter types this codec does not read (vendor Custom included),
    and TV parameters it knows but does not use in that place."""

    skipped_types: list[int] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.skipped_types)


@dataclass(slots=True)
class _Sub:
    """A sub-parameter cut out of a body, not yet decoded."""

    type: int
    tv: bool
    value: bytes
    """TV: the value bytes; TLV: the body after the 4-byte header."""
    offset: int
    taken: bool = False


class BodyReader:
    """Reads the fields of one parameter or message body in order, then its sub-parameters.

    Every error names the path being read and what was expected. Sub-parameters are cut out of
    the bytes after the fields on first use; a TLV whose type has no registered class is skipped
    (and counted in ``stats``); a known one that the body's class does not take is an error
    (:meth:`end`).
    """

    __slots__ = ("_data", "_depth", "_position", "_subs", "stats", "where")

    def __init__(self, data: bytes, where: str, stats: DecodeStats, depth: int = 0):
        if depth > MAX_NESTING:
            raise LlrpDecodeError(where, f"parameters nested deeper than {MAX_NESTING}")
        self._data = data
        self.where = where
        self.stats = stats
        self._depth = depth
        self._position = 0
        self._subs: list[_Sub] | None = None

    # fields

    def _take(self, size: int, name: str) -> bytes:
        if self._subs is not None:
            raise RuntimeError(f"{self.where}: field {name} read after the sub-parameters")
        end = self._position + size
        if end > len(self._data):
            left = len(self._data) - self._position
            raise LlrpDecodeError(self.where, f"field {name} needs {size} bytes, {left} left")
        chunk = self._data[self._position : end]
        self._position = end
        return chunk

    def _unpack(self, fmt: str, size: int, name: str) -> int:
        value: int = struct.unpack(">" + fmt, self._take(size, name))[0]
        return value

    def u8(self, name: str) -> int:
        return self._unpack("B", 1, name)

    def u16(self, name: str) -> int:
        return self._unpack("H", 2, name)

    def u32(self, name: str) -> int:
        return self._unpack("I", 4, name)

    def u64(self, name: str) -> int:
        return self._unpack("Q", 8, name)

    def s8(self, name: str) -> int:
        return self._unpack("b", 1, name)

    def s16(self, name: str) -> int:
        return self._unpack("h", 2, name)

    def flags8(self, name: str) -> int:
        return self.u8(name)

    def flags16(self, name: str) -> int:
        return self.u16(name)

    def u8v(self, name: str) -> bytes:
        count = self.u16(name + " count")
        return self._take(count, name)

    def utf8(self, name: str) -> str:
        data = self.u8v(name)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LlrpDecodeError(self.where, f"field {name} is not UTF-8 ({exc.reason})") from None

    def u16v(self, name: str) -> bytes:
        """``u16v`` as bytes: the words, big-endian."""
        count = self.u16(name + " count")
        return self._take(2 * count, name)

    def u16_list(self, name: str) -> tuple[int, ...]:
        data = self.u16v(name)
        return tuple(struct.unpack(f">{len(data) // 2}H", data))

    def u8_list(self, name: str) -> tuple[int, ...]:
        return tuple(self.u8v(name))

    def u1v(self, name: str) -> tuple[int, bytes]:
        bits = self.u16(name + " bit count")
        return bits, self._take((bits + 7) // 8, name)

    def rest(self) -> bytes:
        """Every byte after the fields read so far (a body that ends in opaque data)."""
        return self._take(len(self._data) - self._position, "data")

    def expect(self, condition: bool, problem: str) -> None:
        """Raise a decode error about this body unless ``condition`` holds."""
        if not condition:
            raise LlrpDecodeError(self.where, problem)

    def enum(self, kind: Callable[[int], _E], name: str, value: int) -> _E:
        """``kind(value)``, or a decode error naming the field and the value."""
        try:
            return kind(value)
        except ValueError:
            raise LlrpDecodeError(self.where, f"field {name} has unknown value {value}") from None

    # sub-parameters

    def _split(self) -> list[_Sub]:
        if self._subs is not None:
            return self._subs
        subs: list[_Sub] = []
        data = self._data
        position = self._position
        while position < len(data):
            first = data[position]
            if first & 0x80:
                tv_type = first & 0x7F
                size = TV_VALUE_SIZES.get(tv_type)
                if size is None:
                    raise LlrpDecodeError(
                        self.where,
                        f"unknown TV parameter type {tv_type} at byte {position}: "
                        "its size is not on the wire, the rest cannot be read",
                    )
                end = position + 1 + size
                if end > len(data):
                    raise LlrpDecodeError(
                        self.where,
                        f"{type_name(tv_type)} needs {size} value bytes, {len(data) - position - 1} left",
                    )
                subs.append(_Sub(tv_type, True, data[position + 1 : end], position))
                position = end
                continue
            if position + TLV_HEADER_SIZE > len(data):
                raise LlrpDecodeError(
                    self.where,
                    f"{len(data) - position} bytes left at byte {position}, too few for a parameter header",
                )
            type_field, length = struct.unpack_from(">HH", data, position)
            tlv_type = type_field & 0x3FF
            if tlv_type < 128:
                raise LlrpDecodeError(
                    self.where,
                    f"TLV parameter with type {tlv_type} at byte {position}: TLV types start at 128",
                )
            if length < TLV_HEADER_SIZE:
                raise LlrpDecodeError(
                    self.where,
                    f"{type_name(tlv_type)} has length {length}, less than its own header",
                )
            if position + length > len(data):
                raise LlrpDecodeError(
                    self.where,
                    f"{type_name(tlv_type)} claims {length} bytes, {len(data) - position} left",
                )
            body = data[position + TLV_HEADER_SIZE : position + length]
            if tlv_type in PARAMETER_CLASSES:
                subs.append(_Sub(tlv_type, False, body, position))
            else:
                self.stats.skipped_types.append(tlv_type)
            position += length
        self._subs = subs
        return subs

    def _decode(self, cls: type[_P], sub: _Sub) -> _P:
        sub.taken = True
        reader = BodyReader(
            sub.value, f"{self.where} > {cls.__name__}", self.stats, self._depth + 1
        )
        value = cls.decode_body(reader)
        reader.end()
        return value

    def many(self, cls: type[_P]) -> tuple[_P, ...]:
        """Every sub-parameter of ``cls``'s type, in order."""
        return tuple(
            self._decode(cls, sub) for sub in self._split() if sub.type == cls.TYPE and not sub.tv
        )

    def optional(self, cls: type[_P]) -> _P | None:
        """The one sub-parameter of ``cls``'s type, or None; two are an error."""
        found = self.many(cls)
        if len(found) > 1:
            raise LlrpDecodeError(
                self.where, f"expected at most one {cls.__name__}, got {len(found)}"
            )
        return found[0] if found else None

    def one(self, cls: type[_P]) -> _P:
        """The one sub-parameter of ``cls``'s type; none or two are an error."""
        found = self.optional(cls)
        if found is None:
            raise LlrpDecodeError(self.where, f"missing {cls.__name__}")
        return found

    def at_least_one(self, cls: type[_P]) -> tuple[_P, ...]:
        found = self.many(cls)
        if not found:
            raise LlrpDecodeError(self.where, f"missing {cls.__name__} (at least one is required)")
        return found

    def tv_bytes(self, tv_type: TvType) -> bytes | None:
        """The value of the one TV parameter of this type, or None; two are an error."""
        found = [sub for sub in self._split() if sub.tv and sub.type == tv_type]
        if len(found) > 1:
            raise LlrpDecodeError(
                self.where, f"expected at most one {type_name(tv_type)}, got {len(found)}"
            )
        if not found:
            return None
        found[0].taken = True
        return found[0].value

    def tv(self, tv_type: TvType, fmt: str) -> int | None:
        value = self.tv_bytes(tv_type)
        if value is None:
            return None
        number: int = struct.unpack(">" + fmt, value)[0]
        return number

    def has_tv(self, tv_type: TvType) -> bool:
        return any(sub.tv and sub.type == tv_type for sub in self._split())

    def end(self) -> None:
        """Finish: a known TLV sub-parameter nobody took is an error; a TV one is skipped."""
        for sub in self._split():
            if sub.taken:
                continue
            if sub.tv:
                self.stats.skipped_types.append(sub.type)
                continue
            raise LlrpDecodeError(
                self.where, f"unexpected {type_name(sub.type)} at byte {sub.offset}"
            )


# --- Messages: header and framing ---


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One framed message whose body is not decoded yet."""

    version: int
    message_type: int
    message_id: int
    body: bytes

    @property
    def size(self) -> int:
        return MESSAGE_HEADER_SIZE + len(self.body)

    def decode(self, stats: DecodeStats | None = None) -> Message:
        """The typed message; raises :class:`UnsupportedVersionError`,
        :class:`UnknownMessageTypeError` or :class:`LlrpDecodeError`."""
        from llrp.messages import MESSAGE_CLASSES

        if self.version != LLRP_VERSION:
            raise UnsupportedVersionError(self.version, self.message_type, self.message_id)
        cls = MESSAGE_CLASSES.get(self.message_type)
        if cls is None:
            raise UnknownMessageTypeError(self.message_type, self.message_id)
        reader = BodyReader(self.body, cls.__name__, stats if stats is not None else DecodeStats())
        message = cls.decode_body(reader)
        reader.end()
        return message


def parse_header(header: bytes) -> tuple[int, int, int, int]:
    """``(version, message_type, length, message_id)`` of a 10-byte message header."""
    first, length, message_id = struct.unpack(">HII", header)
    return (first >> 10) & 0x7, first & 0x3FF, length, message_id


def encode_message(message: Message, message_id: int, *, version: int = LLRP_VERSION) -> bytes:
    """A whole message on the wire: header (with length) and body."""
    if not 0 <= message_id <= 0xFFFFFFFF:
        raise LlrpEncodeError(f"message id {message_id} is not a u32")
    writer = Writer(type(message).__name__)
    message.encode_body(writer)
    body = writer.getvalue()
    first = ((version & 0x7) << 10) | (message.TYPE & 0x3FF)
    return struct.pack(">HII", first, MESSAGE_HEADER_SIZE + len(body), message_id) + body


def decode_message(data: bytes, stats: DecodeStats | None = None) -> tuple[int, Message]:
    """``(message_id, message)`` of exactly one whole message."""
    if len(data) < MESSAGE_HEADER_SIZE:
        raise LlrpDecodeError(
            "message", f"{len(data)} bytes, a header alone is {MESSAGE_HEADER_SIZE}"
        )
    version, message_type, length, message_id = parse_header(data[:MESSAGE_HEADER_SIZE])
    if length != len(data):
        raise LlrpDecodeError(
            f"message type {message_type} id {message_id}",
            f"header says {length} bytes, got {len(data)}",
        )
    raw = RawMessage(version, message_type, message_id, bytes(data[MESSAGE_HEADER_SIZE:]))
    return message_id, raw.decode(stats)


class FrameDecoder:
    """Cuts a TCP byte stream into messages by their length field, across any chunking.

    A length below the header size or above ``max_message_size`` cannot be skipped safely (LLRP
    has no frame delimiter): :meth:`feed` raises :class:`LlrpFramingError` and every later call
    raises it again, so the owner closes the connection. The buffer never holds more than one
    message plus one chunk.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE):
        if max_message_size < MESSAGE_HEADER_SIZE:
            raise ValueError(f"max_message_size must be at least {MESSAGE_HEADER_SIZE}")
        self.max_message_size = max_message_size
        self._buffer = bytearray()
        self._failure: LlrpFramingError | None = None
        self.messages = 0
        self.bytes_received = 0

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[RawMessage]:
        if self._failure is not None:
            raise self._failure
        self.bytes_received += len(data)
        self._buffer += data
        out: list[RawMessage] = []
        buffer = self._buffer
        start = 0
        while len(buffer) - start >= MESSAGE_HEADER_SIZE:
            version, message_type, length, message_id = parse_header(
                bytes(buffer[start : start + MESSAGE_HEADER_SIZE])
            )
            if not MESSAGE_HEADER_SIZE <= length <= self.max_message_size:
                self._failure = LlrpFramingError(
                    f"message type {message_type} id {message_id}",
                    f"length {length} is outside {MESSAGE_HEADER_SIZE}..{self.max_message_size}; "
                    "the stream cannot be framed any more",
                )
                del buffer[:]
                raise self._failure
            if len(buffer) - start < length:
                break
            body = bytes(buffer[start + MESSAGE_HEADER_SIZE : start + length])
            out.append(RawMessage(version, message_type, message_id, body))
            start += length
        if start:
            del buffer[:start]
        self.messages += len(out)
        return out
