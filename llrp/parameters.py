"""LLRP parameters for status, capabilities, reader configuration and reader events.

Each class is a frozen dataclass named after the specification's parameter, with the spec's
fields in snake case and in wire order; one-bit fields are ``bool``. ROSpecs, AccessSpecs and
tag reports are in ``specs.py``. Values are range-checked when encoded (:class:`~llrp.codec.Writer`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Self

from llrp.codec import (
    BodyReader,
    LlrpEncodeError,
    Parameter,
    ParameterType,
    StatusCode,
    TvType,
    Writer,
    parameter_class,
    status_name,
    type_name,
)

# --- Enumerations of field values ---


class GpiState(enum.IntEnum):
    """GPIPortCurrentState.State."""

    LOW = 0
    HIGH = 1
    UNKNOWN = 2


class KeepaliveTriggerType(enum.IntEnum):
    NULL = 0
    PERIODIC = 1


class EventType(enum.IntEnum):
    """EventNotificationState.EventType: which reader events are sent."""

    HOPPING = 0
    GPI = 1
    ROSPEC = 2
    REPORT_BUFFER_FILL_WARNING = 3
    READER_EXCEPTION = 4
    RF_SURVEY = 5
    AISPEC = 6
    AISPEC_WITH_DETAILS = 7
    ANTENNA = 8


class ConnectionAttemptStatus(enum.IntEnum):
    SUCCESS = 0
    FAILED_READER_INITIATED_CONNECTION_EXISTS = 1
    FAILED_CLIENT_INITIATED_CONNECTION_EXISTS = 2
    FAILED_OTHER_REASON = 3
    ANOTHER_CONNECTION_ATTEMPTED = 4


class ROSpecEventType(enum.IntEnum):
    START = 0
    END = 1
    PREEMPTION = 2


class AntennaEventType(enum.IntEnum):
    DISCONNECTED = 0
    CONNECTED = 1


class AirProtocol(enum.IntEnum):
    UNSPECIFIED = 0
    EPC_GLOBAL_C1G2 = 1


# --- Status ---


@parameter_class
@dataclass(frozen=True, slots=True)
class FieldError(Parameter):
    """Which field of a message or parameter was wrong (``field_num`` counts from 0)."""

    TYPE: ClassVar[int] = ParameterType.FIELD_ERROR
    field_num: int
    error_code: int

    def encode_body(self, writer: Writer) -> None:
        writer.u16("field_num", self.field_num)
        writer.u16("error_code", self.error_code)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("FieldNum"), reader.u16("ErrorCode"))

    def describe(self) -> str:
        return f"field {self.field_num}: {status_name(self.error_code)}"


@parameter_class
@dataclass(frozen=True, slots=True)
class ParameterError(Parameter):
    """Which parameter was wrong, down to a field or a nested parameter."""

    TYPE: ClassVar[int] = ParameterType.PARAMETER_ERROR
    parameter_type: int
    error_code: int
    field_error: FieldError | None = None
    parameter_error: ParameterError | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u16("parameter_type", self.parameter_type)
        writer.u16("error_code", self.error_code)
        writer.parameter(self.field_error)
        writer.parameter(self.parameter_error)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u16("ParameterType"),
            reader.u16("ErrorCode"),
            reader.optional(FieldError),
            reader.optional(ParameterError),
        )

    def describe(self) -> str:
        text = f"parameter {type_name(self.parameter_type)}: {status_name(self.error_code)}"
        if self.field_error is not None:
            text += f", {self.field_error.describe()}"
        if self.parameter_error is not None:
            text += f"; in it {self.parameter_error.describe()}"
        return text


@parameter_class
@dataclass(frozen=True, slots=True)
class LlrpStatus(Parameter):
    """LLRPStatus: the outcome carried by every response. ``ok`` when the code is M_Success."""

    TYPE: ClassVar[int] = ParameterType.LLRP_STATUS
    status_code: int = StatusCode.M_SUCCESS
    error_description: str = ""
    field_error: FieldError | None = None
    parameter_error: ParameterError | None = None

    @property
    def ok(self) -> bool:
        return self.status_code == StatusCode.M_SUCCESS

    def encode_body(self, writer: Writer) -> None:
        writer.u16("status_code", self.status_code)
        writer.utf8("error_description", self.error_description)
        writer.parameter(self.field_error)
        writer.parameter(self.parameter_error)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u16("StatusCode"),
            reader.utf8("ErrorDescription"),
            reader.optional(FieldError),
            reader.optional(ParameterError),
        )

    def describe(self) -> str:
        """``M_ParameterError: no GPI port 9 (parameter GPI_PORT_CURRENT_STATE (225): ...)``."""
        text = status_name(self.status_code)
        if self.error_description:
            text += f": {self.error_description}"
        details = [e.describe() for e in (self.field_error, self.parameter_error) if e is not None]
        if details:
            text += f" ({'; '.join(details)})"
        return text


# --- Timestamps ---


@parameter_class
@dataclass(frozen=True, slots=True)
class UtcTimestamp(Parameter):
    """Microseconds since 1970-01-01 UTC on the reader's clock."""

    TYPE: ClassVar[int] = ParameterType.UTC_TIMESTAMP
    microseconds: int

    def encode_body(self, writer: Writer) -> None:
        writer.u64("microseconds", self.microseconds)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u64("Microseconds"))


