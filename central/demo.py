"""``lane-central demo``: a few simulated lanes, a broker, two ingest workers and PostgreSQL.

Every part is the real one, started as its own process: per lane, ``lane-agent simulate`` plays
the lane controller on a pseudo-terminal and ``lane-agent run`` is the lane agent with its
SQLite outbox; a private Mosquitto on a free loopback port; two ``lane-central ingest`` workers
sharing the lanes; the machine's PostgreSQL, in a database the demo creates and drops. The demo
ends when every vehicle's crossing is stored and every lane's status says its outbox is empty —
emptied by the watermark ingest published after storing — and prints the board.

Lanes are started as commands, not imported: central shares only the wire definitions with the
agent.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import psycopg
from psycopg import sql

from central import board, db, migrate

PORT_ID = "DEMO"
KNOWN_CARDS = [f"E2806894000050DE{number:08X}" for number in range(1, 9)]
UNKNOWN_CARD = "E28068940000509999F00001"
_START_TIMEOUT_S = 15.0


class DemoError(RuntimeError):
    """A part of the demo could not be started (the message says which and why)."""


@dataclass
class _Lane:
    lane_id: str
    directory: Path
    simulator: subprocess.Popen[bytes]
    agent: subprocess.Popen[bytes] | None = None


def run_demo(
    *,
    lanes: int,
    vehicles: int,
    speed: float,
    admin_dsn: str,
    workdir: Path | None,
    keep_database: bool,
    timeout_s: float,
    out: TextIO,
) -> int:
    """Run the demo; 0 when every crossing was stored and every outbox emptied by the watermark."""
    with _directory(workdir) as directory, contextlib.ExitStack() as stack:
        dsn = _create_database(admin_dsn, keep_database, stack, out)
        broker_port = _start_broker(directory, stack)
        print(f"broker: mosquitto on 127.0.0.1:{broker_port}", file=out, flush=True)
        for number in (1, 2):
            _start_worker(directory, dsn, broker_port, number, stack)
        print("ingest: 2 workers sharing the lanes (lane-central ingest)", file=out, flush=True)
        started = [
            _start_lane(directory, f"L{number:02d}", vehicles, speed, broker_port, stack)
            for number in range(1, lanes + 1)
        ]
        print(
            f"lanes: {', '.join(f'{PORT_ID}/{lane.lane_id}' for lane in started)}, "
            f"{vehicles} vehicles each (lane-agent simulate + lane-agent run)",
            file=out,
            flush=True,
        )
        done = _wait(dsn, started, vehicles, timeout_s, out)
        _show(dsn, out)
        if done:
            print(
                f"{lanes * vehicles} crossings stored; every lane's outbox emptied by the ingest "
                "watermark.",
                file=out,
            )
        return 0 if done else 1


@contextlib.contextmanager
def _directory(requested: Path | None) -> Iterator[Path]:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested
        return
    with tempfile.TemporaryDirectory(prefix="lane-central-demo-") as name:
        yield Path(name)


def _create_database(admin_dsn: str, keep: bool, stack: contextlib.ExitStack, out: TextIO) -> str:
    name = f"lane_central_demo_{uuid.uuid4().hex[:8]}"
    try:
        admin = db.connect(admin_dsn, autocommit=True, application="lane-central-demo")
    except db.DatabaseUnavailableError as error:
        raise DemoError(f"{error}; start PostgreSQL (./dev.sh central-demo does)") from error
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    if keep:
        admin.close()
        print(f"database: {name} (kept: lane-central lanes --dsn '{dsn}')", file=out, flush=True)
    else:

        def drop() -> None:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            admin.close()

        stack.callback(drop)
        print(f"database: {name} (dropped at the end)", file=out, flush=True)
    with db.connect(dsn, autocommit=True) as connection:
        migrate.upgrade(connection)
    return dsn


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_broker(directory: Path, stack: contextlib.ExitStack) -> int:
    binary = shutil.which("mosquitto") or shutil.which(
        "mosquitto", path="/usr/sbin:/usr/local/sbin"
    )
    if binary is None:
        raise DemoError("mosquitto not found: install it with `sudo apt-get install mosquitto`")
    port = _free_port()
    broker_dir = directory / "broker"
    broker_dir.mkdir(exist_ok=True)
    config = broker_dir / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        f"persistence true\npersistence_location {broker_dir}/\n"
        f"log_dest file {broker_dir / 'mosquitto.log'}\n"
    )
    process = _spawn([binary, "-c", str(config)], broker_dir / "mosquitto.out", stack)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError(f"mosquitto exited: see {broker_dir / 'mosquitto.out'}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return port
        time.sleep(0.05)
    raise DemoError(f"mosquitto did not listen on {port} within {_START_TIMEOUT_S} s")


def _spawn(command: list[str], log: Path, stack: contextlib.ExitStack) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    stack.callback(_stop, process)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start_worker(
    directory: Path, dsn: str, broker_port: int, number: int, stack: contextlib.ExitStack
) -> None:
    _spawn(
        [
            sys.executable, "-m", "central.cli", "ingest", "--dsn", dsn, "--port", str(broker_port),
            "--client-id", f"central-ingest-{number}", "--ack-interval", "0.2",
            "--log-format", "text",
        ],
        directory / f"ingest-{number}.log",
        stack,
    )  # fmt: skip


def _lane_agent(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *arguments]


def _start_lane(
    directory: Path,
    lane_id: str,
    vehicles: int,
    speed: float,
    broker_port: int,
    stack: contextlib.ExitStack,
) -> _Lane:
    lane_dir = directory / lane_id
    lane_dir.mkdir(exist_ok=True)
    rng = random.Random(lane_id)
    (lane_dir / "scenario.toml").write_text(_scenario(lane_id, vehicles, rng))
    (lane_dir / "credentials.ndjson").write_text(_credentials())
    simulator = _spawn(
        _lane_agent(
            "simulate", "--scenario", str(lane_dir / "scenario.toml"), "--speed", str(speed)
        ),
        lane_dir / "simulator.out",
        stack,
    )
    device = _first_line(lane_dir / "simulator.out", simulator)
    config = lane_dir / "lane.toml"
    config.write_text(
        f'[lane]\nport_id = "{PORT_ID}"\nlane_id = "{lane_id}"\n'
        f"[lane.correlation]\nidle_timeout_s = {max(0.5, 8.0 / speed)}\n"
        f"straggler_window_s = {min(3.0, 3.0 / speed)}\n"
        f'[reader]\ntype = "lane_controller"\ndevice = "{device}"\nping_interval_s = 0.5\nsilence_timeout_s = 3.0\n'
        '[cache]\npath = "credentials.db"\n[outbox]\npath = "outbox.db"\n'
        "[page]\nport = 0\n"  # several lanes on one computer: each its own free port
        f"[mqtt]\nport = {broker_port}\nreconnect_min_s = 0.2\nreconnect_max_s = 2.0\n"
        "status_interval_s = 2.0\n"
        '[logging]\nformat = "text"\n'
    )
    imported = subprocess.run(
        _lane_agent(
            "cache", "import", str(lane_dir / "credentials.ndjson"), "--config", str(config)
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if imported.returncode != 0:
        raise DemoError(f"lane-agent cache import for {lane_id} failed: {imported.stderr.strip()}")
    lane = _Lane(lane_id, lane_dir, simulator)
    lane.agent = _spawn(_lane_agent("run", "--config", str(config)), lane_dir / "agent.log", stack)
    return lane


def _first_line(path: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if "\n" in text:
            return text.split("\n", 1)[0].strip()
        if process.poll() is not None:
            raise DemoError(f"lane-agent simulate exited: {text.strip()}")
        time.sleep(0.05)
    raise DemoError(f"lane-agent simulate printed no device within {_START_TIMEOUT_S} s")


def _scenario(lane_id: str, vehicles: int, rng: random.Random) -> str:
    lines = [
        "[scenario]",
        f'name = "demo {lane_id}"',
        f"seed = {rng.randrange(1 << 30)}",
        f'controller_id = "SIM-{lane_id}"',
        'firmware = "1.4.2"',
    ]
    for index in range(vehicles):
        lines += [
            "",
            "[[vehicles]]",
            f"gap_s = {rng.uniform(1.0, 3.0):.1f}",
            "loop_id = 1",
            f"dwell_s = {rng.uniform(2.0, 4.0):.1f}",
            f'plate = "{rng.randint(1, 9)}DEM{rng.randint(100, 999)}"',
            'jurisdiction = "CA"',
        ]
        cards = rng.sample(KNOWN_CARDS, rng.randint(1, 2))
        if index % 4 == 3:
            cards = [UNKNOWN_CARD]
        for card in cards:
            lines += [
                "",
                "[[vehicles.cards]]",
                f'epc = "{card}"',
                f"reads = {rng.randint(4, 10)}",
                "rssi_dbm = [-66.0, -44.0]",
                "antennas = [1, 2]",
            ]
    return "\n".join(lines) + "\n"


def _credentials() -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    records = [
        {
            "ref": ref,
            "document_type": "TRUSTED_TRAVELLER_CARD",
            "program": "SENTRI",
            "status": "ACTIVE",
            "valid_from": (now - timedelta(days=365)).isoformat(),
            "valid_until": (now + timedelta(days=700)).isoformat(),
            "holder_ref": f"H-DEMO-{index:04d}",
            "vehicles": [],
        }
        for index, ref in enumerate(KNOWN_CARDS, start=1)
    ]
    return "".join(json.dumps(record) + "\n" for record in records)


def _wait(dsn: str, lanes: list[_Lane], vehicles: int, timeout_s: float, out: TextIO) -> bool:
    """Until every lane has all its crossings stored and reports an empty outbox."""
    deadline = time.monotonic() + timeout_s
    shown = -1
    with db.connect(dsn, autocommit=True) as connection:
        while time.monotonic() < deadline:
            for lane in lanes:
                if lane.agent is not None and lane.agent.poll() is not None:
                    print(
                        f"lane {lane.lane_id}: lane-agent exited ({lane.agent.returncode}); see {lane.directory / 'agent.log'}",
                        file=out,
                    )
                    return False
            row = connection.execute(
                "SELECT count(*) FILTER (WHERE acked_seq >= %(n)s AND lane_acked_seq >= %(n)s"
                " AND outbox_rows = 0), coalesce(sum(stored), 0) FROM lanes",
                {"n": vehicles},
            ).fetchone()
            assert row is not None
            emptied, stored = int(row[0]), int(row[1])  # type: ignore[call-overload]
            if stored != shown:
                print(
                    f"... {stored} of {len(lanes) * vehicles} crossings stored",
                    file=out,
                    flush=True,
                )
                shown = stored
            if emptied == len(lanes):
                return True
            time.sleep(0.25)
    print(f"timed out after {timeout_s:.0f} s; logs are in the work directory", file=out)
    return False


def _show(dsn: str, out: TextIO) -> None:
    from central.cli import format_crossings, format_lanes

    with db.connect(dsn, autocommit=True) as connection:
        print("", file=out)
        print("$ lane-central lanes", file=out)
        print(format_lanes(board.lanes(connection)), file=out)
        print("", file=out)
        print("$ lane-central crossings --limit 8", file=out)
        print(
            format_crossings(board.crossings(connection, board.CrossingFilter(limit=8))), file=out
        )
