"""Central ingest with many lanes: events/s stored, lane commit -> ack watermark, faults.

One Mosquitto, a PostgreSQL cluster of the benchmark's own (initdb in a temp dir, so restarting
it disturbs nobody; ``--dsn`` uses a running server instead and skips the restart), two
``lane-central ingest`` worker processes sharing the lanes, and 500 simulated lanes in two
processes of bench/central_lanes.py — a faithful light publisher: valid crossing events, QoS 1
in seq order with the agent's in-flight window, rows held until the watermark covers them and
published again after every reconnect (see that module). Phases, one after the other, each on a
port id of its own:

1. baseline: a plain consumer — one connection, an INSERT and a commit per message, no
   validation, no watermark — with the lanes publishing as fast as their windows allow;
2. ingest, ``--write-mode insert`` (multi-row INSERT … ON CONFLICT) and 3. ``copy`` (COPY into
   a staging table, then INSERT … SELECT … ON CONFLICT), the lanes again flat out;
4. latency: the lanes at 1 000 events/s in all (2 per lane per second), commit -> watermark;
5. faults at 1 000 events/s: kill -9 an ingest worker (restarted 2 s later, as systemd would),
   restart PostgreSQL, restart the broker; then every lane must get every row confirmed, every
   seq stored once, every gap closed.

Run from the repository root (as root or the postgres user, for the private cluster)::

    nice -n 10 .venv/bin/python -m bench.bench_central             # full run (~3-8 min)
    .venv/bin/python -m bench.bench_central --quick                 # a smoke run

Throughput is the rate from the first row stored to the last (the workers' start-up is reported
beside it), read from the ingest's per-lane counters (``lanes.stored``, committed with the rows)
rather than by counting the crossings every 50 ms, which cost PostgreSQL a tenth of a core; the
row count is checked once at the end. CPU per event of the workers, PostgreSQL and the broker is
read from /proc over the same interval.

Nothing here asserts on time; the numbers are for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.dev.broker import free_loopback_port
from central import migrate
from tests.support.broker import MosquittoBroker

REPO = Path(__file__).resolve().parents[1]
PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PrivatePostgres:
    """A PostgreSQL cluster in ``directory`` on a free port, run as the postgres user."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "pgdata"
        self.port = free_loopback_port()
        self.log = directory / "postgres.log"
        directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(directory, "postgres")
        self._as_postgres(
            PG_BIN / "initdb", "-D", str(self.directory), "-A", "trust", "-U", "postgres"
        )

    def postmaster_pid(self) -> int:
        return int((self.directory / "postmaster.pid").read_text().split()[0])

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *command: str | Path) -> None:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        subprocess.run([*prefix, *map(str, command)], check=True, capture_output=True)

    def pg_ctl(self, action: str) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            PG_BIN / "pg_ctl",
            "-D",
            str(self.directory),
            "-o",
            options,
            "-l",
            str(self.log),
            "-w",
            "-m",
            "fast",
            action,
        )


def machine() -> str:
    cpu = "unknown cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    with psycopg.connect(DSN, autocommit=True) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return (
        f"{platform.node()}: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"paho-mqtt {paho.mqtt.__version__}, psycopg {psycopg.__version__}, PostgreSQL {row[0] if row else '?'}"
    )


DSN = ""


def count(query: str, *params: object) -> Any:
    with psycopg.connect(DSN, autocommit=True) as connection:
        row = connection.execute(query, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]


def stored(port_id: str) -> int:
    return int(count("SELECT count(*) FROM crossings WHERE port_id = %s", port_id))


def stored_by_ingest(port_id: str) -> int:
    """The ingest's own count, committed with the rows: reading it costs PostgreSQL a scan of
    the lanes, not of the crossings (count(*) every 50 ms takes a tenth of a core at 60 000)."""
    return int(count("SELECT coalesce(sum(stored), 0) FROM lanes WHERE port_id = %s", port_id))


