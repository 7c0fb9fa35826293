"""What an emulated LLRP reader knows and does, without sockets, threads or clocks.

:class:`ReaderModel` keeps the reader's configuration (event notifications, GPI/GPO ports,
keepalive, report spec, antennas), its ROSpecs and AccessSpecs, and the tag reports waiting
for their report trigger. :meth:`ReaderModel.handle` answers one client message the way a
reader does (refusing what it cannot do with an LLRPStatus naming the parameter and field);
:meth:`ReaderModel.tag_read`, :meth:`ReaderModel.gpi_change` and
:meth:`ReaderModel.reader_exception` turn what happens in the lane into reports and events, or
say why nothing is sent. The emulator (``emulator.py``) owns time and the connection.

Simplifications, each refused clearly rather than half-done: one active ROSpec at a time (no
priorities or preemption); start triggers Null/Immediate; stop triggers Null/Duration; AISpec
stop trigger Null; AccessSpecs read TID memory only and report with the RO report; no report
buffering across connections (EventsAndReports hold is refused).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from llrp.codec import ParameterType, StatusCode
from llrp.messages import (
    AddAccessSpec,
    AddAccessSpecResponse,
    AddROSpec,
    AddROSpecResponse,
    CloseConnection,
    CloseConnectionResponse,
    DeleteAccessSpec,
    DeleteAccessSpecResponse,
    DeleteROSpec,
    DeleteROSpecResponse,
    DisableAccessSpec,
    DisableAccessSpecResponse,
    DisableROSpec,
    DisableROSpecResponse,
    EnableAccessSpec,
    EnableAccessSpecResponse,
    EnableEventsAndReports,
    EnableROSpec,
    EnableROSpecResponse,
    ErrorMessage,
    GetAccessSpecs,
    GetAccessSpecsResponse,
    GetReaderCapabilities,
    GetReaderCapabilitiesResponse,
    GetReaderConfig,
    GetReaderConfigResponse,
    GetReport,
    GetROSpecs,
    GetROSpecsResponse,
    KeepaliveAck,
    Message,
    ReaderEventNotification,
    Response,
    ROAccessReport,
    SetReaderConfig,
    SetReaderConfigResponse,
    StartROSpec,
    StartROSpecResponse,
    StopROSpec,
    StopROSpecResponse,
)
from llrp.parameters import (
    AirProtocol,
    AntennaConfiguration,
    AntennaProperties,
    ConnectionAttemptEvent,
    ConnectionCloseEvent,
    EventNotificationState,
    EventsAndReports,
    EventType,
    FieldError,
    GeneralDeviceCapabilities,
    GpiEvent,
    GpioCapabilities,
    GpiPortCurrentState,
    GpiState,
    GpoWriteData,
    Identification,
    KeepaliveSpec,
    KeepaliveTriggerType,
    LlrpCapabilities,
    LlrpConfigurationStateValue,
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
from llrp.specs import (
    AccessReportSpec,
    AccessReportTriggerType,
    AccessSpec,
    AccessSpecStopTriggerType,
    AISpecStopTriggerType,
    C1G2ReadOpSpecResult,
    C1G2ReadResult,
    MemoryBank,
    ROReportSpec,
    ROReportTriggerType,
    ROSpec,
    ROSpecStartTriggerType,
    ROSpecState,
    ROSpecStopTriggerType,
    TagReportData,
    epc_memory,
    gen2_crc16,
)


class TimestampClock(enum.StrEnum):
    """Which clock a reader stamps tag reads with (FirstSeen/LastSeen)."""

    UTC = "utc"
    UPTIME = "uptime"
    BOTH = "both"


class LossReason(enum.StrEnum):
    """Why something that happened in the lane never reached the client."""

    NO_CLIENT = "no_client"
    NOT_READING = "not_reading"
    """No ROSpec was active."""
    ANTENNA_NOT_INVENTORIED = "antenna_not_inventoried"
    EVENTS_DISABLED = "events_disabled"
    """That kind of reader event notification was off."""
    GPI_PORT_DISABLED = "gpi_port_disabled"
    REBOOTING = "rebooting"
    OVERFLOW = "overflow"
    """The host read too slowly and the reader's send queue was full."""
    DISCONNECTED = "disconnected"
    """Waiting in a report batch or the send queue when the connection ended."""


@dataclass(frozen=True, slots=True)
class ReaderIdentity:
    """What the emulated reader is: ports, numbers, firmware and clock."""

    antennas: int = 4
    gpis: int = 2
    gpos: int = 4
    manufacturer: int = 0
    """IANA private enterprise number; 0 says "no vendor": an emulator."""
    model: int = 0
    firmware_version: str = "llrp-emulator 1.0"
    reader_id: bytes = bytes.fromhex("020000000001")
    """MAC address (locally administered)."""
    timestamps: TimestampClock = TimestampClock.UTC
    max_rospecs: int = 8
    max_access_specs: int = 8

    def __post_init__(self) -> None:
        for name, value, low in (("antennas", self.antennas, 1), ("gpis", self.gpis, 0)):
            if not low <= value <= 0xFFFF:
                raise ValueError(f"{name} must be {low}..65535, got {value}")
        if not 0 <= self.gpos <= 0xFFFF:
            raise ValueError(f"gpos must be 0..65535, got {self.gpos}")


