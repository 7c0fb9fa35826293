"""A blocking LLRP connection for an agent-side reader adapter.

One :class:`LlrpClient` is one TCP connection to one reader. A reader thread owns the socket's
receiving side: it frames and decodes messages, completes the request waiting for each response
(matched by message id and type), answers KEEPALIVE with KEEPALIVE_ACK, and hands everything
else (tag reports, reader events, keepalives) to ``on_message``. That callback runs on the
reader thread and must not block: put the message on a queue and return. Any thread may call
:meth:`LlrpClient.request` or :meth:`LlrpClient.send`; sends are serialised by a lock.

Policy is the caller's: this module never reconnects, backs off, or interprets reports. When
the connection ends (reader closed it, network error, unframeable stream, :meth:`close`),
pending requests fail with :class:`LlrpConnectionError`, ``on_closed`` is called once with the
reason (None after :meth:`close`), and the client stays closed; connect again with a new one.

Exceptions (besides the codec's)::

    LlrpError
    ├── LlrpConnectionError             cannot connect, or the connection is gone
    │   └── ReaderRefusedConnectionError  ConnectionAttemptEvent other than Success
    ├── LlrpTimeoutError                no response in time (also a TimeoutError)
    └── LlrpStatusError                 a response whose LLRPStatus is not M_Success
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar, cast

from firmware_bridge.repeats import RepeatedWarning
from llrp.codec import (
    DEFAULT_MAX_MESSAGE_SIZE,
    LLRP_PORT,
    DecodeStats,
    FrameDecoder,
    LlrpDecodeError,
    LlrpError,
    MessageType,
    RawMessage,
    encode_message,
)
from llrp.messages import (
    CloseConnection,
    ErrorMessage,
    Keepalive,
    KeepaliveAck,
    Message,
    ReaderEventNotification,
    Request,
    Response,
)
from llrp.parameters import ConnectionAttemptEvent, ConnectionAttemptStatus, LlrpStatus

logger = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT_S: Final = 5.0
_RECEIVE_CHUNK: Final = 65536
REPEAT_WARNING_INTERVAL_S: Final = 60.0
"""Undecodable messages are warned about at most this often, with how many were left out (a
reader that speaks what the codec cannot decode does so for every report)."""

_R = TypeVar("_R", bound=Response)


class LlrpConnectionError(LlrpError, ConnectionError):
    """The connection could not be made or has ended."""


class ReaderRefusedConnectionError(LlrpConnectionError):
    """The reader answered the connection with a ConnectionAttemptEvent other than Success
    (usually: another client is already connected)."""

    def __init__(self, status: int):
        self.status = status
        try:
            name = ConnectionAttemptStatus(status).name
        except ValueError:
            name = str(status)
        super().__init__(f"reader refused the connection: ConnectionAttemptEvent status {name}")


class LlrpTimeoutError(LlrpError, TimeoutError):
    """No answer within the time allowed."""


class LlrpStatusError(LlrpError):
    """The reader answered a request with a status other than M_Success (or ERROR_MESSAGE).

    ``str()`` carries the reader's error description and its field/parameter error.
    """

    def __init__(self, request: Message, response: Response):
        self.request = request
        self.response = response
        self.status: LlrpStatus = response.status
        super().__init__(
            f"{type(request).__name__} refused by the reader "
            f"({type(response).__name__}): {response.status.describe()}"
        )


@dataclass(frozen=True, slots=True)
class Received:
    """A message from the reader with the host's clocks when it was taken off the socket."""

    message_id: int
    message: Message
    received_at: float
    """``time.time()``."""
    received_monotonic: float


@dataclass(frozen=True, slots=True)
class ClientStats:
    messages_sent: int
    messages_received: int
    bytes_received: int
    delivered: int
    """Messages handed to ``on_message``."""
    keepalives_acked: int
    undecodable: int
    """Framed messages that did not decode (skipped, or failing the request they answered)."""
    unsolicited_responses: int
    """Responses that matched no waiting request (late, after a timeout): dropped."""
    parameters_skipped: int
    """Unknown (vendor) parameters skipped while decoding."""
    callback_errors: int


@dataclass(slots=True)
class _Pending:
    request: Message
    response_type: int
    done: threading.Event
    response: Response | None = None
    error: BaseException | None = None


