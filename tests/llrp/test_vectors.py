"""Every message a lane uses, byte for byte as the LLRP 1.0.1 specification lays it out.

Each vector is assembled by hand, one field per line, from the specification's layouts: the
message header (3 reserved bits, version 1, 10-bit type, u32 length, u32 id), TLV parameters
(6 reserved bits, 10-bit type, u16 length including the header) and TV parameters (bit 7 set,
7-bit type, fixed-size value). Each test checks the codec produces exactly those bytes and
decodes them back to the same message.
"""

from __future__ import annotations

import pytest

from llrp.codec import decode_message, encode_message
from llrp.messages import (
    AddAccessSpec,
    AddROSpec,
    AddROSpecResponse,
    CloseConnection,
    CloseConnectionResponse,
    DeleteAccessSpec,
    DeleteROSpec,
    DeleteROSpecResponse,
    DisableROSpec,
    DisableROSpecResponse,
    EnableAccessSpec,
    EnableEventsAndReports,
    EnableROSpec,
    EnableROSpecResponse,
    ErrorMessage,
    GetReaderCapabilities,
    GetReaderCapabilitiesResponse,
    GetReaderConfig,
    GetReaderConfigResponse,
    Keepalive,
    KeepaliveAck,
    Message,
    ReaderEventNotification,
    ROAccessReport,
    SetReaderConfig,
    SetReaderConfigResponse,
    StartROSpec,
    StartROSpecResponse,
    StopROSpec,
    StopROSpecResponse,
)
from llrp.parameters import (
    ConnectionAttemptEvent,
    EventNotificationState,
    EventType,
    FieldError,
    GeneralDeviceCapabilities,
    GpiEvent,
    GpioCapabilities,
    GpiPortCurrentState,
    GpiState,
    GpoWriteData,
    KeepaliveSpec,
    KeepaliveTriggerType,
    LlrpStatus,
    ParameterError,
    PerAntennaAirProtocol,
    ReaderEventNotificationData,
    ReaderEventNotificationSpec,
    ReaderExceptionEvent,
    ReceiveSensitivityTableEntry,
    ROSpecEvent,
    ROSpecEventType,
)
from llrp.specs import C1G2ReadOpSpecResult, TagReportData, lane_rospec, tid_access_spec
from tests.llrp.support import hexbytes

EPC = bytes.fromhex("E280689400005003A4B1C201")
ID = "00 00 00 2a"  # message id 42 in every vector
OK_STATUS = "01 1f 00 08 00 00 00 00"  # LLRPStatus (287), length 8, M_Success, description ""


def check(message: Message, wire: bytes) -> None:
    assert encode_message(message, 42) == wire
    assert decode_message(wire) == (42, message)


def test_keepalive_is_a_bare_header_with_type_62() -> None:
    check(
        Keepalive(),
        hexbytes(
            "04 3e",  # reserved 000, version 001, type 62 KEEPALIVE
            "00 00 00 0a",  # length 10: the header alone
            ID,
        ),
    )


def test_keepalive_ack_enable_events_and_close_connection_have_no_body() -> None:
    check(KeepaliveAck(), hexbytes("04 48", "00 00 00 0a", ID))  # type 72
    check(EnableEventsAndReports(), hexbytes("04 40", "00 00 00 0a", ID))  # type 64
    check(CloseConnection(), hexbytes("04 0e", "00 00 00 0a", ID))  # type 14


def test_get_reader_capabilities_carries_requested_data() -> None:
    check(
        GetReaderCapabilities(0),
        hexbytes(
            "04 01",  # type 1 GET_READER_CAPABILITIES
            "00 00 00 0b",  # length 11
            ID,
            "00",  # RequestedData 0: all
        ),
    )


def test_get_reader_capabilities_response_with_general_device_and_gpio_capabilities() -> None:
    capabilities = GeneralDeviceCapabilities(
        max_number_of_antenna_supported=4,
        can_set_antenna_properties=False,
        has_utc_clock_capability=True,
        device_manufacturer_name=25882,
        model_name=1,
        reader_firmware_version="7.1",
        receive_sensitivity_table=(ReceiveSensitivityTableEntry(1, -80),),
        gpio_capabilities=GpioCapabilities(2, 4),
        per_antenna_air_protocols=(PerAntennaAirProtocol(1, (1,)),),
    )
    check(
        GetReaderCapabilitiesResponse(LlrpStatus(), capabilities),
        hexbytes(
            "04 0b",  # type 11 GET_READER_CAPABILITIES_RESPONSE
            "00 00 00 40",  # length 64
            ID,
            OK_STATUS,
            "00 89 00 2e",  # GeneralDeviceCapabilities (137), length 46
            "00 04",  # MaxNumberOfAntennaSupported 4
            "40 00",  # CanSetAntennaProperties 0, HasUTCClockCapability 1, 14 reserved
            "00 00 65 1a",  # DeviceManufacturerName 25882
            "00 00 00 01",  # ModelName 1
            "00 03 37 2e 31",  # ReaderFirmwareVersion: utf8v "7.1"
            "00 8b 00 08 00 01 ff b0",  # ReceiveSensitivityTableEntry (139): index 1, -80
            "00 8d 00 08 00 02 00 04",  # GPIOCapabilities (141): 2 GPIs, 4 GPOs
            "00 8c 00 09 00 01 00 01 01",  # PerAntennaAirProtocol (140): antenna 1, [C1G2]
        ),
    )


