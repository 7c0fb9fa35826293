"""LLRP parameters for inventory (ROSpec), tag access (AccessSpec) and tag reports.

A lane runs one ROSpec: an immediate (or client) start, no stop, one AISpec over its antennas
with an EPCglobal Class 1 Gen 2 inventory, and a report per tag read (N = 1). To read each
card's TID it adds one AccessSpec: match any tag, read TID memory (bank 2) from word 0. Builders
for both are at the end of this module.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Self

from llrp.codec import (
    BodyReader,
    LlrpEncodeError,
    Parameter,
    ParameterType,
    TvType,
    Writer,
    parameter_class,
)
from llrp.parameters import AirProtocol, AntennaConfiguration, UtcTimestamp


class ROSpecState(enum.IntEnum):
    DISABLED = 0
    INACTIVE = 1
    ACTIVE = 2


class ROSpecStartTriggerType(enum.IntEnum):
    NULL = 0
    """Started by START_ROSPEC only."""
    IMMEDIATE = 1
    """Starts as soon as it is enabled."""
    PERIODIC = 2
    GPI = 3


class ROSpecStopTriggerType(enum.IntEnum):
    NULL = 0
    """Stopped by STOP_ROSPEC only."""
    DURATION = 1
    GPI_WITH_TIMEOUT = 2


class AISpecStopTriggerType(enum.IntEnum):
    NULL = 0
    DURATION = 1
    GPI_WITH_TIMEOUT = 2
    TAG_OBSERVATION = 3


class ROReportTriggerType(enum.IntEnum):
    NONE = 0
    """Reports only on GET_REPORT."""
    UPON_N_TAGS_OR_END_OF_AISPEC = 1
    UPON_N_TAGS_OR_END_OF_ROSPEC = 2


class AccessSpecStopTriggerType(enum.IntEnum):
    NULL = 0
    OPERATION_COUNT = 1


class AccessReportTriggerType(enum.IntEnum):
    WHENEVER_RO_REPORT_IS_GENERATED = 0
    END_OF_ACCESS_SPEC = 1


class MemoryBank(enum.IntEnum):
    """Gen2 memory banks (the MB field)."""

    RESERVED = 0
    EPC = 1
    TID = 2
    USER = 3


class C1G2ReadResult(enum.IntEnum):
    SUCCESS = 0
    NONSPECIFIC_TAG_ERROR = 1
    NO_RESPONSE_FROM_TAG = 2
    NONSPECIFIC_READER_ERROR = 3


# --- ROSpec ---


@parameter_class
@dataclass(frozen=True, slots=True)
class PeriodicTriggerValue(Parameter):
    TYPE: ClassVar[int] = ParameterType.PERIODIC_TRIGGER_VALUE
    offset: int
    period: int
    utc_timestamp: UtcTimestamp | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u32("offset", self.offset)
        writer.u32("period", self.period)
        writer.parameter(self.utc_timestamp)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u32("Offset"), reader.u32("Period"), reader.optional(UtcTimestamp))


@parameter_class
@dataclass(frozen=True, slots=True)
class GpiTriggerValue(Parameter):
    TYPE: ClassVar[int] = ParameterType.GPI_TRIGGER_VALUE
    gpi_port_num: int
    gpi_event: bool
    timeout: int

    def encode_body(self, writer: Writer) -> None:
        writer.u16("gpi_port_num", self.gpi_port_num)
        writer.flags8(self.gpi_event)
        writer.u32("timeout", self.timeout)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        port = reader.u16("GPIPortNum")
        event = bool(reader.flags8("GPIEvent") & 0x80)
        return cls(port, event, reader.u32("Timeout"))


@parameter_class
@dataclass(frozen=True, slots=True)
class ROSpecStartTrigger(Parameter):
    TYPE: ClassVar[int] = ParameterType.ROSPEC_START_TRIGGER
    rospec_start_trigger_type: int
    periodic_trigger_value: PeriodicTriggerValue | None = None
    gpi_trigger_value: GpiTriggerValue | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u8("rospec_start_trigger_type", self.rospec_start_trigger_type)
        writer.parameter(self.periodic_trigger_value)
        writer.parameter(self.gpi_trigger_value)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u8("ROSpecStartTriggerType"),
            reader.optional(PeriodicTriggerValue),
            reader.optional(GpiTriggerValue),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class ROSpecStopTrigger(Parameter):
    TYPE: ClassVar[int] = ParameterType.ROSPEC_STOP_TRIGGER
    rospec_stop_trigger_type: int
    duration_trigger_value: int = 0
    gpi_trigger_value: GpiTriggerValue | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u8("rospec_stop_trigger_type", self.rospec_stop_trigger_type)
        writer.u32("duration_trigger_value", self.duration_trigger_value)
        writer.parameter(self.gpi_trigger_value)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u8("ROSpecStopTriggerType"),
            reader.u32("DurationTriggerValue"),
            reader.optional(GpiTriggerValue),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class ROBoundarySpec(Parameter):
    TYPE: ClassVar[int] = ParameterType.RO_BOUNDARY_SPEC
    rospec_start_trigger: ROSpecStartTrigger
    rospec_stop_trigger: ROSpecStopTrigger

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.rospec_start_trigger)
        writer.parameter(self.rospec_stop_trigger)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(ROSpecStartTrigger), reader.one(ROSpecStopTrigger))


@parameter_class
@dataclass(frozen=True, slots=True)
class TagObservationTrigger(Parameter):
    TYPE: ClassVar[int] = ParameterType.TAG_OBSERVATION_TRIGGER
    trigger_type: int
    number_of_tags: int
    number_of_attempts: int
    t: int
    timeout: int

    def encode_body(self, writer: Writer) -> None:
        writer.u8("trigger_type", self.trigger_type)
        writer.u8("reserved", 0)
        writer.u16("number_of_tags", self.number_of_tags)
        writer.u16("number_of_attempts", self.number_of_attempts)
        writer.u16("t", self.t)
        writer.u32("timeout", self.timeout)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        trigger = reader.u8("TriggerType")
        reader.u8("Reserved")
        return cls(
            trigger,
            reader.u16("NumberOfTags"),
            reader.u16("NumberOfAttempts"),
            reader.u16("T"),
            reader.u32("Timeout"),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class AISpecStopTrigger(Parameter):
    TYPE: ClassVar[int] = ParameterType.AISPEC_STOP_TRIGGER
    aispec_stop_trigger_type: int = AISpecStopTriggerType.NULL
    duration_trigger: int = 0
    gpi_trigger_value: GpiTriggerValue | None = None
    tag_observation_trigger: TagObservationTrigger | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u8("aispec_stop_trigger_type", self.aispec_stop_trigger_type)
        writer.u32("duration_trigger", self.duration_trigger)
        writer.parameter(self.gpi_trigger_value)
        writer.parameter(self.tag_observation_trigger)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u8("AISpecStopTriggerType"),
            reader.u32("DurationTrigger"),
            reader.optional(GpiTriggerValue),
            reader.optional(TagObservationTrigger),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class InventoryParameterSpec(Parameter):
    TYPE: ClassVar[int] = ParameterType.INVENTORY_PARAMETER_SPEC
    inventory_parameter_spec_id: int
    protocol_id: int = AirProtocol.EPC_GLOBAL_C1G2
    antenna_configurations: tuple[AntennaConfiguration, ...] = ()

    def encode_body(self, writer: Writer) -> None:
        writer.u16("inventory_parameter_spec_id", self.inventory_parameter_spec_id)
        writer.u8("protocol_id", self.protocol_id)
        writer.parameters(self.antenna_configurations)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u16("InventoryParameterSpecID"),
            reader.u8("ProtocolID"),
            reader.many(AntennaConfiguration),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class AISpec(Parameter):
    """Antenna inventory: which antennas (0 = all of them), until when, with what protocol."""

    TYPE: ClassVar[int] = ParameterType.AISPEC
    antenna_ids: tuple[int, ...]
    aispec_stop_trigger: AISpecStopTrigger
    inventory_parameter_specs: tuple[InventoryParameterSpec, ...]

    def encode_body(self, writer: Writer) -> None:
        writer.u16_list("antenna_ids", self.antenna_ids)
        writer.parameter(self.aispec_stop_trigger)
        writer.parameters(self.inventory_parameter_specs)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u16_list("AntennaIDs"),
            reader.one(AISpecStopTrigger),
            reader.at_least_one(InventoryParameterSpec),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class C1G2EpcMemorySelector(Parameter):
    TYPE: ClassVar[int] = ParameterType.C1G2_EPC_MEMORY_SELECTOR
    enable_crc: bool
    enable_pc_bits: bool

    def encode_body(self, writer: Writer) -> None:
        writer.flags8(self.enable_crc, self.enable_pc_bits)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        flags = reader.flags8("EnableCRC")
        return cls(bool(flags & 0x80), bool(flags & 0x40))


@parameter_class
@dataclass(frozen=True, slots=True)
class TagReportContentSelector(Parameter):
    """Which optional fields each TagReportData carries."""

    TYPE: ClassVar[int] = ParameterType.TAG_REPORT_CONTENT_SELECTOR
    enable_rospec_id: bool = False
    enable_spec_index: bool = False
    enable_inventory_parameter_spec_id: bool = False
    enable_antenna_id: bool = True
    enable_channel_index: bool = False
    enable_peak_rssi: bool = True
    enable_first_seen_timestamp: bool = True
    enable_last_seen_timestamp: bool = True
    enable_tag_seen_count: bool = True
    enable_access_spec_id: bool = False
    epc_memory_selectors: tuple[C1G2EpcMemorySelector, ...] = ()

    def encode_body(self, writer: Writer) -> None:
        writer.flags16(
            self.enable_rospec_id,
            self.enable_spec_index,
            self.enable_inventory_parameter_spec_id,
            self.enable_antenna_id,
            self.enable_channel_index,
            self.enable_peak_rssi,
            self.enable_first_seen_timestamp,
            self.enable_last_seen_timestamp,
            self.enable_tag_seen_count,
            self.enable_access_spec_id,
        )
        writer.parameters(self.epc_memory_selectors)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        flags = reader.flags16("EnableROSpecID")

        def bit(index: int) -> bool:
            return bool(flags & (0x8000 >> index))

        return cls(
            bit(0),
            bit(1),
            bit(2),
            bit(3),
            bit(4),
            bit(5),
            bit(6),
            bit(7),
            bit(8),
            bit(9),
            reader.many(C1G2EpcMemorySelector),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class ROReportSpec(Parameter):
    """When the reader sends RO_ACCESS_REPORT (every ``n`` TagReportData, or at the end of the
    AISpec/ROSpec; ``n`` = 0 means no limit) and what each tag report carries."""

    TYPE: ClassVar[int] = ParameterType.RO_REPORT_SPEC
    ro_report_trigger: int = ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC
    n: int = 1
    tag_report_content_selector: TagReportContentSelector = TagReportContentSelector()

    def encode_body(self, writer: Writer) -> None:
        writer.u8("ro_report_trigger", self.ro_report_trigger)
        writer.u16("n", self.n)
        writer.parameter(self.tag_report_content_selector)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u8("ROReportTrigger"), reader.u16("N"), reader.one(TagReportContentSelector)
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class ROSpec(Parameter):
    """A reader operation: when it starts and stops, which AISpecs it runs, how it reports.
    RFSurveySpecs and vendor spec parameters are not modelled (skipped on decode)."""

    TYPE: ClassVar[int] = ParameterType.ROSPEC
    rospec_id: int
    priority: int
    current_state: int
    ro_boundary_spec: ROBoundarySpec
    ai_specs: tuple[AISpec, ...]
    ro_report_spec: ROReportSpec | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u32("rospec_id", self.rospec_id)
        writer.u8("priority", self.priority)
        writer.u8("current_state", self.current_state)
        writer.parameter(self.ro_boundary_spec)
        writer.parameters(self.ai_specs)
        writer.parameter(self.ro_report_spec)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u32("ROSpecID"),
            reader.u8("Priority"),
            reader.u8("CurrentState"),
            reader.one(ROBoundarySpec),
            reader.at_least_one(AISpec),
            reader.optional(ROReportSpec),
        )

    @property
    def antenna_ids(self) -> frozenset[int]:
        """Antennas of all its AISpecs (0 stands for every antenna)."""
        return frozenset(a for spec in self.ai_specs for a in spec.antenna_ids)


# --- AccessSpec ---


@parameter_class
@dataclass(frozen=True, slots=True)
class C1G2TargetTag(Parameter):
    """Which tags an AccessSpec applies to: tag memory ``memory_bank`` from bit ``pointer``,
    under ``tag_mask``, equals ``tag_data`` (``match`` True) or differs (False). Masks are
    bit strings: a bit count and the bits padded to whole bytes."""

    TYPE: ClassVar[int] = ParameterType.C1G2_TARGET_TAG
    memory_bank: int
    match: bool
    pointer: int
    tag_mask_bits: int = 0
    tag_mask: bytes = b""
    tag_data_bits: int = 0
    tag_data: bytes = b""

    @classmethod
    def match_any(cls) -> Self:
        """An empty mask on the EPC bank: every tag matches."""
        return cls(MemoryBank.EPC, True, 0x20)

    def encode_body(self, writer: Writer) -> None:
        if not 0 <= self.memory_bank <= 3:
            raise LlrpEncodeError(f"{writer.where}.memory_bank = {self.memory_bank}: expected 0..3")
        writer.u8("memory_bank", (self.memory_bank << 6) | (0x20 if self.match else 0))
        writer.u16("pointer", self.pointer)
        writer.u1v("tag_mask", self.tag_mask_bits, self.tag_mask)
        writer.u1v("tag_data", self.tag_data_bits, self.tag_data)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        flags = reader.flags8("MB")
        pointer = reader.u16("Pointer")
        mask_bits, mask = reader.u1v("TagMask")
        data_bits, data = reader.u1v("TagData")
        return cls(flags >> 6, bool(flags & 0x20), pointer, mask_bits, mask, data_bits, data)

    def matches(self, memory: bytes) -> bool:
        """Whether a tag whose bank ``memory_bank`` holds ``memory`` is one this targets."""
        bits = min(self.tag_mask_bits, self.tag_data_bits)
        if bits == 0:
            return self.match
        value = int.from_bytes(memory, "big")
        total = len(memory) * 8
        equal = True
        for index in range(bits):
            position = self.pointer + index
            if not self.tag_mask[index // 8] & (0x80 >> (index % 8)):
                continue
            if position >= total:
                equal = False
                break
            tag_bit = (value >> (total - 1 - position)) & 1
            want = 1 if self.tag_data[index // 8] & (0x80 >> (index % 8)) else 0
            if tag_bit != want:
                equal = False
                break
        return equal == self.match


@parameter_class
@dataclass(frozen=True, slots=True)
class C1G2TagSpec(Parameter):
    TYPE: ClassVar[int] = ParameterType.C1G2_TAG_SPEC
    target_tags: tuple[C1G2TargetTag, ...]

    def encode_body(self, writer: Writer) -> None:
        writer.parameters(self.target_tags)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.at_least_one(C1G2TargetTag))


@parameter_class
@dataclass(frozen=True, slots=True)
class C1G2Read(Parameter):
    """Read ``word_count`` 16-bit words of ``memory_bank`` from ``word_pointer`` (0 words =
    the whole bank)."""

    TYPE: ClassVar[int] = ParameterType.C1G2_READ
    op_spec_id: int
    access_password: int
    memory_bank: int
    word_pointer: int
    word_count: int

    def encode_body(self, writer: Writer) -> None:
        if not 0 <= self.memory_bank <= 3:
            raise LlrpEncodeError(f"{writer.where}.memory_bank = {self.memory_bank}: expected 0..3")
        writer.u16("op_spec_id", self.op_spec_id)
        writer.u32("access_password", self.access_password)
        writer.u8("memory_bank", self.memory_bank << 6)
        writer.u16("word_pointer", self.word_pointer)
        writer.u16("word_count", self.word_count)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        op_spec_id = reader.u16("OpSpecID")
        password = reader.u32("AccessPassword")
        bank = reader.flags8("MB") >> 6
        return cls(op_spec_id, password, bank, reader.u16("WordPointer"), reader.u16("WordCount"))


@parameter_class
@dataclass(frozen=True, slots=True)
class AccessCommand(Parameter):
    """Which tags (a C1G2TagSpec) and what to do to them; only reads are modelled, other
    operations (write, kill, lock, vendor) are skipped on decode."""

    TYPE: ClassVar[int] = ParameterType.ACCESS_COMMAND
    tag_spec: C1G2TagSpec
    op_specs: tuple[C1G2Read, ...]

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.tag_spec)
        writer.parameters(self.op_specs)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(C1G2TagSpec), reader.at_least_one(C1G2Read))


@parameter_class
@dataclass(frozen=True, slots=True)
class AccessSpecStopTrigger(Parameter):
    TYPE: ClassVar[int] = ParameterType.ACCESS_SPEC_STOP_TRIGGER
    access_spec_stop_trigger: int = AccessSpecStopTriggerType.NULL
    operation_count_value: int = 0

    def encode_body(self, writer: Writer) -> None:
        writer.u8("access_spec_stop_trigger", self.access_spec_stop_trigger)
        writer.u16("operation_count_value", self.operation_count_value)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("AccessSpecStopTrigger"), reader.u16("OperationCountValue"))


@parameter_class
@dataclass(frozen=True, slots=True)
class AccessReportSpec(Parameter):
    TYPE: ClassVar[int] = ParameterType.ACCESS_REPORT_SPEC
    access_report_trigger: int = AccessReportTriggerType.WHENEVER_RO_REPORT_IS_GENERATED

    def encode_body(self, writer: Writer) -> None:
        writer.u8("access_report_trigger", self.access_report_trigger)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("AccessReportTrigger"))


@parameter_class
@dataclass(frozen=True, slots=True)
class AccessSpec(Parameter):
    """What to do to tags singulated by a ROSpec (``rospec_id`` 0 = any) on an antenna
    (``antenna_id`` 0 = any). ``current_state`` True = active."""

    TYPE: ClassVar[int] = ParameterType.ACCESS_SPEC
    access_spec_id: int
    antenna_id: int
    protocol_id: int
    current_state: bool
    rospec_id: int
    access_spec_stop_trigger: AccessSpecStopTrigger
    access_command: AccessCommand
    access_report_spec: AccessReportSpec | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u32("access_spec_id", self.access_spec_id)
        writer.u16("antenna_id", self.antenna_id)
        writer.u8("protocol_id", self.protocol_id)
        writer.flags8(self.current_state)
        writer.u32("rospec_id", self.rospec_id)
        writer.parameter(self.access_spec_stop_trigger)
        writer.parameter(self.access_command)
        writer.parameter(self.access_report_spec)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u32("AccessSpecID"),
            reader.u16("AntennaID"),
            reader.u8("ProtocolID"),
            bool(reader.flags8("CurrentState") & 0x80),
            reader.u32("ROSpecID"),
            reader.one(AccessSpecStopTrigger),
            reader.one(AccessCommand),
            reader.optional(AccessReportSpec),
        )


# --- Tag reports ---


@parameter_class
@dataclass(frozen=True, slots=True)
class EpcData(Parameter):
    """EPCData: an EPC of any length as a bit string (96-bit EPCs usually come as EPC-96 TV)."""

    TYPE: ClassVar[int] = ParameterType.EPC_DATA
    epc_bits: int
    epc: bytes

    def encode_body(self, writer: Writer) -> None:
        writer.u1v("epc", self.epc_bits, self.epc)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        bits, data = reader.u1v("EPC")
        return cls(bits, data)


@parameter_class
@dataclass(frozen=True, slots=True)
class C1G2ReadOpSpecResult(Parameter):
    """The outcome of one C1G2Read on one tag; ``read_data`` is the words read, as bytes."""

    TYPE: ClassVar[int] = ParameterType.C1G2_READ_OP_SPEC_RESULT
    result: int
    op_spec_id: int
    read_data: bytes = b""

    def encode_body(self, writer: Writer) -> None:
        writer.u8("result", self.result)
        writer.u16("op_spec_id", self.op_spec_id)
        writer.u16v("read_data", self.read_data)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("Result"), reader.u16("OpSpecID"), reader.u16v("ReadData"))


@parameter_class
@dataclass(frozen=True, slots=True)
class TagReportData(Parameter):
    """One tag in an RO_ACCESS_REPORT. Optional fields are there when the report content
    selector asked for them. Timestamps are microseconds (UTC since 1970, or uptime); a
    12-byte EPC goes on the wire as EPC-96 (TV), any other as EPCData."""

    TYPE: ClassVar[int] = ParameterType.TAG_REPORT_DATA
    epc: bytes
    rospec_id: int | None = None
    spec_index: int | None = None
    inventory_parameter_spec_id: int | None = None
    antenna_id: int | None = None
    peak_rssi: int | None = None
    """dBm, signed."""
    channel_index: int | None = None
    first_seen_timestamp_utc: int | None = None
    first_seen_timestamp_uptime: int | None = None
    last_seen_timestamp_utc: int | None = None
    last_seen_timestamp_uptime: int | None = None
    tag_seen_count: int | None = None
    c1g2_pc: int | None = None
    c1g2_crc: int | None = None
    access_spec_id: int | None = None
    read_results: tuple[C1G2ReadOpSpecResult, ...] = ()

    def encode_body(self, writer: Writer) -> None:
        if len(self.epc) == 12:
            writer.raw(bytes([0x80 | TvType.EPC_96]) + self.epc)
        else:
            writer.parameter(EpcData(8 * len(self.epc), self.epc))
        writer.tv(TvType.ROSPEC_ID, "I", self.rospec_id)
        writer.tv(TvType.SPEC_INDEX, "H", self.spec_index)
        writer.tv(TvType.INVENTORY_PARAMETER_SPEC_ID, "H", self.inventory_parameter_spec_id)
        writer.tv(TvType.ANTENNA_ID, "H", self.antenna_id)
        writer.tv(TvType.PEAK_RSSI, "b", self.peak_rssi)
        writer.tv(TvType.CHANNEL_INDEX, "H", self.channel_index)
        writer.tv(TvType.FIRST_SEEN_TIMESTAMP_UTC, "Q", self.first_seen_timestamp_utc)
        writer.tv(TvType.FIRST_SEEN_TIMESTAMP_UPTIME, "Q", self.first_seen_timestamp_uptime)
        writer.tv(TvType.LAST_SEEN_TIMESTAMP_UTC, "Q", self.last_seen_timestamp_utc)
        writer.tv(TvType.LAST_SEEN_TIMESTAMP_UPTIME, "Q", self.last_seen_timestamp_uptime)
        writer.tv(TvType.TAG_SEEN_COUNT, "H", self.tag_seen_count)
        writer.tv(TvType.C1G2_PC, "H", self.c1g2_pc)
        writer.tv(TvType.C1G2_CRC, "H", self.c1g2_crc)
        writer.tv(TvType.ACCESS_SPEC_ID, "I", self.access_spec_id)
        writer.parameters(self.read_results)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        epc_96 = reader.tv_bytes(TvType.EPC_96)
        epc_data = reader.optional(EpcData)
        reader.expect(
            (epc_96 is None) != (epc_data is None), "expected one EPC, as EPC-96 or EPCData"
        )
        epc = epc_96 if epc_96 is not None else epc_data.epc if epc_data is not None else b""
        return cls(
            epc,
            reader.tv(TvType.ROSPEC_ID, "I"),
            reader.tv(TvType.SPEC_INDEX, "H"),
            reader.tv(TvType.INVENTORY_PARAMETER_SPEC_ID, "H"),
            reader.tv(TvType.ANTENNA_ID, "H"),
            reader.tv(TvType.PEAK_RSSI, "b"),
            reader.tv(TvType.CHANNEL_INDEX, "H"),
            reader.tv(TvType.FIRST_SEEN_TIMESTAMP_UTC, "Q"),
            reader.tv(TvType.FIRST_SEEN_TIMESTAMP_UPTIME, "Q"),
            reader.tv(TvType.LAST_SEEN_TIMESTAMP_UTC, "Q"),
            reader.tv(TvType.LAST_SEEN_TIMESTAMP_UPTIME, "Q"),
            reader.tv(TvType.TAG_SEEN_COUNT, "H"),
            reader.tv(TvType.C1G2_PC, "H"),
            reader.tv(TvType.C1G2_CRC, "H"),
            reader.tv(TvType.ACCESS_SPEC_ID, "I"),
            reader.many(C1G2ReadOpSpecResult),
        )

    @property
    def epc_hex(self) -> str:
        """The card reference as the credential cache keys it: upper-case hex."""
        return self.epc.hex().upper()


# --- Tag memory ---


def gen2_crc16(data: bytes) -> int:
    """The Gen2 StoredCRC: CRC-16/CCITT (polynomial 0x1021, preset 0xFFFF), complemented."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc ^ 0xFFFF


