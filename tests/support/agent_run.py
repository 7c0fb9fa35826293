"""A real ``lane-agent run`` for fault tests: its config file and its start-up handshake.

The child runs ``python -m agent.cli run`` from the repository with ``NOTIFY_SOCKET`` pointing at
a datagram socket of the test, and counts as started once it says ``READY=1`` there (the lane
runs), as systemd would see it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from agent.wire.topics import Topics

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_lane_config(
    workdir: Path, topics: Topics, reader_section: str, broker_port: int, *, mqtt_extra: str = ""
) -> Path:
    """``workdir/lane.toml``: fast correlation and reconnects, files in ``workdir``, JSON logs;
    ``reader_section`` is the body of ``[reader]``, ``mqtt_extra`` more ``[mqtt]`` lines."""
    path = workdir / "lane.toml"
    path.write_text(
        f"""
[lane]
port_id = "{topics.port_id}"
lane_id = "{topics.lane_id}"

[lane.correlation]
idle_timeout_s = 2.0
straggler_window_s = 0.5

[reader]
{reader_section}
[cache]
path = "credentials.db"

[outbox]
path = "outbox.db"

[mqtt]
port = {broker_port}
reconnect_min_s = 0.1
reconnect_max_s = 1.0
{mqtt_extra}
[logging]
level = "INFO"
format = "json"
"""
    )
    return path


def spawn_agent(
    config: Path, notify_path: Path, *, output: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    """Start ``lane-agent run --config config`` with stdout and stderr to ``output``."""
    return subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
        cwd=REPO_ROOT,
        env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def said_ready(
    notify: socket.socket, process: subprocess.Popen[bytes], *, timeout_s: float = 30.0
) -> bool:
    """Wait for ``READY=1`` on ``notify``: False when ``process`` exits or time runs out first."""
    deadline = time.monotonic() + timeout_s
    notify.settimeout(0.2)
    while True:
        try:
            if notify.recv(4096).startswith(b"READY=1"):
                return True
        except TimeoutError:
            if process.poll() is not None or time.monotonic() > deadline:
                return False