def test_set_reader_config_with_events_keepalive_gpo_and_gpi() -> None:
    message = SetReaderConfig(
        reset_to_factory_default=True,
        reader_event_notification_spec=ReaderEventNotificationSpec(
            (
                EventNotificationState(EventType.GPI, True),
                EventNotificationState(EventType.ROSPEC, True),
            )
        ),
        keepalive_spec=KeepaliveSpec(KeepaliveTriggerType.PERIODIC, 5000),
        gpo_write_data=(GpoWriteData(2, True),),
        gpi_port_current_states=(GpiPortCurrentState(1, True, GpiState.UNKNOWN),),
    )
    check(
        message,
        hexbytes(
            "04 03",  # type 3 SET_READER_CONFIG
            "00 00 00 35",  # length 53
            ID,
            "80",  # ResetToFactoryDefault 1, 7 reserved
            "00 f4 00 12",  # ReaderEventNotificationSpec (244), length 18
            "00 f5 00 07 00 01 80",  # EventNotificationState (245): GPI event (1), on
            "00 f5 00 07 00 02 80",  # EventNotificationState: ROSpec event (2), on
            "00 dc 00 09 01 00 00 13 88",  # KeepaliveSpec (220): periodic, 5000 ms
            "00 db 00 07 00 02 80",  # GPOWriteData (219): port 2, high
            "00 e1 00 08 00 01 80 02",  # GPIPortCurrentState (225): port 1, enabled, Unknown
        ),
    )


def test_set_reader_config_response_carries_a_nested_parameter_and_field_error() -> None:
    status = LlrpStatus(
        status_code=100,
        error_description="bad port",
        parameter_error=ParameterError(219, 201, FieldError(0, 301)),
    )
    check(
        SetReaderConfigResponse(status),
        hexbytes(
            "04 0d",  # type 13 SET_READER_CONFIG_RESPONSE
            "00 00 00 2a",  # length 42
            ID,
            "01 1f 00 20",  # LLRPStatus (287), length 32
            "00 64",  # StatusCode 100 M_ParameterError
            "00 08 62 61 64 20 70 6f 72 74",  # ErrorDescription: utf8v "bad port"
            "01 21 00 10",  # ParameterError (289), length 16
            "00 db",  # ParameterType 219 GPOWriteData
            "00 c9",  # ErrorCode 201 P_FieldError
            "01 20 00 08 00 00 01 2d",  # FieldError (288): field 0, 301 A_OutOfRange
        ),
    )


def test_get_reader_config_asks_for_the_gpi_states() -> None:
    check(
        GetReaderConfig(antenna_id=0, requested_data=9, gpi_port_num=0, gpo_port_num=0),
        hexbytes(
            "04 02",  # type 2 GET_READER_CONFIG
            "00 00 00 11",  # length 17
            ID,
            "00 00",  # AntennaID 0: all
            "09",  # RequestedData 9: GPIPortCurrentState
            "00 00",  # GPIPortNum 0: all
            "00 00",  # GPOPortNum 0: all
        ),
    )


def test_get_reader_config_response_reports_each_gpi_state() -> None:
    response = GetReaderConfigResponse(
        LlrpStatus(),
        gpi_port_current_states=(
            GpiPortCurrentState(1, True, GpiState.HIGH),
            GpiPortCurrentState(2, False, GpiState.UNKNOWN),
        ),
    )
    check(
        response,
        hexbytes(
            "04 0c",  # type 12 GET_READER_CONFIG_RESPONSE
            "00 00 00 22",  # length 34
            ID,
            OK_STATUS,
            "00 e1 00 08 00 01 80 01",  # GPIPortCurrentState: port 1, enabled, High
            "00 e1 00 08 00 02 00 02",  # GPIPortCurrentState: port 2, disabled, Unknown
        ),
    )


