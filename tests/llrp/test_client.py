"""The client over real TCP: connection handshake, requests matched to responses, refusals and
timeouts with clear errors, keepalive answers, asynchronous delivery, and every way a
connection ends."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from llrp.client import (
    LlrpClient,
    LlrpConnectionError,
    LlrpStatusError,
    LlrpTimeoutError,
    ReaderRefusedConnectionError,
)
from llrp.codec import LlrpFramingError, StatusCode, encode_message
from llrp.emulator import LlrpReaderEmulator
from llrp.messages import (
    CustomMessage,
    ErrorMessage,
    GetReaderCapabilities,
    GetReaderConfig,
    Keepalive,
    ReaderEventNotification,
    SetReaderConfig,
)
from llrp.parameters import (
    ConnectionAttemptEvent,
    ConnectionAttemptStatus,
    GpoWriteData,
    KeepaliveSpec,
    KeepaliveTriggerType,
    ReaderEventNotificationData,
)
from llrp.reader_model import ReaderIdentity
from tests.llrp.support import WAIT_S, Inbox


class SilentReader:
    """A TCP peer that says ConnectionAttemptEvent(Success), then only sends what it is told."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.peer: socket.socket | None = None
        self._accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.peer, _ = self.server.accept()
        hello = ReaderEventNotification(
            ReaderEventNotificationData(
                utc_timestamp=1, connection_attempt_event=ConnectionAttemptEvent(0)
            )
        )
        self.peer.sendall(encode_message(hello, 1))
        self._accepted.set()

    def send(self, data: bytes) -> None:
        assert self._accepted.wait(WAIT_S)
        assert self.peer is not None
        self.peer.sendall(data)

    def close(self) -> None:
        for sock in (self.peer, self.server):
            if sock is not None:
                sock.close()


@pytest.fixture
def silent_reader() -> Iterator[SilentReader]:
    reader = SilentReader()
    try:
        yield reader
    finally:
        reader.close()


def test_connect_waits_for_the_readers_connection_attempt_event(
    emulator: LlrpReaderEmulator, inbox: Inbox
) -> None:
    client = LlrpClient("127.0.0.1", emulator.port, on_message=inbox)
    try:
        event = client.connect(WAIT_S)
        assert event == ConnectionAttemptEvent(ConnectionAttemptStatus.SUCCESS)
        assert client.connected
        first = inbox.messages()[0]
        assert isinstance(first, ReaderEventNotification)
        assert first.reader_event_notification_data.connection_attempt_event == event
    finally:
        client.close()


def test_request_returns_the_typed_response(client: LlrpClient) -> None:
    response = client.request(GetReaderCapabilities())
    general = response.general_device_capabilities
    assert general is not None
    assert general.max_number_of_antenna_supported == 4
    assert (general.gpio_capabilities.num_gpis, general.gpio_capabilities.num_gpos) == (2, 4)


def test_a_refused_request_raises_with_the_readers_description_and_parameter_error(
    client: LlrpClient,
) -> None:
    with pytest.raises(LlrpStatusError) as caught:
        client.request(SetReaderConfig(gpo_write_data=(GpoWriteData(9, True),)))
    assert str(caught.value) == (
        "SetReaderConfig refused by the reader (SetReaderConfigResponse): "
        "M_ParameterError: no GPO port 9 (this reader has 4) "
        "(parameter GPO_WRITE_DATA (219): P_FieldError, field 0: A_OutOfRange)"
    )
    assert caught.value.status.status_code == StatusCode.M_PARAMETER_ERROR


def test_check_false_returns_a_refusal_instead_of_raising(client: LlrpClient) -> None:
    response = client.request(GetReaderConfig(gpi_port_num=7), check=False)
    assert response.status.status_code == StatusCode.M_FIELD_ERROR
    assert response.status.field_error is not None
    assert response.status.field_error.field_num == 2


