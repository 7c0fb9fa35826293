"""LLRP messages: one frozen dataclass per message type a lane uses.

A request knows its response class (``RESPONSE``), so :meth:`llrp.client.LlrpClient.request`
returns the right type. Every response carries an :class:`~llrp.parameters.LlrpStatus`. The
message id is not part of a message: it travels in the header (:func:`~llrp.codec.encode_message`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Final, Generic, Self, TypeVar

from llrp.codec import BodyReader, MessageType, Writer
from llrp.parameters import (
    AntennaConfiguration,
    AntennaProperties,
    EventsAndReports,
    GeneralDeviceCapabilities,
    GpiPortCurrentState,
    GpoWriteData,
    Identification,
    KeepaliveSpec,
    LlrpCapabilities,
    LlrpConfigurationStateValue,
    LlrpStatus,
    ReaderEventNotificationData,
    ReaderEventNotificationSpec,
)
from llrp.specs import AccessReportSpec, AccessSpec, ROReportSpec, ROSpec, TagReportData


class Message:
    """Base of every message. Subclasses are frozen dataclasses with ``TYPE``."""

    __slots__ = ()
    TYPE: ClassVar[int]

    def encode_body(self, writer: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        raise NotImplementedError


_M = TypeVar("_M", bound=type[Message])
MESSAGE_CLASSES: Final[dict[int, type[Message]]] = {}


def message_class(cls: _M) -> _M:
    """Class decorator: register a message class for decoding by its ``TYPE``."""
    if cls.TYPE in MESSAGE_CLASSES:
        raise RuntimeError(f"message type {cls.TYPE} registered twice")
    MESSAGE_CLASSES[cls.TYPE] = cls
    return cls


@dataclass(frozen=True, slots=True)
class Response(Message):
    """A message answering a request; ``status`` says whether the request was carried out."""

    status: LlrpStatus = field(default_factory=LlrpStatus)

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.status)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(LlrpStatus))


_R = TypeVar("_R", bound=Response)


class Request(Message, Generic[_R]):
    """A message the reader answers with ``RESPONSE`` (or ERROR_MESSAGE), same message id."""

    __slots__ = ()
    RESPONSE: ClassVar[type[Response]]


@dataclass(frozen=True, slots=True)
class _Empty(Message):
    def encode_body(self, writer: Writer) -> None:
        pass

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls()


# --- Responses with nothing but a status ---


@message_class
@dataclass(frozen=True, slots=True)
class SetReaderConfigResponse(Response):
    TYPE: ClassVar[int] = MessageType.SET_READER_CONFIG_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class CloseConnectionResponse(Response):
    TYPE: ClassVar[int] = MessageType.CLOSE_CONNECTION_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class AddROSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.ADD_ROSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class DeleteROSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.DELETE_ROSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class StartROSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.START_ROSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class StopROSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.STOP_ROSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class EnableROSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.ENABLE_ROSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class DisableROSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.DISABLE_ROSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class AddAccessSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.ADD_ACCESSSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class DeleteAccessSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.DELETE_ACCESSSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class EnableAccessSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.ENABLE_ACCESSSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class DisableAccessSpecResponse(Response):
    TYPE: ClassVar[int] = MessageType.DISABLE_ACCESSSPEC_RESPONSE


@message_class
@dataclass(frozen=True, slots=True)
class ErrorMessage(Response):
    """ERROR_MESSAGE: the reader could not take a message at all (unknown type, bad version,
    not parseable); its id is the offending message's."""

    TYPE: ClassVar[int] = MessageType.ERROR_MESSAGE


# --- Capabilities and configuration ---


@message_class
@dataclass(frozen=True, slots=True)
class GetReaderCapabilitiesResponse(Response):
    TYPE: ClassVar[int] = MessageType.GET_READER_CAPABILITIES_RESPONSE
    general_device_capabilities: GeneralDeviceCapabilities | None = None
    llrp_capabilities: LlrpCapabilities | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.status)
        writer.parameter(self.general_device_capabilities)
        writer.parameter(self.llrp_capabilities)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.one(LlrpStatus),
            reader.optional(GeneralDeviceCapabilities),
            reader.optional(LlrpCapabilities),
        )