def test_add_rospec_for_a_lane() -> None:
    check(
        AddROSpec(lane_rospec(1, [1, 2])),
        hexbytes(
            "04 14",  # type 20 ADD_ROSPEC
            "00 00 00 4d",  # length 77
            ID,
            "00 b1 00 43",  # ROSpec (177), length 67
            "00 00 00 01",  # ROSpecID 1
            "00",  # Priority 0
            "00",  # CurrentState 0 Disabled
            "00 b2 00 12",  # ROBoundarySpec (178), length 18
            "00 b3 00 05 00",  # ROSpecStartTrigger (179): Null (START_ROSPEC starts it)
            "00 b6 00 09 00 00 00 00 00",  # ROSpecStopTrigger (182): Null, duration 0
            "00 b7 00 1a",  # AISpec (183), length 26
            "00 02 00 01 00 02",  # AntennaIDs: u16v of 2: antennas 1 and 2
            "00 b8 00 09 00 00 00 00 00",  # AISpecStopTrigger (184): Null, duration 0
            "00 ba 00 07 00 01 01",  # InventoryParameterSpec (186): id 1, protocol 1 C1G2
            "00 ed 00 0d",  # ROReportSpec (237), length 13
            "01",  # ROReportTrigger 1: upon N tags or end of AISpec
            "00 01",  # N = 1: a report per tag read
            "00 ee 00 06",  # TagReportContentSelector (238), length 6
            "17 80",  # 0001 0111 1000 0000: antenna id, peak RSSI, first/last seen, seen count
        ),
    )


@pytest.mark.parametrize(
    ("message", "type_hex"),
    [
        (EnableROSpec(1), "18"),  # 24
        (StartROSpec(1), "16"),  # 22
        (StopROSpec(1), "17"),  # 23
        (DisableROSpec(1), "19"),  # 25
        (DeleteROSpec(1), "15"),  # 21
        (EnableAccessSpec(1), "2a"),  # 42
        (DeleteAccessSpec(1), "29"),  # 41
    ],
)
def test_spec_id_requests_carry_one_u32(message: Message, type_hex: str) -> None:
    check(message, hexbytes("04", type_hex, "00 00 00 0e", ID, "00 00 00 01"))  # length 14, id 1


@pytest.mark.parametrize(
    ("message", "type_hex"),
    [
        (AddROSpecResponse(), "1e"),  # 30
        (DeleteROSpecResponse(), "1f"),  # 31
        (StartROSpecResponse(), "20"),  # 32
        (StopROSpecResponse(), "21"),  # 33
        (EnableROSpecResponse(), "22"),  # 34
        (DisableROSpecResponse(), "23"),  # 35
        (CloseConnectionResponse(), "04"),  # 4
    ],
)
def test_responses_carry_an_llrp_status(message: Message, type_hex: str) -> None:
    check(message, hexbytes("04", type_hex, "00 00 00 12", ID, OK_STATUS))  # length 18


def test_error_message_is_type_100_with_a_status() -> None:
    check(
        ErrorMessage(LlrpStatus(109)),
        hexbytes("04 64", "00 00 00 12", ID, "01 1f 00 08 00 6d 00 00"),  # M_UnsupportedMessage
    )


def test_add_accessspec_reading_two_tid_words_of_any_tag() -> None:
    check(
        AddAccessSpec(tid_access_spec(1, word_count=2)),
        hexbytes(
            "04 28",  # type 40 ADD_ACCESSSPEC
            "00 00 00 48",  # length 72
            ID,
            "00 cf 00 3e",  # AccessSpec (207), length 62
            "00 00 00 01",  # AccessSpecID 1
            "00 00",  # AntennaID 0: any
            "01",  # ProtocolID 1: C1G2
            "00",  # CurrentState 0 Disabled, 7 reserved
            "00 00 00 00",  # ROSpecID 0: any
            "00 d0 00 07 00 00 00",  # AccessSpecStopTrigger (208): Null, count 0
            "00 d1 00 22",  # AccessCommand (209), length 34
            "01 52 00 0f",  # C1G2TagSpec (338), length 15
            "01 53 00 0b",  # C1G2TargetTag (339), length 11
            "60",  # MB 01 (EPC), Match 1, 5 reserved
            "00 20",  # Pointer 32: the EPC starts after CRC and PC
            "00 00",  # TagMask: 0 bits (matches any tag)
            "00 00",  # TagData: 0 bits
            "01 55 00 0f",  # C1G2Read (341), length 15
            "00 01",  # OpSpecID 1
            "00 00 00 00",  # AccessPassword 0
            "80",  # MB 10 (TID), 6 reserved
            "00 00",  # WordPointer 0
            "00 02",  # WordCount 2
            "00 ef 00 05 00",  # AccessReportSpec (239): with the RO report
        ),
    )


