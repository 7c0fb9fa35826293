"""What other threads hand to the publisher thread, and how they end its wait.

paho's callbacks (on the publisher thread, inside paho's network step) record connects,
disconnects and acknowledgement watermarks on the event queue; the API methods record wake-ups,
status changes and a stop request; the marker thread reports each batch it marked. The publisher
acts on them once paho has returned. Events carry the generation of the client they came from: the
publisher ignores those of a client it has already replaced. PUBACKs, one per message, travel as
plain tuples on a deque instead (see :mod:`agent.uplink.connection`).

The publisher thread waits in ``poll`` on the broker's socket and on a wake-up socket
(:class:`Waker`): a thread that queued an event writes a byte there to end the wait.
"""

from __future__ import annotations

import contextlib
import select
import socket
from dataclasses import dataclass
from typing import Any

from paho.mqtt.reasoncodes import ReasonCode

_POLL_READ = select.POLLIN | select.POLLPRI
_POLL_WRITE = select.POLLOUT
# An error or hang-up shows as readable, as select() reports it: loop_read() then meets it.
_POLL_READABLE = _POLL_READ | select.POLLERR | select.POLLHUP | select.POLLNVAL


@dataclass(frozen=True, slots=True)
class Connected:
    generation: int
    reason: ReasonCode
    session_present: bool
    receive_maximum: int | None


@dataclass(frozen=True, slots=True)
class Disconnected:
    generation: int
    reason: ReasonCode


@dataclass(frozen=True, slots=True)
class Wake:
    pass


@dataclass(frozen=True, slots=True)
class AckReceived:
    generation: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class StatusChanged:
    pass


@dataclass(frozen=True, slots=True)
class StopRequested:
    deadline: float


@dataclass(frozen=True, slots=True)
class Marked:
    """The marker thread finished a batch: marked sent, or not (``error``) and still pending."""

    batch: int
    count: int
    error: Exception | None


Event = Connected | Disconnected | Wake | AckReceived | StatusChanged | StopRequested | Marked


class Waker:
    """The publisher thread's wait on the broker's socket, and the wake-up other threads send."""

    def __init__(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self) -> None:
        """End the publisher thread's wait (from any thread)."""
        # OSError: full (a wake-up is pending anyway) or closed (the thread has ended).
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def wait(self, timeout_s: float, sock: Any | None, want_write: bool) -> tuple[bool, bool]:
        """Wait until ``sock`` is readable (or writable, with ``want_write``), a wake-up arrives or
        ``timeout_s`` passes; ``(readable, writable)`` for ``sock``.

        poll, not select: select() cannot wait on a descriptor numbered 1024 or above, which a
        process holding many files (camera, serial, SQLite, sockets) may well be handed.
        """
        poller = select.poll()
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, _POLL_READ)
        sock_fd = -1
        if sock is not None:
            sock_fd = sock.fileno()
            # A full socket buffer: also wait until it drains.
            poller.register(sock_fd, _POLL_READ | _POLL_WRITE if want_write else _POLL_READ)
        readable = writable = False
        for fd, mask in poller.poll(timeout_s * 1000.0):
            if fd == wake_fd:
                self._drain()
            elif fd == sock_fd:
                readable = bool(mask & _POLL_READABLE)
                writable = bool(mask & _POLL_WRITE)
        return readable, writable

    def _drain(self) -> None:
        """Empty the wake-up socket: one pass of the loop handles every event queued so far."""
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            return

    def close(self) -> None:
        self._wake_r.close()
        self._wake_w.close()