@message_class
@dataclass(frozen=True, slots=True)
class GetReaderCapabilities(Request[GetReaderCapabilitiesResponse]):
    """``requested_data``: 0 all, 1 general device, 2 LLRP, 3 regulatory, 4 air protocol."""

    TYPE: ClassVar[int] = MessageType.GET_READER_CAPABILITIES
    RESPONSE: ClassVar[type[Response]] = GetReaderCapabilitiesResponse
    requested_data: int = 0

    def encode_body(self, writer: Writer) -> None:
        writer.u8("requested_data", self.requested_data)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u8("RequestedData"))


@message_class
@dataclass(frozen=True, slots=True)
class GetReaderConfigResponse(Response):
    TYPE: ClassVar[int] = MessageType.GET_READER_CONFIG_RESPONSE
    identification: Identification | None = None
    antenna_properties: tuple[AntennaProperties, ...] = ()
    antenna_configurations: tuple[AntennaConfiguration, ...] = ()
    reader_event_notification_spec: ReaderEventNotificationSpec | None = None
    ro_report_spec: ROReportSpec | None = None
    access_report_spec: AccessReportSpec | None = None
    llrp_configuration_state_value: LlrpConfigurationStateValue | None = None
    keepalive_spec: KeepaliveSpec | None = None
    gpi_port_current_states: tuple[GpiPortCurrentState, ...] = ()
    gpo_write_data: tuple[GpoWriteData, ...] = ()
    events_and_reports: EventsAndReports | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.status)
        writer.parameter(self.identification)
        writer.parameters(self.antenna_properties)
        writer.parameters(self.antenna_configurations)
        writer.parameter(self.reader_event_notification_spec)
        writer.parameter(self.ro_report_spec)
        writer.parameter(self.access_report_spec)
        writer.parameter(self.llrp_configuration_state_value)
        writer.parameter(self.keepalive_spec)
        writer.parameters(self.gpi_port_current_states)
        writer.parameters(self.gpo_write_data)
        writer.parameter(self.events_and_reports)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.one(LlrpStatus),
            reader.optional(Identification),
            reader.many(AntennaProperties),
            reader.many(AntennaConfiguration),
            reader.optional(ReaderEventNotificationSpec),
            reader.optional(ROReportSpec),
            reader.optional(AccessReportSpec),
            reader.optional(LlrpConfigurationStateValue),
            reader.optional(KeepaliveSpec),
            reader.many(GpiPortCurrentState),
            reader.many(GpoWriteData),
            reader.optional(EventsAndReports),
        )


@message_class
@dataclass(frozen=True, slots=True)
class GetReaderConfig(Request[GetReaderConfigResponse]):
    """``requested_data``: 0 all, 9 GPI port states, 10 GPO data, ... (0 ports/antennas = all)."""

    TYPE: ClassVar[int] = MessageType.GET_READER_CONFIG
    RESPONSE: ClassVar[type[Response]] = GetReaderConfigResponse
    antenna_id: int = 0
    requested_data: int = 0
    gpi_port_num: int = 0
    gpo_port_num: int = 0

    def encode_body(self, writer: Writer) -> None:
        writer.u16("antenna_id", self.antenna_id)
        writer.u8("requested_data", self.requested_data)
        writer.u16("gpi_port_num", self.gpi_port_num)
        writer.u16("gpo_port_num", self.gpo_port_num)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            reader.u16("AntennaID"),
            reader.u8("RequestedData"),
            reader.u16("GPIPortNum"),
            reader.u16("GPOPortNum"),
        )


@message_class
@dataclass(frozen=True, slots=True)
class SetReaderConfig(Request[SetReaderConfigResponse]):
    TYPE: ClassVar[int] = MessageType.SET_READER_CONFIG
    RESPONSE: ClassVar[type[Response]] = SetReaderConfigResponse
    reset_to_factory_default: bool = False
    reader_event_notification_spec: ReaderEventNotificationSpec | None = None
    antenna_properties: tuple[AntennaProperties, ...] = ()
    antenna_configurations: tuple[AntennaConfiguration, ...] = ()
    ro_report_spec: ROReportSpec | None = None
    access_report_spec: AccessReportSpec | None = None
    keepalive_spec: KeepaliveSpec | None = None
    gpo_write_data: tuple[GpoWriteData, ...] = ()
    gpi_port_current_states: tuple[GpiPortCurrentState, ...] = ()
    events_and_reports: EventsAndReports | None = None

    def encode_body(self, writer: Writer) -> None:
        writer.flags8(self.reset_to_factory_default)
        writer.parameter(self.reader_event_notification_spec)
        writer.parameters(self.antenna_properties)
        writer.parameters(self.antenna_configurations)
        writer.parameter(self.ro_report_spec)
        writer.parameter(self.access_report_spec)
        writer.parameter(self.keepalive_spec)
        writer.parameters(self.gpo_write_data)
        writer.parameters(self.gpi_port_current_states)
        writer.parameter(self.events_and_reports)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(
            bool(reader.flags8("ResetToFactoryDefault") & 0x80),
            reader.optional(ReaderEventNotificationSpec),
            reader.many(AntennaProperties),
            reader.many(AntennaConfiguration),
            reader.optional(ROReportSpec),
            reader.optional(AccessReportSpec),
            reader.optional(KeepaliveSpec),
            reader.many(GpoWriteData),
            reader.many(GpiPortCurrentState),
            reader.optional(EventsAndReports),
        )


