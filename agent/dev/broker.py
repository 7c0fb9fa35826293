"""A private Mosquitto for the demo: started on a free loopback port, stopped afterwards.

Only ``lane-agent demo`` uses this; a production lane talks to central's broker cluster.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "install it with: sudo apt-get install mosquitto"


class BrokerUnavailableError(RuntimeError):
    """The mosquitto binary is missing or would not start."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (Debian installs it in /usr/sbin, often off PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateMosquitto:
    """Mosquitto on 127.0.0.1:<free port>, anonymous, with its config and log in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerUnavailableError(f"mosquitto not found; {INSTALL_HINT}")
        self.binary = binary
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = free_loopback_port()
        self.log_path = workdir / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        config = self.workdir / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "max_queued_messages 0\n"
            f"persistence true\npersistence_location {self.workdir}/\n"
            f"log_dest file {self.log_path}\n"
        )
        self._process = subprocess.Popen(
            [self.binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerUnavailableError(
                    f"mosquitto exited with {self._process.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerUnavailableError(
            f"mosquitto did not listen on {self.port} within {timeout_s} s"
        )

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL if it lingers)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)

    def __enter__(self) -> PrivateMosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