def test_a_request_nobody_answers_times_out_naming_the_response(
    silent_reader: SilentReader,
) -> None:
    client = LlrpClient("127.0.0.1", silent_reader.port)
    client.connect(WAIT_S)
    try:
        with pytest.raises(
            LlrpTimeoutError,
            match=r"no GetReaderCapabilitiesResponse to GetReaderCapabilities \(message id 1\) within 0.2 s",
        ):
            client.request(GetReaderCapabilities(), timeout_s=0.2)
        assert client.connected  # a timeout is the caller's to judge, not a broken link
    finally:
        client.abort()


def test_a_late_response_is_dropped_and_counted(silent_reader: SilentReader) -> None:
    inbox = Inbox()
    client = LlrpClient("127.0.0.1", silent_reader.port, on_message=inbox)
    client.connect(WAIT_S)
    try:
        with pytest.raises(LlrpTimeoutError):
            client.request(GetReaderCapabilities(), timeout_s=0.05)
        from llrp.messages import GetReaderCapabilitiesResponse

        silent_reader.send(encode_message(GetReaderCapabilitiesResponse(), 1))
        silent_reader.send(encode_message(Keepalive(), 2))
        assert inbox.wait_for(lambda ms: any(isinstance(m, Keepalive) for m in ms))
        assert client.stats().unsolicited_responses == 1
        assert not any(isinstance(m, GetReaderCapabilitiesResponse) for m in inbox.messages())
    finally:
        client.abort()


def test_an_error_message_answering_a_request_raises(silent_reader: SilentReader) -> None:
    client = LlrpClient("127.0.0.1", silent_reader.port)
    client.connect(WAIT_S)
    result: list[BaseException] = []

    def ask() -> None:
        try:
            client.request(GetReaderCapabilities())
        except BaseException as exc:
            result.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    try:
        from llrp.parameters import LlrpStatus

        while client.stats().messages_sent < 1:
            threading.Event().wait(0.005)
        silent_reader.send(encode_message(ErrorMessage(LlrpStatus(109, "not here")), 1))
        asking.join(WAIT_S)
        assert isinstance(result[0], LlrpStatusError)
        assert "M_UnsupportedMessage: not here" in str(result[0])
    finally:
        client.abort()