@message_class
@dataclass(frozen=True, slots=True)
class CloseConnection(_Empty, Request[CloseConnectionResponse]):
    TYPE: ClassVar[int] = MessageType.CLOSE_CONNECTION
    RESPONSE: ClassVar[type[Response]] = CloseConnectionResponse


# --- ROSpecs ---


@message_class
@dataclass(frozen=True, slots=True)
class AddROSpec(Request[AddROSpecResponse]):
    TYPE: ClassVar[int] = MessageType.ADD_ROSPEC
    RESPONSE: ClassVar[type[Response]] = AddROSpecResponse
    rospec: ROSpec

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.rospec)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(ROSpec))


@dataclass(frozen=True, slots=True)
class _ROSpecIdRequest(Message):
    """A request naming one ROSpec by id (0 = all of them where the message allows it)."""

    rospec_id: int

    def encode_body(self, writer: Writer) -> None:
        writer.u32("rospec_id", self.rospec_id)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u32("ROSpecID"))


@message_class
@dataclass(frozen=True, slots=True)
class DeleteROSpec(_ROSpecIdRequest, Request[DeleteROSpecResponse]):
    TYPE: ClassVar[int] = MessageType.DELETE_ROSPEC
    RESPONSE: ClassVar[type[Response]] = DeleteROSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class StartROSpec(_ROSpecIdRequest, Request[StartROSpecResponse]):
    TYPE: ClassVar[int] = MessageType.START_ROSPEC
    RESPONSE: ClassVar[type[Response]] = StartROSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class StopROSpec(_ROSpecIdRequest, Request[StopROSpecResponse]):
    TYPE: ClassVar[int] = MessageType.STOP_ROSPEC
    RESPONSE: ClassVar[type[Response]] = StopROSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class EnableROSpec(_ROSpecIdRequest, Request[EnableROSpecResponse]):
    TYPE: ClassVar[int] = MessageType.ENABLE_ROSPEC
    RESPONSE: ClassVar[type[Response]] = EnableROSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class DisableROSpec(_ROSpecIdRequest, Request[DisableROSpecResponse]):
    TYPE: ClassVar[int] = MessageType.DISABLE_ROSPEC
    RESPONSE: ClassVar[type[Response]] = DisableROSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class GetROSpecsResponse(Response):
    TYPE: ClassVar[int] = MessageType.GET_ROSPECS_RESPONSE
    rospecs: tuple[ROSpec, ...] = ()

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.status)
        writer.parameters(self.rospecs)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(LlrpStatus), reader.many(ROSpec))


@message_class
@dataclass(frozen=True, slots=True)
class GetROSpecs(_Empty, Request[GetROSpecsResponse]):
    TYPE: ClassVar[int] = MessageType.GET_ROSPECS
    RESPONSE: ClassVar[type[Response]] = GetROSpecsResponse


# --- AccessSpecs ---


@message_class
@dataclass(frozen=True, slots=True)
class AddAccessSpec(Request[AddAccessSpecResponse]):
    TYPE: ClassVar[int] = MessageType.ADD_ACCESSSPEC
    RESPONSE: ClassVar[type[Response]] = AddAccessSpecResponse
    access_spec: AccessSpec

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.access_spec)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(AccessSpec))