@parameter_class
@dataclass(frozen=True, slots=True)
class Uptime(Parameter):
    """Microseconds since the reader booted."""

    TYPE: ClassVar[int] = ParameterType.UPTIME
    microseconds: int

    def encode_body(self, writer: Writer) -> None:
        writer.u64("microseconds", self.microseconds)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u64("Microseconds"))


# --- Capabilities ---


@parameter_class
@dataclass(frozen=True, slots=True)
class ReceiveSensitivityTableEntry(Parameter):
    TYPE: ClassVar[int] = ParameterType.RECEIVE_SENSITIVITY_TABLE_ENTRY
    index: int
    receive_sensitivity_value: int

    def encode_body(self, writer: Writer) -> None:
        writer.u16("index", self.index)
        writer.s16("receive_sensitivity_value", self.receive_sensitivity_value)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("Index"), reader.s16("ReceiveSensitivityValue"))


@parameter_class
@dataclass(frozen=True, slots=True)
class PerAntennaAirProtocol(Parameter):
    TYPE: ClassVar[int] = ParameterType.PER_ANTENNA_AIR_PROTOCOL
    antenna_id: int
    protocol_ids: tuple[int, ...] = (AirProtocol.EPC_GLOBAL_C1G2,)

    def encode_body(self, writer: Writer) -> None:
        writer.u16("antenna_id", self.antenna_id)
        writer.u8_list("protocol_ids", self.protocol_ids)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("AntennaID"), reader.u8_list("ProtocolID"))


@parameter_class
@dataclass(frozen=True, slots=True)
class GpioCapabilities(Parameter):
    """GPIOCapabilities: how many general-purpose inputs (loops) and outputs (signal) there are."""

    TYPE: ClassVar[int] = ParameterType.GPIO_CAPABILITIES
    num_gpis: int
    num_gpos: int

    def encode_body(self, writer: Writer) -> None:
        writer.u16("num_gpis", self.num_gpis)
        writer.u16("num_gpos", self.num_gpos)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("NumGPIs"), reader.u16("NumGPOs"))