def test_connecting_where_no_reader_listens_fails_clearly() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(LlrpConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
        LlrpClient("127.0.0.1", port).connect(1.0)


def test_a_second_client_is_refused_and_the_first_hears_of_it(
    emulator: LlrpReaderEmulator, client: LlrpClient, inbox: Inbox
) -> None:
    second = LlrpClient("127.0.0.1", emulator.port)
    with pytest.raises(ReaderRefusedConnectionError) as caught:
        second.connect(WAIT_S)
    assert caught.value.status == ConnectionAttemptStatus.FAILED_CLIENT_INITIATED_CONNECTION_EXISTS

    def attempts(messages: list[object]) -> list[int]:
        return [
            m.reader_event_notification_data.connection_attempt_event.status
            for m in messages
            if isinstance(m, ReaderEventNotification)
            and m.reader_event_notification_data.connection_attempt_event is not None
        ]

    assert inbox.wait_for(
        lambda ms: ConnectionAttemptStatus.ANOTHER_CONNECTION_ATTEMPTED in attempts(ms)
    )
    assert client.request(GetReaderCapabilities()).status.ok  # the first is unaffected
    assert emulator.stats().connections_refused == 1


def test_a_dropped_connection_fails_waiting_requests_and_reports_why(
    emulator: LlrpReaderEmulator,
) -> None:
    closed: list[BaseException | None] = []
    done = threading.Event()

    def on_closed(reason: BaseException | None) -> None:
        closed.append(reason)
        done.set()

    client = LlrpClient("127.0.0.1", emulator.port, on_closed=on_closed)
    client.connect(WAIT_S)
    emulator.drop_connection()
    assert done.wait(WAIT_S)
    assert isinstance(closed[0], LlrpConnectionError)
    assert not client.connected
    with pytest.raises(LlrpConnectionError, match=r"not connected to 127\.0\.0\.1"):
        client.request(GetReaderCapabilities())
    with pytest.raises(LlrpConnectionError, match="already been connected; make a new one"):
        client.connect(1.0)


def test_close_says_close_connection_and_reports_a_clean_end(
    emulator: LlrpReaderEmulator,
) -> None:
    closed: list[BaseException | None] = []
    client = LlrpClient("127.0.0.1", emulator.port, on_closed=closed.append)
    client.connect(WAIT_S)
    client.close()
    assert closed == [None]
    assert emulator.wait_for(lambda e: not e.connected, WAIT_S)
    assert emulator.stats().messages_received == 1  # the CLOSE_CONNECTION


def test_keepalives_are_answered_and_handed_on(inbox: Inbox) -> None:
    with LlrpReaderEmulator() as reader:
        client = LlrpClient("127.0.0.1", reader.port, on_message=inbox)
        client.connect(WAIT_S)
        try:
            client.request(
                SetReaderConfig(keepalive_spec=KeepaliveSpec(KeepaliveTriggerType.PERIODIC, 30))
            )
            assert inbox.wait_for(lambda ms: sum(isinstance(m, Keepalive) for m in ms) >= 3)
            assert reader.wait_for(lambda e: e.stats().keepalive_acks >= 3, WAIT_S)
            assert client.stats().keepalives_acked >= 3
        finally:
            client.abort()


def test_a_reader_drops_a_client_that_stopped_answering_keepalives() -> None:
    closed = threading.Event()
    with LlrpReaderEmulator(keepalive_misses_allowed=2) as reader:
        client = LlrpClient(
            "127.0.0.1", reader.port, ack_keepalives=False, on_closed=lambda _: closed.set()
        )
        client.connect(WAIT_S)
        client.request(
            SetReaderConfig(keepalive_spec=KeepaliveSpec(KeepaliveTriggerType.PERIODIC, 20))
        )
        assert closed.wait(WAIT_S)
        stats = reader.stats()
        assert stats.connections_dropped_silent == 1
        assert stats.keepalives_sent == 3
        assert stats.keepalive_acks == 0


def test_an_unsupported_message_is_answered_with_error_message(
    client: LlrpClient, inbox: Inbox
) -> None:
    client.send(CustomMessage(25882, 1, b"\x00"))
    assert inbox.wait_for(lambda ms: any(isinstance(m, ErrorMessage) for m in ms))
    (error,) = inbox.of_type(ErrorMessage)
    assert isinstance(error, ErrorMessage)
    assert error.status.status_code == StatusCode.M_UNSUPPORTED_MESSAGE


def test_a_callback_that_raises_does_not_stop_the_client(emulator: LlrpReaderEmulator) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("bug in the adapter")

    client = LlrpClient("127.0.0.1", emulator.port, on_message=broken)
    client.connect(WAIT_S)
    try:
        assert client.request(GetReaderCapabilities()).status.ok
        assert client.stats().callback_errors == 1  # the ConnectionAttemptEvent
    finally:
        client.close()


def test_an_unframeable_stream_ends_the_connection(silent_reader: SilentReader) -> None:
    closed: list[BaseException | None] = []
    done = threading.Event()

    def on_closed(reason: BaseException | None) -> None:
        closed.append(reason)
        done.set()

    client = LlrpClient("127.0.0.1", silent_reader.port, on_closed=on_closed)
    client.connect(WAIT_S)
    silent_reader.send(struct.pack(">HII", (1 << 10) | 61, 3, 9))
    assert done.wait(WAIT_S)
    assert isinstance(closed[0], LlrpFramingError)


def test_identity_options_show_in_the_capabilities() -> None:
    identity = ReaderIdentity(antennas=2, gpis=4, gpos=1, model=700, firmware_version="8.0")
    with (
        LlrpReaderEmulator(identity=identity) as reader,
        LlrpClient("127.0.0.1", reader.port) as client,
    ):
        client.connect(WAIT_S)
        general = client.request(GetReaderCapabilities(1)).general_device_capabilities
    assert general is not None
    assert general.max_number_of_antenna_supported == 2
    assert general.gpio_capabilities.num_gpis == 4
    assert general.gpio_capabilities.num_gpos == 1
    assert (general.model_name, general.reader_firmware_version) == (700, "8.0")
    assert len(general.per_antenna_air_protocols) == 2