@dataclass(frozen=True, slots=True)
class _AccessSpecIdRequest(Message):
    """A request naming one AccessSpec by id (0 = all of them where the message allows it)."""

    access_spec_id: int

    def encode_body(self, writer: Writer) -> None:
        writer.u32("access_spec_id", self.access_spec_id)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.u32("AccessSpecID"))


@message_class
@dataclass(frozen=True, slots=True)
class DeleteAccessSpec(_AccessSpecIdRequest, Request[DeleteAccessSpecResponse]):
    TYPE: ClassVar[int] = MessageType.DELETE_ACCESSSPEC
    RESPONSE: ClassVar[type[Response]] = DeleteAccessSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class EnableAccessSpec(_AccessSpecIdRequest, Request[EnableAccessSpecResponse]):
    TYPE: ClassVar[int] = MessageType.ENABLE_ACCESSSPEC
    RESPONSE: ClassVar[type[Response]] = EnableAccessSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class DisableAccessSpec(_AccessSpecIdRequest, Request[DisableAccessSpecResponse]):
    TYPE: ClassVar[int] = MessageType.DISABLE_ACCESSSPEC
    RESPONSE: ClassVar[type[Response]] = DisableAccessSpecResponse


@message_class
@dataclass(frozen=True, slots=True)
class GetAccessSpecsResponse(Response):
    TYPE: ClassVar[int] = MessageType.GET_ACCESSSPECS_RESPONSE
    access_specs: tuple[AccessSpec, ...] = ()

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.status)
        writer.parameters(self.access_specs)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(LlrpStatus), reader.many(AccessSpec))


@message_class
@dataclass(frozen=True, slots=True)
class GetAccessSpecs(_Empty, Request[GetAccessSpecsResponse]):
    TYPE: ClassVar[int] = MessageType.GET_ACCESSSPECS
    RESPONSE: ClassVar[type[Response]] = GetAccessSpecsResponse


# --- Reports, events and the connection ---


@message_class
@dataclass(frozen=True, slots=True)
class ROAccessReport(Message):
    """RO_ACCESS_REPORT: tag reads (RF survey data is not modelled and is skipped)."""

    TYPE: ClassVar[int] = MessageType.RO_ACCESS_REPORT
    tag_report_data: tuple[TagReportData, ...] = ()

    def encode_body(self, writer: Writer) -> None:
        writer.parameters(self.tag_report_data)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.many(TagReportData))


@message_class
@dataclass(frozen=True, slots=True)
class ReaderEventNotification(Message):
    TYPE: ClassVar[int] = MessageType.READER_EVENT_NOTIFICATION
    reader_event_notification_data: ReaderEventNotificationData

    def encode_body(self, writer: Writer) -> None:
        writer.parameter(self.reader_event_notification_data)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        return cls(reader.one(ReaderEventNotificationData))


@message_class
@dataclass(frozen=True, slots=True)
class Keepalive(_Empty):
    """KEEPALIVE from the reader; the client answers KEEPALIVE_ACK with the same message id."""

    TYPE: ClassVar[int] = MessageType.KEEPALIVE


@message_class
@dataclass(frozen=True, slots=True)
class KeepaliveAck(_Empty):
    TYPE: ClassVar[int] = MessageType.KEEPALIVE_ACK


@message_class
@dataclass(frozen=True, slots=True)
class EnableEventsAndReports(_Empty):
    """Ask the reader to send events and reports it held while no client was connected."""

    TYPE: ClassVar[int] = MessageType.ENABLE_EVENTS_AND_REPORTS


@message_class
@dataclass(frozen=True, slots=True)
class GetReport(_Empty):
    """Ask the reader to send the tag reports it has accumulated now."""

    TYPE: ClassVar[int] = MessageType.GET_REPORT


@message_class
@dataclass(frozen=True, slots=True)
class CustomMessage(Message):
    """A vendor's CUSTOM_MESSAGE, kept as bytes."""

    TYPE: ClassVar[int] = MessageType.CUSTOM_MESSAGE
    vendor_identifier: int
    message_subtype: int
    data: bytes = b""

    def encode_body(self, writer: Writer) -> None:
        writer.u32("vendor_identifier", self.vendor_identifier)
        writer.u8("message_subtype", self.message_subtype)
        writer.raw(self.data)

    @classmethod
    def decode_body(cls, reader: BodyReader) -> Self:
        vendor = reader.u32("VendorIdentifier")
        subtype = reader.u8("MessageSubtype")
        return cls(vendor, subtype, reader.rest())
