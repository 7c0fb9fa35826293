"""systemd's notify protocol (READY, WATCHDOG, STATUS, STOPPING) in a few lines of stdlib.

With ``Type=notify`` systemd considers the agent started only once it says READY=1, and with
``WatchdogSec=`` restarts it when the engine loop stops sending WATCHDOG=1. Outside systemd
(``NOTIFY_SOCKET`` unset) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``; errors are logged once, never raised."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        # An address starting with '@' is in the abstract namespace.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._failed = False
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if watchdog_for_us else None

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a notify socket."""
        return bool(self._address)

    def notify(self, message: str) -> None:
        """Send one state string such as ``READY=1`` or ``STATUS=…``."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # Never wait: the engine thread calls this, and a reader that stopped reading
                # (a full datagram queue) must cost a dropped message, not a stuck lane.
                sock.setblocking(False)
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot notify systemd at %s: %s", self._address, exc)
                self._failed = True

    def ready(self, status: str) -> None:
        """Tell systemd start-up is complete."""
        self.notify(f"READY=1\nSTATUS={status}")

    def watchdog(self) -> None:
        """Keep-alive from the engine loop."""
        self.notify("WATCHDOG=1")

    def status(self, status: str) -> None:
        """Free-text status shown by ``systemctl status``."""
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        """Tell systemd a clean shutdown has begun."""
        self.notify("STOPPING=1")