def epc_memory(epc: bytes) -> bytes:
    """A tag's EPC bank: StoredCRC, PC (length in words), then the EPC."""
    pc = ((((len(epc) + 1) // 2) << 11) & 0xFFFF).to_bytes(2, "big")
    return gen2_crc16(pc + epc).to_bytes(2, "big") + pc + epc


# --- Builders for what a lane uses ---


def lane_rospec(
    rospec_id: int,
    antenna_ids: Iterable[int],
    *,
    start_immediately: bool = False,
    report_every_n_tags: int = 1,
    content: TagReportContentSelector | None = None,
) -> ROSpec:
    """The ROSpec a lane runs: start on START_ROSPEC (or as soon as enabled), never stop, one
    Gen2 inventory over ``antenna_ids``, a report every ``report_every_n_tags`` tag reads with
    antenna, peak RSSI, first/last seen and seen count."""
    start = ROSpecStartTriggerType.IMMEDIATE if start_immediately else ROSpecStartTriggerType.NULL
    return ROSpec(
        rospec_id=rospec_id,
        priority=0,
        current_state=ROSpecState.DISABLED,
        ro_boundary_spec=ROBoundarySpec(
            ROSpecStartTrigger(start), ROSpecStopTrigger(ROSpecStopTriggerType.NULL)
        ),
        ai_specs=(
            AISpec(
                tuple(antenna_ids),
                AISpecStopTrigger(AISpecStopTriggerType.NULL),
                (InventoryParameterSpec(1, AirProtocol.EPC_GLOBAL_C1G2),),
            ),
        ),
        ro_report_spec=ROReportSpec(
            ROReportTriggerType.UPON_N_TAGS_OR_END_OF_AISPEC,
            report_every_n_tags,
            content if content is not None else TagReportContentSelector(),
        ),
    )


def tid_access_spec(
    access_spec_id: int, *, rospec_id: int = 0, word_count: int = 2, op_spec_id: int = 1
) -> AccessSpec:
    """An AccessSpec that reads ``word_count`` words of TID memory from word 0 of every tag
    the ROSpec (0 = any) singulates on any antenna, reported with the tag."""
    return AccessSpec(
        access_spec_id=access_spec_id,
        antenna_id=0,
        protocol_id=AirProtocol.EPC_GLOBAL_C1G2,
        current_state=False,
        rospec_id=rospec_id,
        access_spec_stop_trigger=AccessSpecStopTrigger(AccessSpecStopTriggerType.NULL, 0),
        access_command=AccessCommand(
            C1G2TagSpec((C1G2TargetTag.match_any(),)),
            (C1G2Read(op_spec_id, 0, MemoryBank.TID, 0, word_count),),
        ),
        access_report_spec=AccessReportSpec(
            AccessReportTriggerType.WHENEVER_RO_REPORT_IS_GENERATED
        ),
    )