class Workers:
    """``lane-central ingest`` processes sharing the lanes."""

    def __init__(self, broker: MosquittoBroker, workdir: Path, mode: str, count_: int = 2) -> None:
        self.broker, self.workdir, self.mode = broker, workdir, mode
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        for number in range(1, count_ + 1):
            self.start(number)

    def start(self, number: int) -> None:
        log = (self.workdir / f"ingest-{number}.log").open("ab")
        self.processes[number] = subprocess.Popen(
            [
                sys.executable, "-m", "central.cli", "ingest", "--dsn", DSN, "--port", str(self.broker.port),
                "--client-id", f"central-ingest-{number}", "--write-mode", self.mode,
                "--log-format", "text", "--log-level", "WARNING",
            ],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip

    def kill(self, number: int) -> None:
        self.processes[number].send_signal(signal.SIGKILL)
        self.processes[number].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def lanes(
    workdir: Path,
    broker: MosquittoBroker,
    port_id: str,
    total: int,
    *,
    rate_per_lane: float,
    duration_s: float,
    drain_s: float,
    processes: int = 2,
    events_per_lane: int | None = None,
) -> list[subprocess.Popen[bytes]]:
    started = []
    per = total // processes
    for number in range(processes):
        config = workdir / f"{port_id}-lanes-{number}.json"
        config.write_text(json.dumps({
            "broker_port": broker.port, "port_id": port_id, "first_lane": number * per + 1,
            "lanes": per, "rate_per_lane": rate_per_lane, "duration_s": duration_s,
            "drain_s": drain_s, "window": 20, "seed": number, "events_per_lane": events_per_lane,
            "published_marker": str(config.with_suffix(".published")) if events_per_lane else None,
        }))  # fmt: skip
        started.append(
            subprocess.Popen([sys.executable, "-m", "bench.central_lanes", str(config)], cwd=REPO)
        )
    return started


def lane_results(
    workdir: Path, port_id: str, processes: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    for process in processes:
        process.wait()
    merged: dict[str, Any] = {
        "committed": 0,
        "confirmed": 0,
        "unconfirmed": 0,
        "latencies": [],
        "last_seq": {},
        "reconnects": 0,
    }
    for path in sorted(workdir.glob(f"{port_id}-lanes-*.result.json")):
        result = json.loads(path.read_text())
        for key in ("committed", "confirmed", "unconfirmed", "reconnects"):
            merged[key] += result[key]
        merged["latencies"] += result["latencies"]
        merged["last_seq"].update(result["last_seq"])
    return merged


def percentiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    cuts = statistics.quantiles(values, n=100)
    return f"p50 {statistics.median(values) * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def published(workdir: Path, port_id: str, processes: int = 2, timeout_s: float = 300) -> None:
    """Until every lane process says all its events were acknowledged by the broker."""
    deadline = time.monotonic() + timeout_s
    while len(list(workdir.glob(f"{port_id}-lanes-*.published"))) < processes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{port_id}: lanes did not publish their backlog in {timeout_s} s")
        time.sleep(0.2)


class Drain:
    """How fast ``expected`` rows of ``port_id`` are stored, from now (the consumer starting).

    ``sustained_per_s`` counts from the first row stored to the last, so the consumer's start
    (a Python process importing its libraries, connecting to PostgreSQL and the broker, resuming
    its session) is not in it; ``overall_per_s`` counts from the start, ``first_row_s`` is that
    start. Workers on the 2-core machine take 1-2 s to start under load.
    """

    def __init__(
        self,
        port_id: str,
        expected: int,
        progress: Callable[[str], int] = stored,
        meter: Callable[[], dict[str, float]] | None = None,
        timeout_s: float = 600,
    ) -> None:
        start = time.monotonic()
        first_at: float | None = None
        first = 0
        cpu_first: dict[str, float] = {}
        while (done := progress(port_id)) < expected:
            now = time.monotonic()
            if now - start > timeout_s:
                raise RuntimeError(f"{port_id}: {done} of {expected} stored after {timeout_s} s")
            if first_at is None and done > 0:
                first_at, first = now, done
                cpu_first = meter() if meter else {}
            time.sleep(0.05)
        end = time.monotonic()
        cpu_end = meter() if meter and cpu_first else {}
        self.cpu_us_per_event = {
            who: round((cpu_end[who] - cpu_first[who]) / max(expected - first, 1) * 1e6)
            for who in cpu_end
        }
        """CPU (user + system) per event stored, between the first row and the last."""
        if stored(port_id) != expected:
            raise RuntimeError(f"{port_id}: {stored(port_id)} rows, {expected} expected")
        if first_at is None:
            first_at, first = end, expected
        self.first_row_s = first_at - start
        self.overall_per_s = expected / (end - start)
        self.sustained_per_s = (
            (expected - first) / max(end - first_at, 1e-9)
            if first < expected
            else self.overall_per_s
        )

    def __str__(self) -> str:
        cpu = ", ".join(f"{who} {us} us" for who, us in self.cpu_us_per_event.items())
        return (
            f"{self.sustained_per_s:.0f} events/s stored sustained (first row to last; "
            f"{self.overall_per_s:.0f}/s counting the {self.first_row_s:.1f} s to the first row)"
            + (f"; CPU per event: {cpu}" if cpu else "")
        )


_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def postgres_cpu_seconds(postmaster: int) -> float:
    """The postmaster and every process it started (backends, WAL writer, checkpointer...)."""
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) * _TICK_S
    return total


def meter_for(
    workers: Workers, postgres: PrivatePostgres | None, broker: MosquittoBroker
) -> Callable[[], dict[str, float]]:
    """CPU seconds so far of the workers, PostgreSQL (the private cluster) and the broker."""

    def meter() -> dict[str, float]:
        result = {"workers": sum(cpu_seconds(p.pid) for p in workers.processes.values())}
        if postgres is not None:
            result["postgres"] = postgres_cpu_seconds(postgres.postmaster_pid())
        process = getattr(broker, "_process", None)
        if process is not None:
            result["broker"] = cpu_seconds(process.pid)
        return result

    return meter


def sustained(port_id: str, duration_s: float, warmup_s: float) -> float:
    """Rows stored per second after the warm-up, over the rest of the publishing window."""
    time.sleep(warmup_s)
    first, at = stored(port_id), time.monotonic()
    time.sleep(duration_s - warmup_s)
    return (stored(port_id) - first) / (time.monotonic() - at)


def baseline_consumer(
    broker: MosquittoBroker, port_id: str, stop: threading.Event
) -> threading.Thread:
    """One connection, INSERT + commit per message in the paho callback, auto-acknowledged."""
    connection = psycopg.connect(DSN, autocommit=True)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="baseline", protocol=MQTTProtocolVersion.MQTTv5
    )

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        event = json.loads(message.payload)
        connection.execute(
            "INSERT INTO crossings (event_id, closed_at, port_id, lane_id, seq, opened_at, committed_at,"
            " schema_id, recommendation, reasons, card_refs, plate_text, payload)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (event["event_id"], event["closed_at"], event["port_id"], event["lane_id"], event["seq"],
             event["opened_at"], event["committed_at"], event["schema"], event["recommendation"],
             event["reasons"], [card["ref"] for card in event["cards"]],
             (event.get("plate") or {}).get("text"), message.payload.decode()),
        )  # fmt: skip

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(f"lane-agent/v1/{port_id}/+/crossing", qos=1)
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600  # the broker queues for it while it is away
    client.connect(broker.host, broker.port, clean_start=False, properties=properties)

    def run() -> None:
        while not stop.is_set():
            client.loop(0.1)
        client.disconnect()
        connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def main() -> None:
    global DSN
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short phases, 100 lanes")
    parser.add_argument(
        "--dsn", default=None, help="use this server (admin DSN) instead of a private cluster"
    )
    parser.add_argument("--lanes", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = parser.parse_args()
    total = args.lanes or (100 if args.quick else 500)
    latency_s = 10.0 if args.quick else 30.0
    workdir = Path(tempfile.mkdtemp(prefix="bench-central-"))
    os.chmod(workdir, 0o755)  # noqa: S103 - the postgres user runs the private cluster in it
    report: dict[str, Any] = {"lanes": total}
    with ExitStack() as stack:
        postgres: PrivatePostgres | None = None
        if args.dsn is None:
            postgres = PrivatePostgres(workdir / "pg")
            postgres.pg_ctl("start")
            stack.callback(postgres.pg_ctl, "stop")
            DSN = postgres.dsn
        else:
            DSN = args.dsn
        with psycopg.connect(DSN, autocommit=True) as connection:
            migrate.upgrade(connection)
        broker = MosquittoBroker(workdir / "broker", extra_config="autosave_interval 5\n")
        broker.start()
        stack.callback(broker.stop)
        print(f"machine: {machine()}; {total} lanes; work directory {workdir}", flush=True)

        backlog = 40 if args.quick else 120  # events per lane, queued at the broker first
        expected = backlog * total

        # 1. baseline: the same backlog drained by the plain consumer ------------------------------
        stop = threading.Event()
        consumer = baseline_consumer(broker, "BASE", stop)
        time.sleep(0.5)
        stop.set()
        consumer.join(10)  # its persistent session now queues for it
        publishers = lanes(
            workdir,
            broker,
            "BASE",
            total,
            rate_per_lane=0,
            duration_s=600,
            drain_s=0,
            events_per_lane=backlog,
        )
        published(workdir, "BASE")
        for process in publishers:
            process.terminate()  # no watermark ever comes from the plain consumer
        stop = threading.Event()
        consumer = baseline_consumer(broker, "BASE", stop)
        drain = Drain("BASE", expected)
        report["baseline_per_s"] = drain.sustained_per_s
        report["baseline_overall_per_s"] = drain.overall_per_s
        stop.set()
        consumer.join(10)
        print(
            f"baseline (one connection, insert + commit per message): {drain} ({expected} queued)",
            flush=True,
        )

        # 2., 3. the backlog drained by two ingest workers, each write mode ------------------------
        for mode, port_id in (("insert", "INS"), ("copy", "CPY")):
            workers = Workers(broker, workdir, mode)
            time.sleep(2.0)
            workers.stop()  # their sessions (and shared subscriptions) stay with the broker
            publishers = lanes(
                workdir,
                broker,
                port_id,
                total,
                rate_per_lane=0,
                duration_s=600,
                drain_s=600,
                events_per_lane=backlog,
            )
            published(workdir, port_id)
            workers = Workers(broker, workdir, mode)
            load = os.getloadavg()[0]
            drain = Drain(port_id, expected, stored_by_ingest, meter_for(workers, postgres, broker))
            result = lane_results(workdir, port_id, publishers)
            workers.stop()
            report[f"{mode}_per_s"] = drain.sustained_per_s
            report[f"{mode}_overall_per_s"] = drain.overall_per_s
            report[f"{mode}_first_row_s"] = drain.first_row_s
            report[f"{mode}_cpu_us_per_event"] = drain.cpu_us_per_event
            report[f"{mode}_unconfirmed"] = result["unconfirmed"]
            report[f"{mode}_load"] = f"{load:.2f} -> {os.getloadavg()[0]:.2f}"
            print(
                f"ingest {mode}: {drain} draining {expected} queued events (2 workers, load "
                f"{report[f'{mode}_load']}); {result['unconfirmed']} rows left unconfirmed at the lanes",
                flush=True,
            )

        # 4. latency at 1000 events/s ---------------------------------------------------------------
        chosen = "insert" if report["insert_per_s"] >= report["copy_per_s"] else "copy"
        report["chosen_mode"] = chosen
        workers = Workers(broker, workdir, chosen)
        time.sleep(2.0)
        per_lane = 1000.0 / total
        publishers = lanes(
            workdir, broker, "LAT", total, rate_per_lane=per_lane, duration_s=latency_s, drain_s=30
        )
        result = lane_results(workdir, "LAT", publishers)
        report["latency"] = percentiles(result["latencies"])
        print(
            f"latency at 1000 events/s ({chosen}): lane commit -> ack watermark {report['latency']} over {result['confirmed']} events; {result['unconfirmed']} unconfirmed",
            flush=True,
        )

        # 5. faults at 1000 events/s -------------------------------------------------------------------
        fault_s = 20.0 if args.quick else 45.0
        publishers = lanes(
            workdir, broker, "FLT", total, rate_per_lane=per_lane, duration_s=fault_s, drain_s=120
        )
        step = fault_s / 4.5
        time.sleep(step)
        workers.kill(1)
        print(f"  t={step:.0f} s: kill -9 ingest worker 1 (restarted 2 s later)", flush=True)
        time.sleep(2.0)
        workers.start(1)
        time.sleep(step - 2.0)
        if postgres is not None:
            postgres.pg_ctl("restart")
            print(f"  t={2 * step:.0f} s: PostgreSQL restarted", flush=True)
        else:
            print(
                "  PostgreSQL restart skipped (--dsn: not the benchmark's own server)", flush=True
            )
        time.sleep(step)
        broker.restart()
        print(f"  t={3 * step:.0f} s: broker restarted", flush=True)
        # Mosquitto 2.0 does not restore shared subscriptions at a restart: what lanes published
        # before the workers subscribed again is PUBACKed and dropped, and stays in the lanes'
        # outboxes above a watermark held by the gap until the lane's next reconnect.
        time.sleep(fault_s - 3 * step + 20.0)
        stranded_gaps = count(
            "SELECT count(*) FROM gaps WHERE port_id = 'FLT' AND closed_at IS NULL"
        )
        stranded_lanes = count(
            "SELECT count(DISTINCT lane_id) FROM gaps WHERE port_id = 'FLT' AND closed_at IS NULL"
        )
        stranded_events = int(
            count(
                "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM gaps WHERE port_id = 'FLT' AND closed_at IS NULL"
            )
        )
        print(
            f"  {fault_s + 20:.0f} s: {stranded_gaps} gaps open on {stranded_lanes} lanes ({stranded_events} events held in lane outboxes); the lanes reconnect",
            flush=True,
        )
        for process in publishers:
            process.send_signal(signal.SIGUSR1)
        result = lane_results(workdir, "FLT", publishers)
        time.sleep(2.0)
        workers.stop()
        expected = sum(result["last_seq"].values())
        distinct = count(
            "SELECT count(*) FROM (SELECT DISTINCT lane_id, seq FROM crossings WHERE port_id = 'FLT') s"
        )
        rows = stored("FLT")
        lanes_behind = count(
            "SELECT count(*) FROM lanes WHERE port_id = 'FLT' AND acked_seq <> highest_seq"
        )
        open_gaps = count("SELECT count(*) FROM gaps WHERE port_id = 'FLT' AND closed_at IS NULL")
        gaps_total = count("SELECT count(*) FROM gaps WHERE port_id = 'FLT'")
        duplicates = int(
            count("SELECT coalesce(sum(duplicates), 0) FROM lanes WHERE port_id = 'FLT'")
        )
        quarantined = count("SELECT count(*) FROM quarantine")
        wrong = sum(
            1
            for lane, seq in result["last_seq"].items()
            if count("SELECT acked_seq FROM lanes WHERE port_id = 'FLT' AND lane_id = %s", lane)
            != seq
        )
        report["faults"] = {
            "committed_by_lanes": expected, "stored_rows": rows, "distinct_seqs": distinct,
            "lost": expected - distinct, "unconfirmed_at_lanes": result["unconfirmed"],
            "lanes_watermark_not_at_last_seq": wrong, "lanes_acked_below_highest": lanes_behind,
            "gaps_opened": gaps_total, "gaps_open": open_gaps,
            "stranded_before_lane_reconnect": {"gaps": stranded_gaps, "lanes": stranded_lanes, "events": stranded_events}, "duplicates_dropped": duplicates,
            "quarantined": quarantined, "lane_reconnects": result["reconnects"],
            "latency": percentiles(result["latencies"]),
        }  # fmt: skip
        print(f"faults: {json.dumps(report['faults'])}", flush=True)
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
