"""Reader throughput: an LLRP reader at full rate into the agent, journal on, and the CPU it costs.

An emulated LLRP reader (``llrp/emulator.py``, in this process) sends a burst of tag reads at an
Impinj R700's full rate (about 1,100 reads/s) for ``--seconds``, while a vehicle sits on the loop
(GPI 1 high) so a crossing is open and every read goes through correlation and the live view.
``lane-agent run`` (its own process, input journal on, ``synchronous=FULL``) reads it; its status
document (every second, on a private Mosquitto) says how many reads the LLRP family handed to the
journal; ``/proc/<pid>/stat`` gives the agent's CPU time over the burst. Measured:

* inputs journalled per second during the burst, and whether the agent kept up (the reads it
  journalled equal the reads the reader sent, none dropped by the reader for a slow host);
* the agent's CPU share on the machine's cores (target: under half a core at 1,100 reads/s).

Baseline in the same run: the input journal storing the same number of reads one transaction per
read (how every input was stored before reader families), against the batches the LLRP family
hands it, on the same disk.

    .venv/bin/python bench/bench_readers.py                  # 30 s burst, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.dev.broker import PrivateMosquitto  # noqa: E402
from agent.lane.events import TagRead  # noqa: E402
from agent.state.journal import InputJournal  # noqa: E402
from agent.state.outbox import Outbox  # noqa: E402
from llrp.emulator import LlrpReaderEmulator  # noqa: E402
from llrp.reader_model import LossReason  # noqa: E402

LANE_CLI = [sys.executable, "-m", "agent.cli"]
EPCS = [bytes.fromhex(f"E28011700000000000{index:06X}") for index in range(8)]
"""The cards of the vehicle at the booth (read over and over, as a reader does)."""


def lane_config(workdir: Path, reader_port: int, broker_port: int) -> Path:
    path = workdir / "lane.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [lane]
            port_id = "BENCH"
            lane_id = "L01"

            [reader]
            type = "llrp"
            host = "127.0.0.1"
            port = {reader_port}
            antennas = [1, 2]

            [cache]
            path = "credentials.db"

            [outbox]
            path = "outbox.db"

            [mqtt]
            host = "127.0.0.1"
            port = {broker_port}
            status_interval_s = 1.0

            [logging]
            level = "WARNING"
            format = "text"
            """
        )
    )
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class Statuses:
    """The agent's retained status documents as they arrive."""

    def __init__(self, port: int) -> None:
        self.documents: queue.Queue[dict[str, Any]] = queue.Queue()
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        self._client.on_message = lambda c, u, m: self.documents.put(json.loads(m.payload))
        self._client.connect("127.0.0.1", port)
        self._client.subscribe("lane-agent/v1/BENCH/L01/status", qos=1)
        self._client.loop_start()

    def reads_until(self, wanted: int, timeout_s: float) -> tuple[int, float]:
        """Wait until the reader section says ``wanted`` reads; the count and when it did."""
        deadline = time.monotonic() + timeout_s
        reads = 0
        while time.monotonic() < deadline:
            try:
                document = self.documents.get(timeout=0.5)
            except queue.Empty:
                continue
            reads = int(document.get("reader", {}).get("tag_reads", 0))
            if reads >= wanted:
                return reads, time.time()
        return reads, time.time()

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def journal_baseline(workdir: Path, reads: int, batch: int) -> tuple[float, float]:
    """Reads per second stored one per transaction, and in batches of ``batch``."""
    inputs = [
        TagRead(at=1.8e9 + index / 1100, epc=EPCS[index % 8].hex().upper(), antenna=1, rssi_dbm=-50)
        for index in range(reads)
    ]
    rates = []
    for size in (1, batch):
        with Outbox(workdir / f"journal-{size}.db") as outbox:
            journal = InputJournal(outbox)
            started = time.perf_counter()
            for start in range(0, reads, size):
                journal.append_many(inputs[start : start + size], None, {"base": 1.0})
            rates.append(reads / (time.perf_counter() - started))
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1100.0, help="reads per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the burst")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-readers-"))
    workdir.mkdir(parents=True, exist_ok=True)
    count = round(args.rate * args.seconds)
    print(
        f"# bench_readers {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; {count} reads at "
        f"{args.rate:g}/s, journal on (synchronous=FULL); work in {workdir}",
        flush=True,
    )
    one, batched = journal_baseline(workdir, min(count, 5000), 16)
    print(
        f"baseline: input journal, one read per transaction   {one:8.0f} reads/s\n"
        f"          input journal, batches of 16               {batched:8.0f} reads/s "
        f"({batched / one:.1f}x)",
        flush=True,
    )
    emulator = LlrpReaderEmulator(speed=1.0)
    emulator.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORT_DISABLE_TELEMETRY": "1"}
    with PrivateMosquitto(workdir) as broker:
        statuses = Statuses(broker.port)
        config = lane_config(workdir, emulator.port, broker.port)
        with (workdir / "agent.log").open("w") as log:
            agent = subprocess.Popen(
                [*LANE_CLI, "run", "--config", str(config)], cwd=workdir, env=env, stderr=log
            )
        try:
            assert emulator.wait_connected(30), "the agent did not connect to the reader"
            statuses.reads_until(0, 5.0)
            time.sleep(2.0)  # configured, reading, idle
            emulator.set_gpi(1, True)  # a vehicle at the booth: a crossing is open
            cpu_before, wall_before = cpu_seconds(agent.pid), time.monotonic()
            emulator.burst(count, args.rate, epcs=EPCS, antennas=(1, 2), rssi_dbm=(-60, -45))
            time.sleep(args.seconds)
            cpu_burst = cpu_seconds(agent.pid) - cpu_before
            wall_burst = time.monotonic() - wall_before
            reads, _ = statuses.reads_until(count, 30.0)
            overflow = sum(1 for _e, why in emulator.lost_events() if why is LossReason.OVERFLOW)
            emulator.set_gpi(1, False)
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(30)
            statuses.close()
            emulator.stop()
    share = cpu_burst / wall_burst
    print(
        f"agent, LLRP reader at {args.rate:g} reads/s for {args.seconds:g} s:\n"
        f"  reads journalled {reads} of {count} sent (dropped by the reader for a slow host: "
        f"{overflow}); {reads / wall_burst:.0f} reads/s over the burst\n"
        f"  agent CPU {cpu_burst:.1f} s in {wall_burst:.1f} s = {share:.2f} of a core "
        f"(target < 0.5; {share * 100 / (os.cpu_count() or 1):.0f} % of the machine)"
    )
    return 0 if reads >= count and overflow == 0 and share < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