@parameter_class
@dataclass(frozen=True, slots=True)
class GeneralDeviceCapabilities(Parameter):
    """What the reader is. ``device_manufacturer_name`` is an IANA private enterprise number
    (Impinj 25882) and ``model_name`` a vendor number: LLRP carries both as u32, not text."""

    TYPE: ClassVar[int] = ParameterType.GENERAL_DEVICE_CAPABILITIES
    max_number_of_antenna_supported: int
    can_set_antenna_properties: bool
    has_utc_clock_capability: bool
    device_manufacturer_name: int
    model_name: int
    reader_firmware_version: str
    receive_sensitivity_table: tuple[ReceiveSensitivityTableEntry, ...]
    gpio_capabilities: GpioCapabilities
    per_antenna_air_protocols: tuple[PerAntennaAirProtocol, ...]

    def encode_body(self, writer: Writer) -> None:
        writer.u16("max_number_of_antenna_supported", self.max_number_of_antenna_supported)
        writer.flags16(self.can_set_antenna_properties, self.has_utc_clock_capability)
        writer.u32("device_manufacturer_name", self.device_manufacturer_name)
        writer.u32("model_name", self.model_name)
        writer.utf8("reader_firmware_version", self.reader_firmware_version)
        writer.parameters(self.receive_sensitivity_table)
        writer.parameter(self.gpio_capabilities)
        writer.parameters(self.per_antenna_air_protocols)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        antennas = reader.u16("MaxNumberOfAntennaSupported")
        flags = reader.flags16("CanSetAntennaProperties")
        return cls(
            antennas,
            bool(flags & 0x8000),
            bool(flags & 0x4000),
            reader.u32("DeviceManufacturerName"),
            reader.u32("ModelName"),
            reader.utf8("ReaderFirmwareVersion"),
            reader.at_least_one(ReceiveSensitivityTableEntry),
            reader.one(GpioCapabilities),
            reader.at_least_one(PerAntennaAirProtocol),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class LlrpCapabilities(Parameter):
    """LLRPCapabilities: what of LLRP the reader supports and how many specs it keeps."""

    TYPE: ClassVar[int] = ParameterType.LLRP_CAPABILITIES
    can_do_rf_survey: bool
    can_report_buffer_fill_warning: bool
    supports_client_request_op_spec: bool
    can_do_tag_inventory_state_aware_singulation: bool
    supports_event_and_report_holding: bool
    max_num_priority_levels_supported: int
    client_request_op_spec_timeout: int
    max_num_rospecs: int
    max_num_specs_per_rospec: int
    max_num_inventory_parameter_specs_per_aispec: int
    max_num_access_specs: int
    max_num_op_specs_per_access_spec: int

    def encode_body(self, writer: Writer) -> None:
        writer.flags8(
            self.can_do_rf_survey,
            self.can_report_buffer_fill_warning,
            self.supports_client_request_op_spec,
            self.can_do_tag_inventory_state_aware_singulation,
            self.supports_event_and_report_holding,
        )
        writer.u8("max_num_priority_levels_supported", self.max_num_priority_levels_supported)
        writer.u16("client_request_op_spec_timeout", self.client_request_op_spec_timeout)
        writer.u32("max_num_rospecs", self.max_num_rospecs)
        writer.u32("max_num_specs_per_rospec", self.max_num_specs_per_rospec)
        writer.u32(
            "max_num_inventory_parameter_specs_per_aispec",
            self.max_num_inventory_parameter_specs_per_aispec,
        )
        writer.u32("max_num_access_specs", self.max_num_access_specs)
        writer.u32("max_num_op_specs_per_access_spec", self.max_num_op_specs_per_access_spec)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        flags = reader.flags8("CanDoRFSurvey")
        return cls(
            bool(flags & 0x80),
            bool(flags & 0x40),
            bool(flags & 0x20),
            bool(flags & 0x10),
            bool(flags & 0x08),
            reader.u8("MaxNumPriorityLevelsSupported"),
            reader.u16("ClientRequestOpSpecTimeout"),
            reader.u32("MaxNumROSpecs"),
            reader.u32("MaxNumSpecsPerROSpec"),
            reader.u32("MaxNumInventoryParameterSpecsPerAISpec"),
            reader.u32("MaxNumAccessSpecs"),
            reader.u32("MaxNumOpSpecsPerAccessSpec"),
        )


# --- Reader configuration ---


@parameter_class
@dataclass(frozen=True, slots=True)
class LlrpConfigurationStateValue(Parameter):
    TYPE: ClassVar[int] = ParameterType.LLRP_CONFIGURATION_STATE_VALUE
    value: int

    def encode_body(self, writer: Writer) -> None:
        writer.u32("value", self.value)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u32("LLRPConfigurationStateValue"))


@parameter_class
@dataclass(frozen=True, slots=True)
class Identification(Parameter):
    """The reader's identity: ``id_type`` 0 = MAC address, 1 = EPC."""

    TYPE: ClassVar[int] = ParameterType.IDENTIFICATION
    id_type: int
    reader_id: bytes

    def encode_body(self, writer: Writer) -> None:
        writer.u8("id_type", self.id_type)
        writer.u8v("reader_id", self.reader_id)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("IDType"), reader.u8v("ReaderID"))