def test_ro_access_report_with_epc96_timestamps_and_a_tid_read() -> None:
    report = ROAccessReport(
        (
            TagReportData(
                epc=EPC,
                antenna_id=2,
                peak_rssi=-55,
                first_seen_timestamp_utc=0x0005F12E5A3C11C0,
                last_seen_timestamp_utc=0x0005F12E5A3C11C0,
                tag_seen_count=1,
                access_spec_id=1,
                read_results=(C1G2ReadOpSpecResult(0, 1, bytes.fromhex("E2806894")),),
            ),
        )
    )
    check(
        report,
        hexbytes(
            "04 3d",  # type 61 RO_ACCESS_REPORT
            "00 00 00 47",  # length 71
            ID,
            "00 f0 00 3d",  # TagReportData (240), length 61
            "8d e2 80 68 94 00 00 50 03 a4 b1 c2 01",  # EPC-96 (TV 13): 12 bytes
            "81 00 02",  # AntennaID (TV 1): 2
            "86 c9",  # PeakRSSI (TV 6): -55 dBm, s8
            "82 00 05 f1 2e 5a 3c 11 c0",  # FirstSeenTimestampUTC (TV 2): microseconds
            "84 00 05 f1 2e 5a 3c 11 c0",  # LastSeenTimestampUTC (TV 4)
            "88 00 01",  # TagSeenCount (TV 8): 1
            "90 00 00 00 01",  # AccessSpecID (TV 16): 1
            "01 5d 00 0d",  # C1G2ReadOpSpecResult (349), length 13
            "00",  # Result 0 Success
            "00 01",  # OpSpecID 1
            "00 02 e2 80 68 94",  # ReadData: u16v of 2 words
        ),
    )


def test_ro_access_report_with_epcdata_and_uptime() -> None:
    report = ROAccessReport(
        (
            TagReportData(
                epc=bytes.fromhex("300833B2DDD90140"),
                rospec_id=7,
                antenna_id=1,
                first_seen_timestamp_uptime=1_000_000,
            ),
        )
    )
    check(
        report,
        hexbytes(
            "04 3d",  # type 61 RO_ACCESS_REPORT
            "00 00 00 2d",  # length 45
            ID,
            "00 f0 00 23",  # TagReportData (240), length 35
            "00 f1 00 0e",  # EPCData (241), length 14
            "00 40 30 08 33 b2 dd d9 01 40",  # EPC: u1v of 64 bits
            "89 00 00 00 07",  # ROSpecID (TV 9): 7
            "81 00 01",  # AntennaID (TV 1): 1
            "83 00 00 00 00 00 0f 42 40",  # FirstSeenTimestampUptime (TV 3): 1 s
        ),
    )


def test_reader_event_notification_of_a_connection_attempt() -> None:
    notification = ReaderEventNotification(
        ReaderEventNotificationData(
            utc_timestamp=0x00063E90AAB9CCE0, connection_attempt_event=ConnectionAttemptEvent(0)
        )
    )
    check(
        notification,
        hexbytes(
            "04 3f",  # type 63 READER_EVENT_NOTIFICATION
            "00 00 00 20",  # length 32
            ID,
            "00 f6 00 16",  # ReaderEventNotificationData (246), length 22
            "00 80 00 0c 00 06 3e 90 aa b9 cc e0",  # UTCTimestamp (128): microseconds
            "01 00 00 06 00 00",  # ConnectionAttemptEvent (256): Success
        ),
    )


def test_reader_event_notification_of_a_gpi_edge_on_uptime() -> None:
    notification = ReaderEventNotification(
        ReaderEventNotificationData(uptime=5_000_000, gpi_event=GpiEvent(1, True))
    )
    check(
        notification,
        hexbytes(
            "04 3f",  # type 63 READER_EVENT_NOTIFICATION
            "00 00 00 21",  # length 33
            ID,
            "00 f6 00 17",  # ReaderEventNotificationData (246), length 23
            "00 81 00 0c 00 00 00 00 00 4c 4b 40",  # Uptime (129): 5 s
            "00 f8 00 07 00 01 80",  # GPIEvent (248): port 1, went high
        ),
    )


def test_reader_event_notification_of_a_rospec_start_and_an_exception() -> None:
    notification = ReaderEventNotification(
        ReaderEventNotificationData(
            utc_timestamp=1,
            rospec_event=ROSpecEvent(ROSpecEventType.START, 1),
            reader_exception_event=ReaderExceptionEvent("loop", rospec_id=1),
        )
    )
    check(
        notification,
        hexbytes(
            "04 3f",  # type 63 READER_EVENT_NOTIFICATION
            "00 00 00 36",  # length 54
            ID,
            "00 f6 00 2c",  # ReaderEventNotificationData (246), length 44
            "00 80 00 0c 00 00 00 00 00 00 00 01",  # UTCTimestamp (128): 1 us
            "00 f9 00 0d 00 00 00 00 01 00 00 00 00",  # ROSpecEvent (249): start, 1, by 0
            "00 fc 00 0f",  # ReaderExceptionEvent (252), length 15
            "00 04 6c 6f 6f 70",  # Message: utf8v "loop"
            "89 00 00 00 01",  # ROSpecID (TV 9): 1
        ),
    )