@dataclass(frozen=True, slots=True)
class ReaderTime:
    """The reader's two clocks at one instant, in microseconds."""

    uptime_us: int
    utc_us: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message the reader sends on its own; ``tokens`` are the caller's ids of the lane
    events a report carries. Reports may be dropped when the host is too slow."""

    message: Message
    tokens: tuple[int, ...] = ()

    @property
    def droppable(self) -> bool:
        return isinstance(self.message, ROAccessReport)


@dataclass(frozen=True, slots=True)
class Handled:
    """The answer to one client message: the response, what follows it, GPO writes made."""

    response: Response | None
    outgoing: tuple[Outgoing, ...] = ()
    gpo_writes: tuple[tuple[int, bool], ...] = ()
    close: bool = False


class _Refusal(Exception):
    def __init__(self, status: LlrpStatus):
        self.status = status
        super().__init__(status.describe())


def refusal(
    description: str,
    *,
    path: Sequence[int] = (),
    field_num: int | None = None,
    code: int = StatusCode.A_INVALID,
) -> _Refusal:
    """An error status the way LLRP nests it: a message field (no ``path``), or a field of a
    parameter inside parameters (``path`` from the outermost parameter type inwards)."""
    field_error = FieldError(field_num, code) if field_num is not None else None
    if not path:
        return _Refusal(LlrpStatus(StatusCode.M_FIELD_ERROR, description, field_error=field_error))
    inner_code = StatusCode.P_FIELD_ERROR if field_error is not None else code
    error = ParameterError(path[-1], inner_code, field_error)
    for parameter_type in reversed(path[:-1]):
        error = ParameterError(parameter_type, StatusCode.P_PARAMETER_ERROR, None, error)
    return _Refusal(LlrpStatus(StatusCode.M_PARAMETER_ERROR, description, parameter_error=error))


def _check_port(value: int, top: int, what: str, path: Sequence[int], field_num: int) -> None:
    if not 1 <= value <= top:
        raise refusal(
            f"no {what} {value} (this reader has {top})",
            path=path,
            field_num=field_num,
            code=StatusCode.A_OUT_OF_RANGE,
        )


def _is_member(kind: type[enum.IntEnum], value: int) -> bool:
    return any(member.value == value for member in kind)


@dataclass(slots=True)
class _ROSpecEntry:
    spec: ROSpec
    state: ROSpecState = ROSpecState.DISABLED
    started_uptime_us: int = 0


@dataclass(slots=True)
class _AccessEntry:
    spec: AccessSpec
    active: bool = False
    operations: int = 0


_FACTORY_REPORT_SPEC = ROReportSpec()
"""Report every tag read with antenna, peak RSSI, first/last seen and seen count."""


@dataclass(slots=True)
class _Config:
    events: set[int] = field(default_factory=set)
    gpi_enabled: dict[int, bool] = field(default_factory=dict)
    keepalive: KeepaliveSpec = field(default_factory=KeepaliveSpec)
    ro_report_spec: ROReportSpec = _FACTORY_REPORT_SPEC
    access_report_spec: AccessReportSpec = field(default_factory=AccessReportSpec)
    antenna_configurations: dict[int, AntennaConfiguration] = field(default_factory=dict)
    antenna_gain: dict[int, int] = field(default_factory=dict)


class ReaderModel:
    """The reader's state and protocol logic; see the module docstring."""

    def __init__(self, identity: ReaderIdentity):
        self.identity = identity
        self.refuse_config = False
        """Test control: answer every SET_READER_CONFIG with R_DeviceError."""
        self.gpi_high: dict[int, bool] = dict.fromkeys(range(1, identity.gpis + 1), False)
        """What each input physically reads; survives reboots (the loop does not reboot)."""
        self.gpo_high: dict[int, bool] = dict.fromkeys(range(1, identity.gpos + 1), False)
        self._config = _Config()
        self._config_version = 0
        self._rospecs: dict[int, _ROSpecEntry] = {}
        self._access_specs: dict[int, _AccessEntry] = {}
        self._batch: list[tuple[TagReportData, int]] = []

    # --- the lane ---

    @property
    def reading(self) -> bool:
        """A ROSpec is active: tags are being inventoried."""
        return self._active() is not None

    @property
    def keepalive_interval_ms(self) -> int | None:
        keepalive = self._config.keepalive
        if keepalive.keepalive_trigger_type != KeepaliveTriggerType.PERIODIC:
            return None
        return keepalive.periodic_trigger_value

    @property
    def batched(self) -> int:
        """Tag reports waiting for their report trigger."""
        return len(self._batch)

    def tag_read(
        self,
        token: int,
        epc: bytes,
        antenna: int,
        rssi_dbm: float,
        tid: bytes | None,
        at: ReaderTime,
    ) -> tuple[LossReason | None, list[Outgoing]]:
        """A tag was singulated on ``antenna``: batch its report, and send the batch when the
        report trigger says so. ``token`` comes back with the report that carries it."""
        active = self._active()
        if active is None:
            return LossReason.NOT_READING, []
        antennas = active.spec.antenna_ids
        if antenna > self.identity.antennas or (0 not in antennas and antenna not in antennas):
            return LossReason.ANTENNA_NOT_INVENTORIED, []
        spec = active.spec.ro_report_spec or self._config.ro_report_spec
        data = self._tag_report(active.spec, spec, epc, antenna, rssi_dbm, tid, at)
        self._batch.append((data, token))
        if spec.ro_report_trigger != ROReportTriggerType.NONE and 0 < spec.n <= len(self._batch):
            return None, self._flush()
        return None, []

    def gpi_change(
        self, port: int, high: bool, at: ReaderTime
    ) -> tuple[LossReason | None, list[Outgoing]]:
        """An input changed: a GPIEvent if the port and GPI notifications are enabled."""
        self.gpi_high[port] = high
        if not self._config.gpi_enabled.get(port, False):
            return LossReason.GPI_PORT_DISABLED, []
        if EventType.GPI not in self._config.events:
            return LossReason.EVENTS_DISABLED, []
        return None, [self._event(at, gpi_event=GpiEvent(port, high))]

    def reader_exception(
        self, text: str, at: ReaderTime
    ) -> tuple[LossReason | None, list[Outgoing]]:
        if EventType.READER_EXCEPTION not in self._config.events:
            return LossReason.EVENTS_DISABLED, []
        active = self._active()
        event = ReaderExceptionEvent(text, rospec_id=active.spec.rospec_id if active else None)
        return None, [self._event(at, reader_exception_event=event)]

    def tick(self, now: ReaderTime) -> list[Outgoing]:
        """Stop a ROSpec whose duration stop trigger has elapsed."""
        active = self._active()
        if active is None:
            return []
        stop = active.spec.ro_boundary_spec.rospec_stop_trigger
        if stop.rospec_stop_trigger_type != ROSpecStopTriggerType.DURATION:
            return []
        if now.uptime_us - active.started_uptime_us < stop.duration_trigger_value * 1000:
            return []
        return self._stop(active, now)

    def connection_ended(self) -> list[int]:
        """The client is gone: the batched reports are lost; returns their tokens."""
        tokens = [token for _, token in self._batch]
        self._batch.clear()
        return tokens

    def reboot(self) -> list[int]:
        """Power cycle: configuration and specs forgotten, outputs low; lost report tokens."""
        tokens = self.connection_ended()
        self._factory_reset()
        self.gpo_high = dict.fromkeys(self.gpo_high, False)
        return tokens

    # --- client messages ---

    def handle(self, message: Message, now: ReaderTime) -> Handled:
        """Answer one message from the client."""
        try:
            return self._handle(message, now)
        except _Refusal as refused:
            response_type = getattr(type(message), "RESPONSE", ErrorMessage)
            return Handled(response_type(refused.status))

    def _handle(self, message: Message, now: ReaderTime) -> Handled:
        match message:
            case GetReaderCapabilities():
                return Handled(self._capabilities(message.requested_data))
            case GetReaderConfig():
                return Handled(self._get_config(message))
            case SetReaderConfig():
                return self._set_config(message)
            case AddROSpec():
                self._add_rospec(message.rospec)
                return Handled(AddROSpecResponse())
            case EnableROSpec():
                return Handled(EnableROSpecResponse(), tuple(self._enable(message.rospec_id, now)))
            case StartROSpec():
                return Handled(
                    StartROSpecResponse(), tuple(self._start_by_id(message.rospec_id, now))
                )
            case StopROSpec():
                entry = self._rospec(message.rospec_id, allow_all=False)
                if entry.state != ROSpecState.ACTIVE:
                    raise refusal(f"ROSpec {entry.spec.rospec_id} is not active", field_num=0)
                return Handled(StopROSpecResponse(), tuple(self._stop(entry, now)))
            case DisableROSpec():
                out = self._for_rospecs(message.rospec_id, now, remove=False)
                return Handled(DisableROSpecResponse(), tuple(out))
            case DeleteROSpec():
                out = self._for_rospecs(message.rospec_id, now, remove=True)
                return Handled(DeleteROSpecResponse(), tuple(out))
            case GetROSpecs():
                specs = tuple(
                    replace(e.spec, current_state=e.state) for e in self._rospecs.values()
                )
                return Handled(GetROSpecsResponse(rospecs=specs))
            case AddAccessSpec():
                self._add_access_spec(message.access_spec)
                return Handled(AddAccessSpecResponse())
            case EnableAccessSpec():
                self._set_access_active(message.access_spec_id, True)
                return Handled(EnableAccessSpecResponse())
            case DisableAccessSpec():
                self._set_access_active(message.access_spec_id, False)
                return Handled(DisableAccessSpecResponse())
            case DeleteAccessSpec():
                for access in self._access_entries(message.access_spec_id):
                    del self._access_specs[access.spec.access_spec_id]
                return Handled(DeleteAccessSpecResponse())
            case GetAccessSpecs():
                access_specs = tuple(
                    replace(a.spec, current_state=a.active) for a in self._access_specs.values()
                )
                return Handled(GetAccessSpecsResponse(access_specs=access_specs))
            case GetReport():
                out = self._flush() or [Outgoing(ROAccessReport())]
                return Handled(None, tuple(out))
            case KeepaliveAck() | EnableEventsAndReports():
                return Handled(None)
            case CloseConnection():
                return Handled(CloseConnectionResponse(), close=True)
            case _:
                status = LlrpStatus(
                    StatusCode.M_UNSUPPORTED_MESSAGE,
                    f"{type(message).__name__} is not a message a client sends to this reader",
                )
                return Handled(ErrorMessage(status))

    # --- capabilities and configuration ---

    def _capabilities(self, requested: int) -> GetReaderCapabilitiesResponse:
        if requested > 4:
            raise refusal(
                f"RequestedData {requested} is not 0..4",
                field_num=0,
                code=StatusCode.A_OUT_OF_RANGE,
            )
        identity = self.identity
        general = GeneralDeviceCapabilities(
            max_number_of_antenna_supported=identity.antennas,
            can_set_antenna_properties=False,
            has_utc_clock_capability=identity.timestamps != TimestampClock.UPTIME,
            device_manufacturer_name=identity.manufacturer,
            model_name=identity.model,
            reader_firmware_version=identity.firmware_version,
            receive_sensitivity_table=(ReceiveSensitivityTableEntry(1, -80),),
            gpio_capabilities=GpioCapabilities(identity.gpis, identity.gpos),
            per_antenna_air_protocols=tuple(
                PerAntennaAirProtocol(antenna) for antenna in range(1, identity.antennas + 1)
            ),
        )
        llrp = LlrpCapabilities(
            can_do_rf_survey=False,
            can_report_buffer_fill_warning=False,
            supports_client_request_op_spec=False,
            can_do_tag_inventory_state_aware_singulation=False,
            supports_event_and_report_holding=False,
            max_num_priority_levels_supported=8,
            client_request_op_spec_timeout=0,
            max_num_rospecs=identity.max_rospecs,
            max_num_specs_per_rospec=1,
            max_num_inventory_parameter_specs_per_aispec=1,
            max_num_access_specs=identity.max_access_specs,
            max_num_op_specs_per_access_spec=1,
        )
        return GetReaderCapabilitiesResponse(
            general_device_capabilities=general if requested in (0, 1) else None,
            llrp_capabilities=llrp if requested in (0, 2) else None,
        )

    def _get_config(self, message: GetReaderConfig) -> GetReaderConfigResponse:
        identity, config = self.identity, self._config
        if message.antenna_id:
            _check_port(message.antenna_id, identity.antennas, "antenna", (), 0)
        if message.requested_data > 11:
            raise refusal(
                f"RequestedData {message.requested_data} is not 0..11",
                field_num=1,
                code=StatusCode.A_OUT_OF_RANGE,
            )
        if message.gpi_port_num:
            _check_port(message.gpi_port_num, identity.gpis, "GPI port", (), 2)
        if message.gpo_port_num:
            _check_port(message.gpo_port_num, identity.gpos, "GPO port", (), 3)
        wanted = message.requested_data

        def asked(kind: int) -> bool:
            return wanted in (0, kind)

        antennas = [message.antenna_id] if message.antenna_id else range(1, identity.antennas + 1)
        gpis = [message.gpi_port_num] if message.gpi_port_num else sorted(self.gpi_high)
        gpos = [message.gpo_port_num] if message.gpo_port_num else sorted(self.gpo_high)
        return GetReaderConfigResponse(
            identification=Identification(0, identity.reader_id) if asked(1) else None,
            antenna_properties=tuple(
                AntennaProperties(True, a, config.antenna_gain.get(a, 0)) for a in antennas
            )
            if asked(2)
            else (),
            antenna_configurations=tuple(
                config.antenna_configurations.get(a, AntennaConfiguration(a)) for a in antennas
            )
            if asked(3)
            else (),
            ro_report_spec=config.ro_report_spec if asked(4) else None,
            reader_event_notification_spec=ReaderEventNotificationSpec(
                tuple(EventNotificationState(e, e in config.events) for e in EventType)
            )
            if asked(5)
            else None,
            access_report_spec=config.access_report_spec if asked(6) else None,
            llrp_configuration_state_value=LlrpConfigurationStateValue(self._config_version)
            if asked(7)
            else None,
            keepalive_spec=config.keepalive if asked(8) else None,
            gpi_port_current_states=tuple(self._gpi_state(port) for port in gpis)
            if asked(9)
            else (),
            gpo_write_data=tuple(GpoWriteData(port, self.gpo_high[port]) for port in gpos)
            if asked(10)
            else (),
            events_and_reports=EventsAndReports(False) if asked(11) else None,
        )

    def _gpi_state(self, port: int) -> GpiPortCurrentState:
        """A disabled input is not sampled: its state is Unknown."""
        enabled = self._config.gpi_enabled.get(port, False)
        if not enabled:
            return GpiPortCurrentState(port, False, GpiState.UNKNOWN)
        return GpiPortCurrentState(
            port, True, GpiState.HIGH if self.gpi_high[port] else GpiState.LOW
        )

    def _set_config(self, message: SetReaderConfig) -> Handled:
        if self.refuse_config:
            raise _Refusal(
                LlrpStatus(StatusCode.R_DEVICE_ERROR, "configuration refused (emulator control)")
            )
        self._check_config(message)
        if message.reset_to_factory_default:
            self._factory_reset()
        config = self._config
        if message.reader_event_notification_spec is not None:
            for state in message.reader_event_notification_spec.event_notification_states:
                if state.notification_state:
                    config.events.add(state.event_type)
                else:
                    config.events.discard(state.event_type)
        for properties in message.antenna_properties:
            for antenna in self._antennas(properties.antenna_id):
                config.antenna_gain[antenna] = properties.antenna_gain
        for antenna_config in message.antenna_configurations:
            for antenna in self._antennas(antenna_config.antenna_id):
                config.antenna_configurations[antenna] = replace(antenna_config, antenna_id=antenna)
        if message.ro_report_spec is not None:
            config.ro_report_spec = message.ro_report_spec
        if message.access_report_spec is not None:
            config.access_report_spec = message.access_report_spec
        if message.keepalive_spec is not None:
            config.keepalive = message.keepalive_spec
        for gpi in message.gpi_port_current_states:
            config.gpi_enabled[gpi.gpi_port_num] = gpi.config
        writes = tuple((gpo.gpo_port_number, gpo.gpo_data) for gpo in message.gpo_write_data)
        for port, value in writes:
            self.gpo_high[port] = value
        self._config_version += 1
        return Handled(SetReaderConfigResponse(), gpo_writes=writes)

    def _check_config(self, message: SetReaderConfig) -> None:
        """Refuse the whole message before changing anything."""
        identity = self.identity
        spec = message.reader_event_notification_spec
        for state in spec.event_notification_states if spec is not None else ():
            if not _is_member(EventType, state.event_type):
                raise refusal(
                    f"unknown event type {state.event_type}",
                    path=(
                        ParameterType.READER_EVENT_NOTIFICATION_SPEC,
                        ParameterType.EVENT_NOTIFICATION_STATE,
                    ),
                    field_num=0,
                    code=StatusCode.A_OUT_OF_RANGE,
                )
        for properties in message.antenna_properties:
            if properties.antenna_id:
                _check_port(
                    properties.antenna_id,
                    identity.antennas,
                    "antenna",
                    (ParameterType.ANTENNA_PROPERTIES,),
                    1,
                )
        for antenna_config in message.antenna_configurations:
            if antenna_config.antenna_id:
                _check_port(
                    antenna_config.antenna_id,
                    identity.antennas,
                    "antenna",
                    (ParameterType.ANTENNA_CONFIGURATION,),
                    0,
                )
        if message.ro_report_spec is not None:
            self._check_report_spec(message.ro_report_spec, ())
        if message.access_report_spec is not None:
            self._check_access_report_spec(message.access_report_spec, ())
        keepalive = message.keepalive_spec
        if keepalive is not None:
            path = (ParameterType.KEEPALIVE_SPEC,)
            if not _is_member(KeepaliveTriggerType, keepalive.keepalive_trigger_type):
                raise refusal(
                    f"unknown keepalive trigger {keepalive.keepalive_trigger_type}",
                    path=path,
                    field_num=0,
                    code=StatusCode.A_OUT_OF_RANGE,
                )
            periodic = keepalive.keepalive_trigger_type == KeepaliveTriggerType.PERIODIC
            if periodic and keepalive.periodic_trigger_value == 0:
                raise refusal(
                    "a periodic keepalive needs an interval above 0 ms",
                    path=path,
                    field_num=1,
                    code=StatusCode.A_OUT_OF_RANGE,
                )
        for gpo in message.gpo_write_data:
            _check_port(
                gpo.gpo_port_number, identity.gpos, "GPO port", (ParameterType.GPO_WRITE_DATA,), 0
            )
        for gpi in message.gpi_port_current_states:
            _check_port(
                gpi.gpi_port_num,
                identity.gpis,
                "GPI port",
                (ParameterType.GPI_PORT_CURRENT_STATE,),
                0,
            )
        hold = message.events_and_reports
        if hold is not None and hold.hold_events_and_reports_upon_reconnect:
            raise refusal(
                "this reader does not hold events and reports for a reconnecting client",
                path=(ParameterType.EVENTS_AND_REPORTS,),
                field_num=0,
            )

    def _check_report_spec(self, spec: ROReportSpec, outer: Sequence[int]) -> None:
        if not _is_member(ROReportTriggerType, spec.ro_report_trigger):
            raise refusal(
                f"unknown ROReportTrigger {spec.ro_report_trigger}",
                path=(*outer, ParameterType.RO_REPORT_SPEC),
                field_num=0,
                code=StatusCode.A_OUT_OF_RANGE,
            )

    def _check_access_report_spec(self, spec: AccessReportSpec, outer: Sequence[int]) -> None:
        if spec.access_report_trigger != AccessReportTriggerType.WHENEVER_RO_REPORT_IS_GENERATED:
            raise refusal(
                "only AccessReportTrigger 0 (with the RO report) is emulated",
                path=(*outer, ParameterType.ACCESS_REPORT_SPEC),
                field_num=0,
            )

    def _antennas(self, antenna_id: int) -> range:
        if antenna_id == 0:
            return range(1, self.identity.antennas + 1)
        return range(antenna_id, antenna_id + 1)

    def _factory_reset(self) -> None:
        self._config = _Config()
        self._config_version += 1
        self._rospecs.clear()
        self._access_specs.clear()

    # --- ROSpecs ---

    def _active(self) -> _ROSpecEntry | None:
        for entry in self._rospecs.values():
            if entry.state == ROSpecState.ACTIVE:
                return entry
        return None

    def _rospec(self, rospec_id: int, *, allow_all: bool) -> _ROSpecEntry:
        entry = self._rospecs.get(rospec_id)
        if entry is None:
            what = (
                "ROSpec id 0 is not allowed here"
                if rospec_id == 0 and not allow_all
                else f"no ROSpec {rospec_id}"
            )
            raise refusal(what, field_num=0)
        return entry

    def _add_rospec(self, spec: ROSpec) -> None:
        top = (ParameterType.ROSPEC,)
        if len(self._rospecs) >= self.identity.max_rospecs:
            raise _Refusal(
                LlrpStatus(
                    StatusCode.M_OVERFLOW_PARAMETER,
                    f"this reader keeps at most {self.identity.max_rospecs} ROSpecs",
                    parameter_error=ParameterError(
                        ParameterType.ROSPEC, StatusCode.P_OVERFLOW_PARAMETER
                    ),
                )
            )
        if spec.rospec_id == 0 or spec.rospec_id in self._rospecs:
            taken = "is reserved" if spec.rospec_id == 0 else "already exists"
            raise refusal(f"ROSpec id {spec.rospec_id} {taken}", path=top, field_num=0)
        if spec.priority > 7:
            raise refusal(
                f"priority {spec.priority} is not 0..7",
                path=top,
                field_num=1,
                code=StatusCode.A_OUT_OF_RANGE,
            )
        if spec.current_state != ROSpecState.DISABLED:
            raise refusal("a ROSpec is added in state Disabled", path=top, field_num=2)
        boundary = (*top, ParameterType.RO_BOUNDARY_SPEC)
        start = spec.ro_boundary_spec.rospec_start_trigger.rospec_start_trigger_type
        if start not in (ROSpecStartTriggerType.NULL, ROSpecStartTriggerType.IMMEDIATE):
            raise refusal(
                f"ROSpec start trigger {start} is not emulated (Null and Immediate are)",
                path=(*boundary, ParameterType.ROSPEC_START_TRIGGER),
                field_num=0,
            )
        stop = spec.ro_boundary_spec.rospec_stop_trigger
        stop_path = (*boundary, ParameterType.ROSPEC_STOP_TRIGGER)
        if stop.rospec_stop_trigger_type not in (
            ROSpecStopTriggerType.NULL,
            ROSpecStopTriggerType.DURATION,
        ):
            raise refusal(
                f"ROSpec stop trigger {stop.rospec_stop_trigger_type} is not emulated (Null and Duration are)",
                path=stop_path,
                field_num=0,
            )
        if (
            stop.rospec_stop_trigger_type == ROSpecStopTriggerType.DURATION
            and stop.duration_trigger_value == 0
        ):
            raise refusal(
                "a Duration stop trigger needs a duration above 0 ms",
                path=stop_path,
                field_num=1,
                code=StatusCode.A_OUT_OF_RANGE,
            )
        for ai_spec in spec.ai_specs:
            ai_path = (*top, ParameterType.AISPEC)
            if not ai_spec.antenna_ids:
                raise refusal(
                    "an AISpec names at least one antenna (0 = all)", path=ai_path, field_num=0
                )
            for antenna in ai_spec.antenna_ids:
                if antenna:
                    _check_port(antenna, self.identity.antennas, "antenna", ai_path, 0)
            trigger = ai_spec.aispec_stop_trigger.aispec_stop_trigger_type
            if trigger != AISpecStopTriggerType.NULL:
                raise refusal(
                    f"AISpec stop trigger {trigger} is not emulated (Null is)",
                    path=(*ai_path, ParameterType.AISPEC_STOP_TRIGGER),
                    field_num=0,
                )
            for inventory in ai_spec.inventory_parameter_specs:
                if inventory.protocol_id != AirProtocol.EPC_GLOBAL_C1G2:
                    raise refusal(
                        f"air protocol {inventory.protocol_id} is not supported (1 = EPCglobal Class 1 Gen 2 is)",
                        path=(*ai_path, ParameterType.INVENTORY_PARAMETER_SPEC),
                        field_num=1,
                    )
        if spec.ro_report_spec is not None:
            self._check_report_spec(spec.ro_report_spec, top)
        self._rospecs[spec.rospec_id] = _ROSpecEntry(spec)

    def _enable(self, rospec_id: int, now: ReaderTime) -> list[Outgoing]:
        entries = (
            list(self._rospecs.values())
            if rospec_id == 0
            else [self._rospec(rospec_id, allow_all=True)]
        )
        immediate = [
            e
            for e in entries
            if e.state == ROSpecState.DISABLED
            and e.spec.ro_boundary_spec.rospec_start_trigger.rospec_start_trigger_type
            == ROSpecStartTriggerType.IMMEDIATE
        ]
        if len(immediate) > 1 or (immediate and self._active() is not None):
            raise refusal("this reader runs one ROSpec at a time", field_num=0)
        for entry in entries:
            if entry.state == ROSpecState.DISABLED:
                entry.state = ROSpecState.INACTIVE
        return self._start(immediate[0], now) if immediate else []

    def _start_by_id(self, rospec_id: int, now: ReaderTime) -> list[Outgoing]:
        entry = self._rospec(rospec_id, allow_all=False)
        if entry.state == ROSpecState.DISABLED:
            raise refusal(f"ROSpec {rospec_id} is disabled; enable it first", field_num=0)
        if entry.state == ROSpecState.ACTIVE:
            return []
        active = self._active()
        if active is not None:
            raise refusal(
                f"ROSpec {active.spec.rospec_id} is active; this reader runs one ROSpec at a time",
                field_num=0,
            )
        return self._start(entry, now)

    def _start(self, entry: _ROSpecEntry, now: ReaderTime) -> list[Outgoing]:
        entry.state = ROSpecState.ACTIVE
        entry.started_uptime_us = now.uptime_us
        return self._rospec_event(ROSpecEventType.START, entry, now)

    def _stop(self, entry: _ROSpecEntry, now: ReaderTime) -> list[Outgoing]:
        """End of the ROSpec (and its AISpec): reports waiting for it go out, then the event."""
        entry.state = ROSpecState.INACTIVE
        spec = entry.spec.ro_report_spec or self._config.ro_report_spec
        out = self._flush() if spec.ro_report_trigger != ROReportTriggerType.NONE else []
        return out + self._rospec_event(ROSpecEventType.END, entry, now)

    def _for_rospecs(self, rospec_id: int, now: ReaderTime, *, remove: bool) -> list[Outgoing]:
        entries = (
            list(self._rospecs.values())
            if rospec_id == 0
            else [self._rospec(rospec_id, allow_all=True)]
        )
        out: list[Outgoing] = []
        for entry in entries:
            if entry.state == ROSpecState.ACTIVE:
                out += self._stop(entry, now)
            entry.state = ROSpecState.DISABLED
            if remove:
                del self._rospecs[entry.spec.rospec_id]
        return out

    def _rospec_event(
        self, kind: ROSpecEventType, entry: _ROSpecEntry, now: ReaderTime
    ) -> list[Outgoing]:
        if EventType.ROSPEC not in self._config.events:
            return []
        return [self._event(now, rospec_event=ROSpecEvent(kind, entry.spec.rospec_id))]

    # --- AccessSpecs ---

    def _add_access_spec(self, spec: AccessSpec) -> None:
        top = (ParameterType.ACCESS_SPEC,)
        if len(self._access_specs) >= self.identity.max_access_specs:
            raise _Refusal(
                LlrpStatus(
                    StatusCode.M_OVERFLOW_PARAMETER,
                    f"this reader keeps at most {self.identity.max_access_specs} AccessSpecs",
                    parameter_error=ParameterError(
                        ParameterType.ACCESS_SPEC, StatusCode.P_OVERFLOW_PARAMETER
                    ),
                )
            )
        if spec.access_spec_id == 0 or spec.access_spec_id in self._access_specs:
            taken = "is reserved" if spec.access_spec_id == 0 else "already exists"
            raise refusal(f"AccessSpec id {spec.access_spec_id} {taken}", path=top, field_num=0)
        if spec.antenna_id:
            _check_port(spec.antenna_id, self.identity.antennas, "antenna", top, 1)
        if spec.protocol_id != AirProtocol.EPC_GLOBAL_C1G2:
            raise refusal(
                f"air protocol {spec.protocol_id} is not supported", path=top, field_num=2
            )
        if spec.current_state:
            raise refusal("an AccessSpec is added in state Disabled", path=top, field_num=3)
        trigger = spec.access_spec_stop_trigger.access_spec_stop_trigger
        if not _is_member(AccessSpecStopTriggerType, trigger):
            raise refusal(
                f"unknown AccessSpec stop trigger {trigger}",
                path=(*top, ParameterType.ACCESS_SPEC_STOP_TRIGGER),
                field_num=0,
                code=StatusCode.A_OUT_OF_RANGE,
            )
        for read in spec.access_command.op_specs:
            if read.memory_bank != MemoryBank.TID:
                raise refusal(
                    f"reading memory bank {read.memory_bank} is not emulated (TID, bank 2, is)",
                    path=(*top, ParameterType.ACCESS_COMMAND, ParameterType.C1G2_READ),
                    field_num=2,
                )
        if spec.access_report_spec is not None:
            self._check_access_report_spec(spec.access_report_spec, top)
        self._access_specs[spec.access_spec_id] = _AccessEntry(spec)

    def _access_entries(self, access_spec_id: int) -> list[_AccessEntry]:
        if access_spec_id == 0:
            return list(self._access_specs.values())
        entry = self._access_specs.get(access_spec_id)
        if entry is None:
            raise refusal(f"no AccessSpec {access_spec_id}", field_num=0)
        return [entry]

    def _set_access_active(self, access_spec_id: int, active: bool) -> None:
        for entry in self._access_entries(access_spec_id):
            entry.active = active

    def _access(
        self, rospec_id: int, antenna: int, epc: bytes, tid: bytes | None
    ) -> tuple[int, tuple[C1G2ReadOpSpecResult, ...]] | None:
        """Run the first active AccessSpec that applies to this tag: (its id, read results)."""
        memory: dict[int, bytes] = {
            MemoryBank.EPC: epc_memory(epc),
            MemoryBank.TID: tid or b"",
            MemoryBank.USER: b"",
        }
        for entry in list(self._access_specs.values()):
            spec = entry.spec
            if (
                not entry.active
                or spec.rospec_id not in (0, rospec_id)
                or spec.antenna_id not in (0, antenna)
            ):
                continue
            target = spec.access_command.tag_spec.target_tags[0]
            if not target.matches(memory.get(target.memory_bank, b"")):
                continue
            results = tuple(
                _read(op.op_spec_id, tid, op.word_pointer, op.word_count)
                for op in spec.access_command.op_specs
            )
            entry.operations += 1
            stop = spec.access_spec_stop_trigger
            if (
                stop.access_spec_stop_trigger == AccessSpecStopTriggerType.OPERATION_COUNT
                and entry.operations >= stop.operation_count_value
            ):
                del self._access_specs[spec.access_spec_id]
            return spec.access_spec_id, results
        return None

    # --- reports and events ---

    def _tag_report(
        self,
        rospec: ROSpec,
        spec: ROReportSpec,
        epc: bytes,
        antenna: int,
        rssi_dbm: float,
        tid: bytes | None,
        at: ReaderTime,
    ) -> TagReportData:
        content = spec.tag_report_content_selector
        clock = self.identity.timestamps
        utc = at.utc_us if clock != TimestampClock.UPTIME else None
        uptime = at.uptime_us if clock != TimestampClock.UTC else None
        pc = (((len(epc) + 1) // 2) << 11) & 0xFFFF
        want_pc = any(s.enable_pc_bits for s in content.epc_memory_selectors)
        want_crc = any(s.enable_crc for s in content.epc_memory_selectors)
        access = self._access(rospec.rospec_id, antenna, epc, tid)
        return TagReportData(
            epc=epc,
            rospec_id=rospec.rospec_id if content.enable_rospec_id else None,
            spec_index=1 if content.enable_spec_index else None,
            inventory_parameter_spec_id=rospec.ai_specs[0]
            .inventory_parameter_specs[0]
            .inventory_parameter_spec_id
            if content.enable_inventory_parameter_spec_id
            else None,
            antenna_id=antenna if content.enable_antenna_id else None,
            peak_rssi=max(-128, min(127, round(rssi_dbm))) if content.enable_peak_rssi else None,
            channel_index=1 if content.enable_channel_index else None,
            first_seen_timestamp_utc=utc if content.enable_first_seen_timestamp else None,
            first_seen_timestamp_uptime=uptime if content.enable_first_seen_timestamp else None,
            last_seen_timestamp_utc=utc if content.enable_last_seen_timestamp else None,
            last_seen_timestamp_uptime=uptime if content.enable_last_seen_timestamp else None,
            tag_seen_count=1 if content.enable_tag_seen_count else None,
            c1g2_pc=pc if want_pc else None,
            c1g2_crc=gen2_crc16(pc.to_bytes(2, "big") + epc) if want_crc else None,
            access_spec_id=access[0]
            if access is not None and content.enable_access_spec_id
            else None,
            read_results=access[1] if access is not None else (),
        )

    def _flush(self) -> list[Outgoing]:
        if not self._batch:
            return []
        report = ROAccessReport(tuple(data for data, _ in self._batch))
        tokens = tuple(token for _, token in self._batch)
        self._batch.clear()
        return [Outgoing(report, tokens)]

    def _event(
        self,
        at: ReaderTime,
        *,
        gpi_event: GpiEvent | None = None,
        rospec_event: ROSpecEvent | None = None,
        reader_exception_event: ReaderExceptionEvent | None = None,
    ) -> Outgoing:
        return Outgoing(
            self.event_notification(
                at,
                gpi_event=gpi_event,
                rospec_event=rospec_event,
                reader_exception_event=reader_exception_event,
            )
        )

    def event_notification(
        self,
        at: ReaderTime,
        *,
        gpi_event: GpiEvent | None = None,
        rospec_event: ROSpecEvent | None = None,
        reader_exception_event: ReaderExceptionEvent | None = None,
        connection_attempt_event: ConnectionAttemptEvent | None = None,
        connection_close_event: ConnectionCloseEvent | None = None,
    ) -> ReaderEventNotification:
        """A READER_EVENT_NOTIFICATION stamped on this reader's clock: UTC when it has one."""
        utc = self.identity.timestamps != TimestampClock.UPTIME
        return ReaderEventNotification(
            ReaderEventNotificationData(
                utc_timestamp=at.utc_us if utc else None,
                uptime=None if utc else at.uptime_us,
                gpi_event=gpi_event,
                rospec_event=rospec_event,
                reader_exception_event=reader_exception_event,
                connection_attempt_event=connection_attempt_event,
                connection_close_event=connection_close_event,
            )
        )


def _read(
    op_spec_id: int, tid: bytes | None, word_pointer: int, word_count: int
) -> C1G2ReadOpSpecResult:
    """A C1G2Read of TID memory: the words asked for (0 = to the end), or a tag error when the
    card's TID is not known or the words are past its end."""
    if not tid:
        return C1G2ReadOpSpecResult(C1G2ReadResult.NONSPECIFIC_TAG_ERROR, op_spec_id)
    memory = tid + (b"\x00" if len(tid) % 2 else b"")
    start = 2 * word_pointer
    end = len(memory) if word_count == 0 else start + 2 * word_count
    if start >= len(memory) or end > len(memory):
        return C1G2ReadOpSpecResult(C1G2ReadResult.NONSPECIFIC_TAG_ERROR, op_spec_id)
    return C1G2ReadOpSpecResult(C1G2ReadResult.SUCCESS, op_spec_id, memory[start:end])