class LlrpClient:
    """One connection to an LLRP reader; see the module docstring for the threading model."""

    def __init__(
        self,
        host: str,
        port: int = LLRP_PORT,
        *,
        on_message: Callable[[Received], None] | None = None,
        on_closed: Callable[[BaseException | None], None] | None = None,
        ack_keepalives: bool = True,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        send_timeout_s: float = 5.0,
    ):
        self.host = host
        self.port = port
        self._on_message = on_message
        self._on_closed = on_closed
        self.ack_keepalives = ack_keepalives
        self.send_timeout_s = send_timeout_s
        self._decoder = FrameDecoder(max_message_size)
        self._decode_stats = DecodeStats()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1
        self._closing = False
        self._closed = threading.Event()
        self._close_reason: BaseException | None = None
        self._attempt = threading.Event()
        self._attempt_event: ConnectionAttemptEvent | None = None
        self._sent = 0
        self._received = 0
        self._delivered = 0
        self._keepalives_acked = 0
        self._undecodable = 0
        self._undecodable_warning = RepeatedWarning(logger)
        self._unsolicited = 0
        self._callback_errors = 0

    # --- public API ---

    def connect(
        self, timeout_s: float = 5.0, *, wait_for_reader: bool = True
    ) -> ConnectionAttemptEvent | None:
        """Open the TCP connection and start the reader thread.

        With ``wait_for_reader`` (LLRP says a client waits for it before sending), wait for the
        reader's ConnectionAttemptEvent and return it; raise
        :class:`ReaderRefusedConnectionError` if it is not Success. The notification is also
        handed to ``on_message``.
        """
        if self._sock is not None or self._closed.is_set():
            raise LlrpConnectionError("this client has already been connected; make a new one")
        deadline = time.monotonic() + timeout_s
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout_s)
        except OSError as exc:
            raise LlrpConnectionError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Bounds a send to a reader that stopped reading; a blocked receive just loops.
        sock.settimeout(self.send_timeout_s)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._receive_loop, name=f"llrp {self.host}:{self.port}", daemon=True
        )
        self._thread.start()
        if not wait_for_reader:
            return None
        self._attempt.wait(max(0.0, deadline - time.monotonic()))
        event = self._attempt_event
        if event is None:
            reason = self._close_reason
            self.abort()
            if self._closed.is_set() and reason is not None:
                raise LlrpConnectionError(
                    f"{self.host}:{self.port} closed the connection before its "
                    f"ConnectionAttemptEvent: {reason}"
                ) from reason
            raise LlrpTimeoutError(
                f"no ConnectionAttemptEvent from {self.host}:{self.port} within {timeout_s:g} s"
            )
        if event.status != ConnectionAttemptStatus.SUCCESS:
            self.abort()
            raise ReaderRefusedConnectionError(event.status)
        return event

    @property
    def connected(self) -> bool:
        return self._sock is not None and not self._closed.is_set()

    @property
    def close_reason(self) -> BaseException | None:
        """Why the connection ended (None while open or after :meth:`close`)."""
        return self._close_reason

    def wait_closed(self, timeout_s: float) -> bool:
        return self._closed.wait(timeout_s)

    def send(self, message: Message, message_id: int | None = None) -> int:
        """Send a message without waiting for anything; returns its message id."""
        with self._lock:
            if message_id is None:
                message_id = self._take_id()
        self._write(encode_message(message, message_id))
        return message_id

    def request(
        self,
        message: Request[_R],
        timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        *,
        check: bool = True,
    ) -> _R:
        """Send a request and wait for its response (same message id).

        Raises :class:`LlrpStatusError` when the reader answers ERROR_MESSAGE, or (with
        ``check``) a status other than M_Success; :class:`LlrpTimeoutError` when nothing comes
        in ``timeout_s``; :class:`LlrpConnectionError` when the connection ends first.
        """
        pending = _Pending(message, message.RESPONSE.TYPE, threading.Event())
        with self._lock:
            if self._closed.is_set() or self._sock is None:
                raise self._gone_error()
            message_id = self._take_id()
            self._pending[message_id] = pending
        try:
            self._write(encode_message(message, message_id))
            if not pending.done.wait(timeout_s):
                raise LlrpTimeoutError(
                    f"no {message.RESPONSE.__name__} to {type(message).__name__} "
                    f"(message id {message_id}) within {timeout_s:g} s"
                )
        finally:
            with self._lock:
                self._pending.pop(message_id, None)
        if pending.error is not None:
            if isinstance(pending.error, LlrpDecodeError):
                raise pending.error
            raise LlrpConnectionError(
                f"connection ended before the answer to {type(message).__name__}: {pending.error}"
            ) from pending.error
        response = pending.response
        if response is None or isinstance(response, ErrorMessage):
            raise LlrpStatusError(message, response if response is not None else ErrorMessage())
        if check and not response.status.ok:
            raise LlrpStatusError(message, response)
        return cast(_R, response)

    def close(self, timeout_s: float = 2.0) -> None:
        """Say CLOSE_CONNECTION (when still connected), then close the socket and wait for the
        reader thread. ``on_closed`` gets None. Safe to call more than once."""
        if self.connected:
            with self._lock:
                self._closing = True  # the reader's EOF after its response is expected
            with contextlib.suppress(LlrpError):
                self.request(CloseConnection(), timeout_s)
        self._shutdown(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def abort(self) -> None:
        """Close the socket now, without CLOSE_CONNECTION."""
        self._shutdown(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def __enter__(self) -> LlrpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> ClientStats:
        with self._lock:
            return ClientStats(
                messages_sent=self._sent,
                messages_received=self._received,
                bytes_received=self._decoder.bytes_received,
                delivered=self._delivered,
                keepalives_acked=self._keepalives_acked,
                undecodable=self._undecodable,
                unsolicited_responses=self._unsolicited,
                parameters_skipped=self._decode_stats.skipped,
                callback_errors=self._callback_errors,
            )

    # --- internals ---

    def _take_id(self) -> int:
        while True:
            message_id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            if message_id not in self._pending:
                return message_id

    def _gone_error(self) -> LlrpConnectionError:
        reason = self._close_reason
        text = f"not connected to {self.host}:{self.port}"
        return LlrpConnectionError(f"{text}: {reason}" if reason is not None else text)

    def _write(self, data: bytes) -> None:
        sock = self._sock
        if sock is None or self._closed.is_set():
            raise self._gone_error()
        with self._send_lock:
            try:
                sock.sendall(data)
            except OSError as exc:
                # A partial write leaves the stream unframeable: the connection is over.
                error = LlrpConnectionError(f"send to {self.host}:{self.port} failed: {exc}")
                self._shutdown(error)
                raise error from exc
        with self._lock:
            self._sent += 1

    def _receive_loop(self) -> None:
        sock = self._sock
        assert sock is not None  # set before the thread starts
        reason: BaseException | None = None
        try:
            while not self._closed.is_set():
                try:
                    data = sock.recv(_RECEIVE_CHUNK)
                except TimeoutError:
                    continue
                except OSError as exc:
                    if not self._closing:
                        reason = LlrpConnectionError(f"receive from {self.host}:{self.port}: {exc}")
                    break
                if not data:
                    if not self._closing:
                        reason = LlrpConnectionError(
                            f"{self.host}:{self.port} closed the connection"
                        )
                    break
                received_at, received_monotonic = time.time(), time.monotonic()
                for raw in self._decoder.feed(data):
                    self._dispatch(raw, received_at, received_monotonic)
        except LlrpDecodeError as exc:  # framing: the stream cannot be read any further
            reason = exc
        except Exception as exc:  # never die silently: the owner must learn the link is gone
            logger.exception("llrp client: receive loop failed")
            reason = exc
        self._shutdown(reason)

    def _warn_undecodable(self, exc: LlrpDecodeError) -> None:
        self._undecodable_warning.warn(
            REPEAT_WARNING_INTERVAL_S,
            "llrp client: undecodable message from %s: %s",
            self.host,
            exc,
        )

    def _dispatch(self, raw: RawMessage, received_at: float, received_monotonic: float) -> None:
        with self._lock:
            self._received += 1
            pending = self._pending.get(raw.message_id)
        answers = pending is not None and raw.message_type in (
            pending.response_type,
            MessageType.ERROR_MESSAGE,
        )
        try:
            message = raw.decode(self._decode_stats)
        except LlrpDecodeError as exc:
            with self._lock:
                self._undecodable += 1
            self._warn_undecodable(exc)
            if answers and pending is not None:
                pending.error = exc
                pending.done.set()
            return
        if answers and pending is not None and isinstance(message, Response):
            pending.response = message
            pending.done.set()
            return
        if isinstance(message, Response) and not isinstance(message, ErrorMessage):
            with self._lock:
                self._unsolicited += 1
            logger.debug("llrp client: %s matches no request; dropped", type(message).__name__)
            return
        if isinstance(message, Keepalive) and self.ack_keepalives:
            with contextlib.suppress(LlrpError):
                self._write(encode_message(KeepaliveAck(), raw.message_id))
                with self._lock:
                    self._keepalives_acked += 1
        if isinstance(message, ReaderEventNotification):
            attempt = message.reader_event_notification_data.connection_attempt_event
            if attempt is not None and self._attempt_event is None:
                self._attempt_event = attempt
                self._attempt.set()
        self._deliver(Received(raw.message_id, message, received_at, received_monotonic))

    def _deliver(self, received: Received) -> None:
        if self._on_message is None:
            return
        try:
            self._on_message(received)
        except Exception:
            with self._lock:
                self._callback_errors += 1
            logger.exception("llrp client: on_message raised; message dropped")
            return
        with self._lock:
            self._delivered += 1

    def _shutdown(self, reason: BaseException | None) -> None:
        with self._lock:
            if self._closed.is_set():
                return
            self._closing = True
            self._close_reason = reason
            self._closed.set()
            pending = list(self._pending.values())
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        gone = reason if reason is not None else LlrpConnectionError("connection closed")
        for waiting in pending:
            waiting.error = gone
            waiting.done.set()
        self._attempt.set()
        if self._on_closed is not None:
            try:
                self._on_closed(reason)
            except Exception:
                logger.exception("llrp client: on_closed raised")