@parameter_class
@dataclass(frozen=True, slots=True)
class GpoWriteData(Parameter):
    """GPOWriteData: drive general-purpose output ``gpo_port_number`` high (True) or low."""

    TYPE: ClassVar[int] = ParameterType.GPO_WRITE_DATA
    gpo_port_number: int
    gpo_data: bool

    def encode_body(self, writer: Writer) -> None:
        writer.u16("gpo_port_number", self.gpo_port_number)
        writer.flags8(self.gpo_data)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("GPOPortNumber"), bool(reader.flags8("GPOData") & 0x80))


@parameter_class
@dataclass(frozen=True, slots=True)
class KeepaliveSpec(Parameter):
    """Periodic KEEPALIVE from the reader every ``periodic_trigger_value`` milliseconds."""

    TYPE: ClassVar[int] = ParameterType.KEEPALIVE_SPEC
    keepalive_trigger_type: int = KeepaliveTriggerType.NULL
    periodic_trigger_value: int = 0

    def encode_body(self, writer: Writer) -> None:
        writer.u8("keepalive_trigger_type", self.keepalive_trigger_type)
        writer.u32("periodic_trigger_value", self.periodic_trigger_value)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("KeepaliveTriggerType"), reader.u32("PeriodicTriggerValue"))


@parameter_class
@dataclass(frozen=True, slots=True)
class AntennaProperties(Parameter):
    TYPE: ClassVar[int] = ParameterType.ANTENNA_PROPERTIES
    antenna_connected: bool
    antenna_id: int
    antenna_gain: int

    def encode_body(self, writer: Writer) -> None:
        writer.flags8(self.antenna_connected)
        writer.u16("antenna_id", self.antenna_id)
        writer.s16("antenna_gain", self.antenna_gain)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        connected = bool(reader.flags8("AntennaConnected") & 0x80)
        return cls(connected, reader.u16("AntennaID"), reader.s16("AntennaGain"))


@parameter_class
@dataclass(frozen=True, slots=True)
class RfReceiver(Parameter):
    TYPE: ClassVar[int] = ParameterType.RF_RECEIVER
    receiver_sensitivity: int

    def encode_body(self, writer: Writer) -> None:
        writer.u16("receiver_sensitivity", self.receiver_sensitivity)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("ReceiverSensitivity"))


@parameter_class
@dataclass(frozen=True, slots=True)
class RfTransmitter(Parameter):
    TYPE: ClassVar[int] = ParameterType.RF_TRANSMITTER
    hop_table_id: int
    channel_index: int
    transmit_power: int

    def encode_body(self, writer: Writer) -> None:
        writer.u16("hop_table_id", self.hop_table_id)
        writer.u16("channel_index", self.channel_index)
        writer.u16("transmit_power", self.transmit_power)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u16("HopTableID"), reader.u16("ChannelIndex"), reader.u16("TransmitPower")
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class AntennaConfiguration(Parameter):
    """Per-antenna receiver and transmitter settings; ``antenna_id`` 0 means every antenna.
    Air-protocol inventory settings (C1G2InventoryCommand) are not modelled and are skipped."""

    TYPE: ClassVar[int] = ParameterType.ANTENNA_CONFIGURATION
    antenna_id: int
    rf_receiver: RfReceiver | None = None
    rf_transmitter: RfTransmitter | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.u16("antenna_id", self.antenna_id)
        writer.parameter(self.rf_receiver)
        writer.parameter(self.rf_transmitter)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u16("AntennaID"), reader.optional(RfReceiver), reader.optional(RfTransmitter)
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class GpiPortCurrentState(Parameter):
    """GPIPortCurrentState: ``config`` enables the input; ``state`` is what it reads (in
    GET_READER_CONFIG_RESPONSE; ignored by a reader in SET_READER_CONFIG)."""

    TYPE: ClassVar[int] = ParameterType.GPI_PORT_CURRENT_STATE
    gpi_port_num: int
    config: bool
    state: int = GpiState.UNKNOWN

    def encode_body(self, writer: Writer) -> None:
        writer.u16("gpi_port_num", self.gpi_port_num)
        writer.flags8(self.config)
        writer.u8("state", self.state)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        port = reader.u16("GPIPortNum")
        config = bool(reader.flags8("Config") & 0x80)
        return cls(port, config, reader.u8("State"))


@parameter_class
@dataclass(frozen=True, slots=True)
class EventsAndReports(Parameter):
    TYPE: ClassVar[int] = ParameterType.EVENTS_AND_REPORTS
    hold_events_and_reports_upon_reconnect: bool

    def encode_body(self, writer: Writer) -> None:
        writer.flags8(self.hold_events_and_reports_upon_reconnect)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(bool(reader.flags8("HoldEventsAndReportsUponReconnect") & 0x80))


@parameter_class
@dataclass(frozen=True, slots=True)
class EventNotificationState(Parameter):
    """Turn one kind of reader event (:class:`EventType`) on or off."""

    TYPE: ClassVar[int] = ParameterType.EVENT_NOTIFICATION_STATE
    event_type: int
    notification_state: bool

    def encode_body(self, writer: Writer) -> None:
        writer.u16("event_type", self.event_type)
        writer.flags8(self.notification_state)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("EventType"), bool(reader.flags8("NotificationState") & 0x80))


@parameter_class
@dataclass(frozen=True, slots=True)
class ReaderEventNotificationSpec(Parameter):
    TYPE: ClassVar[int] = ParameterType.READER_EVENT_NOTIFICATION_SPEC
    event_notification_states: tuple[EventNotificationState, ...]

    def encode_body(self, writer: Writer) -> None:
        writer.parameters(self.event_notification_states)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.at_least_one(EventNotificationState))


# --- Reader events ---


@parameter_class
@dataclass(frozen=True, slots=True)
class GpiEvent(Parameter):
    """A general-purpose input changed: ``gpi_event`` True = it went high."""

    TYPE: ClassVar[int] = ParameterType.GPI_EVENT
    gpi_port_number: int
    gpi_event: bool

    def encode_body(self, writer: Writer) -> None:
        writer.u16("gpi_port_number", self.gpi_port_number)
        writer.flags8(self.gpi_event)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("GPIPortNumber"), bool(reader.flags8("GPIEvent") & 0x80))


@parameter_class
@dataclass(frozen=True, slots=True)
class ROSpecEvent(Parameter):
    TYPE: ClassVar[int] = ParameterType.ROSPEC_EVENT
    event_type: int
    rospec_id: int
    preempting_rospec_id: int = 0

    def encode_body(self, writer: Writer) -> None:
        writer.u8("event_type", self.event_type)
        writer.u32("rospec_id", self.rospec_id)
        writer.u32("preempting_rospec_id", self.preempting_rospec_id)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("EventType"), reader.u32("ROSpecID"), reader.u32("PreemptingROSpecID"))


@parameter_class
@dataclass(frozen=True, slots=True)
class ReportBufferLevelWarningEvent(Parameter):
    TYPE: ClassVar[int] = ParameterType.REPORT_BUFFER_LEVEL_WARNING_EVENT
    report_buffer_percentage_full: int

    def encode_body(self, writer: Writer) -> None:
        writer.u8("report_buffer_percentage_full", self.report_buffer_percentage_full)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("ReportBufferPercentageFull"))


@parameter_class
@dataclass(frozen=True, slots=True)
class ReportBufferOverflowErrorEvent(Parameter):
    TYPE: ClassVar[int] = ParameterType.REPORT_BUFFER_OVERFLOW_ERROR_EVENT

    def encode_body(self, writer: Writer) -> None:
        pass

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls()


@parameter_class
@dataclass(frozen=True, slots=True)
class ReaderExceptionEvent(Parameter):
    """Something went wrong in the reader; the optional ids say where."""

    TYPE: ClassVar[int] = ParameterType.READER_EXCEPTION_EVENT
    message: str
    rospec_id: int | None = None
    spec_index: int | None = None
    inventory_parameter_spec_id: int | None = None
    antenna_id: int | None = None
    access_spec_id: int | None = None
    op_spec_id: int | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.utf8("message", self.message)
        writer.tv(TvType.ROSPEC_ID, "I", self.rospec_id)
        writer.tv(TvType.SPEC_INDEX, "H", self.spec_index)
        writer.tv(TvType.INVENTORY_PARAMETER_SPEC_ID, "H", self.inventory_parameter_spec_id)
        writer.tv(TvType.ANTENNA_ID, "H", self.antenna_id)
        writer.tv(TvType.ACCESS_SPEC_ID, "I", self.access_spec_id)
        writer.tv(TvType.OP_SPEC_ID, "H", self.op_spec_id)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.utf8("Message"),
            reader.tv(TvType.ROSPEC_ID, "I"),
            reader.tv(TvType.SPEC_INDEX, "H"),
            reader.tv(TvType.INVENTORY_PARAMETER_SPEC_ID, "H"),
            reader.tv(TvType.ANTENNA_ID, "H"),
            reader.tv(TvType.ACCESS_SPEC_ID, "I"),
            reader.tv(TvType.OP_SPEC_ID, "H"),
        )


@parameter_class
@dataclass(frozen=True, slots=True)
class AntennaEvent(Parameter):
    TYPE: ClassVar[int] = ParameterType.ANTENNA_EVENT
    event_type: int
    antenna_id: int

    def encode_body(self, writer: Writer) -> None:
        writer.u8("event_type", self.event_type)
        writer.u16("antenna_id", self.antenna_id)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("EventType"), reader.u16("AntennaID"))


@parameter_class
@dataclass(frozen=True, slots=True)
class ConnectionAttemptEvent(Parameter):
    """Sent by the reader on every new connection: :class:`ConnectionAttemptStatus`."""

    TYPE: ClassVar[int] = ParameterType.CONNECTION_ATTEMPT_EVENT
    status: int

    def encode_body(self, writer: Writer) -> None:
        writer.u16("status", self.status)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u16("Status"))


@parameter_class
@dataclass(frozen=True, slots=True)
class ConnectionCloseEvent(Parameter):
    """The reader is about to close the connection itself."""

    TYPE: ClassVar[int] = ParameterType.CONNECTION_CLOSE_EVENT

    def encode_body(self, writer: Writer) -> None:
        pass

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls()


@parameter_class
@dataclass(frozen=True, slots=True)
class ReaderEventNotificationData(Parameter):
    """One reader event notification: a timestamp (UTC or uptime, exactly one) and the events.

    Hopping, RF survey and AISpec events are not modelled; they are skipped when received.
    """

    TYPE: ClassVar[int] = ParameterType.READER_EVENT_NOTIFICATION_DATA
    utc_timestamp: int | None = None
    uptime: int | None = None
    gpi_event: GpiEvent | None = None
    rospec_event: ROSpecEvent | None = None
    report_buffer_level_warning_event: ReportBufferLevelWarningEvent | None = None
    report_buffer_overflow_error_event: ReportBufferOverflowErrorEvent | None = None
    reader_exception_event: ReaderExceptionEvent | None = None
    antenna_event: AntennaEvent | None = None
    connection_attempt_event: ConnectionAttemptEvent | None = None
    connection_close_event: ConnectionCloseEvent | None = None

    def encode_body(self, writer: Writer) -> None:
        if (self.utc_timestamp is None) == (self.uptime is None):
            raise LlrpEncodeError(f"{writer.where}: give exactly one of utc_timestamp and uptime")
        if self.utc_timestamp is not None:
            writer.parameter(UtcTimestamp(self.utc_timestamp))
        if self.uptime is not None:
            writer.parameter(Uptime(self.uptime))
        writer.parameter(self.gpi_event)
        writer.parameter(self.rospec_event)
        writer.parameter(self.report_buffer_level_warning_event)
        writer.parameter(self.report_buffer_overflow_error_event)
        writer.parameter(self.reader_exception_event)
        writer.parameter(self.antenna_event)
        writer.parameter(self.connection_attempt_event)
        writer.parameter(self.connection_close_event)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        utc = reader.optional(UtcTimestamp)
        uptime = reader.optional(Uptime)
        reader.expect(
            (utc is None) != (uptime is None), "expected one timestamp, UTCTimestamp or Uptime"
        )
        return cls(
            utc.microseconds if utc is not None else None,
            uptime.microseconds if uptime is not None else None,
            reader.optional(GpiEvent),
            reader.optional(ROSpecEvent),
            reader.optional(ReportBufferLevelWarningEvent),
            reader.optional(ReportBufferOverflowErrorEvent),
            reader.optional(ReaderExceptionEvent),
            reader.optional(AntennaEvent),
            reader.optional(ConnectionAttemptEvent),
            reader.optional(ConnectionCloseEvent),
        )

    @property
    def timestamp_us(self) -> int:
        """The event's timestamp in microseconds, on whichever clock the reader used."""
        if self.utc_timestamp is not None:
            return self.utc_timestamp
        if self.uptime is not None:
            return self.uptime
        raise ValueError("ReaderEventNotificationData without a timestamp")
