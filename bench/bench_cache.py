"""Credential cache benchmark: signed snapshot import, size, lookups, lookups during a delta.

    nice -n 10 .venv/bin/python bench/bench_cache.py --records 15000000

Prints the machine, then medians over ``--repeat`` runs where a figure is a rate, and a baseline
measured in the same run: a plain ``sqlite3`` ``executemany`` load of the same rows (already
decoded, sorted, into the same WITHOUT ROWID table, journal off) — the floor the verified path is
compared against.

Deltas are applied the way the agent applies them (``install_file``: the install worker, at
its nice) while this process looks cards up on the connection the agent would use, back to back
and one per millisecond. Each delta is followed by its baseline: the same lookup loop, for as
long, with no install running, so a figure "during a delta" is always read against the machine's
own floor at that moment (on a shared 2-core VM the paced floor alone is far above the back-to-back
one). Nothing here asserts: the figures go to BENCHMARKS.md with this command.

Deltas are measured with the cache file locked in memory (``cache.lock_in_memory``, as a lane
runs: this process locks it with :class:`agent.cache.resident.ResidentCache`) and, for
comparison, without: the lock released and the file's pages dropped from the page cache
(``posix_fadvise(DONTNEED)``) before each such delta, then the same warm-up lookups as at the
start. That stands in for what this VM's host does to an idle file between deltas minutes apart
(it keeps only part of a 1 GB file cached); the residency before each delta is printed.

Two figures say where a slow lookup comes from: the machine's own pauses (a tight loop that only
reads the clock, before and after the deltas), and the share of lookups over 50 µs in each phase
of a delta (until it is visible; the WAL checkpoint after) against the no-install loop.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.cache import CredentialCache
from agent.cache.bundle import BundleLimits, Kind, Scope, decode_record, write_bundle
from agent.cache.install import SNAPSHOT_PAGE_SIZE, WORKER_NICE, CacheInstaller, InstallReport
from agent.cache.resident import ResidentCache
from agent.cache.store import create_schema
from agent.cache.trust import TrustStore, trust_document

PORT, LANE = "BENCH-1", "L01"
STATUSES = ("ACTIVE",) * 18 + ("SUSPENDED", "REVOKED")
PROGRAMS = ("SENTRI", "NEXUS", "GLOBAL_ENTRY", "FAST")
SLOW_NS = 50_000
"""The lookup target's p99: the share of lookups over it, by phase of a delta, says where a
p99 above it comes from."""


def ref(number: int) -> str:
    """Refs ascend with ``number`` and leave odd numbers free for misses."""
    return f"E2801160{number * 2:016X}"


def line(number: int, rng: random.Random) -> str:
    vehicles = ";".join(
        f"{rng.choice(('CA', 'BC', 'TX', 'NY'))}:{rng.randrange(36**6):X}"[:13]
        for _ in range(rng.choice((0, 1, 1, 1, 2)))
    )
    return "\t".join(
        (
            ref(number),
            "TRUSTED_TRAVELLER_CARD",
            rng.choice(PROGRAMS),
            rng.choice(STATUSES),
            str(1_600_000_000 + rng.randrange(10**8)),
            str(1_800_000_000 + rng.randrange(10**8)),
            f"H-{rng.randrange(10**12):012d}",
            vehicles,
        )
    )


def lines(count: int, seed: int = 1) -> Iterator[str]:
    rng = random.Random(seed)
    return (line(n, rng) for n in range(count))


def baseline_load(path: Path, count: int) -> float:
    """Plain executemany of the same rows, decoded beforehand in chunks; returns rows/s."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    connection.execute("PRAGMA cache_size = -262144")
    connection.execute(f"PRAGMA page_size = {SNAPSHOT_PAGE_SIZE}")  # the same file layout
    create_schema(connection)
    insert = "INSERT INTO credential VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    elapsed = 0.0
    connection.execute("BEGIN")
    chunk: list[str] = []
    source = lines(count)
    while True:
        chunk = [text for _, text in zip(range(100_000), source, strict=False)]
        if not chunk:
            break
        rows = [decode_record(text, 0) for text in chunk]
        started = time.perf_counter()
        connection.executemany(insert, rows)
        elapsed += time.perf_counter() - started
    started = time.perf_counter()
    connection.execute("COMMIT")
    elapsed += time.perf_counter() - started
    connection.close()
    return count / elapsed


def percentiles(samples_ns: list[int]) -> str:
    ordered = sorted(samples_ns)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000

    return f"p50 {at(0.5):.1f} µs  p99 {at(0.99):.1f} µs  max {ordered[-1] / 1000:.1f} µs"


def time_lookups(cache: CredentialCache, refs: list[str]) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for wanted in refs:
        started = clock()
        cache.lookup(wanted)
        samples.append(clock() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--delta", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument(
        "--repeat", type=int, default=1, help="Snapshot imports to take the median of."
    )
    parser.add_argument(
        "--delta-runs",
        type=int,
        default=2,
        help="Deltas per lookup mode (back to back, paced) and worker nice.",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        nargs="+",
        default=[WORKER_NICE],
        help="Nice increments of the install worker to measure deltas with (default: the agent's).",
    )
    parser.add_argument(
        "--lock-in-memory",
        choices=("on", "off"),
        nargs="+",
        default=["on", "off"],
        help="Measure deltas with the cache file locked in memory (the lane's default) and/or "
        "without (pages dropped before each delta).",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--reuse-cache",
        action="store_true",
        help="Skip build, baseline and import: measure lookups and deltas on WORKDIR/lane-0.",
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cache-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"records: {args.records:,}  delta: {args.delta:,}  lookups: {args.lookups:,}  workdir: {workdir}"
    )

    keys = [Ed25519PrivateKey.generate() for _ in range(2)]
    trust = TrustStore.from_document(
        trust_document(1, 2, [(k.public_key(), False) for k in keys]), source="bench"
    )
    now = int(time.time())
    scope = Scope(PORT)

    cache_path = workdir / "lane-0" / "credentials.db"
    if not (args.reuse_cache and cache_path.exists()):
        started = time.perf_counter()
        snapshot = workdir / "snapshot.bundle"
        write_bundle(snapshot, kind=Kind.SNAPSHOT, version=1, lines=lines(args.records), scope=scope,
                     signers=keys, created_at=now, expires_at=now + 86400)  # fmt: skip
        print(f"build snapshot bundle (central side): {time.perf_counter() - started:.1f} s, "
              f"{snapshot.stat().st_size / args.records:.1f} B/record compressed")  # fmt: skip

        baseline_path = workdir / "baseline.db"
        baseline_path.unlink(missing_ok=True)
        baseline_rate = baseline_load(baseline_path, args.records)
        baseline_size = baseline_path.stat().st_size
        baseline_path.unlink()
        print(
            f"baseline plain executemany: {baseline_rate:,.0f} records/s, {baseline_size / args.records:.1f} B/record"
        )

        rates = []
        for attempt in range(args.repeat):
            lane_dir = workdir / f"lane-{attempt}"
            lane_dir.mkdir(exist_ok=True)
            cache_path = lane_dir / "credentials.db"
            installer = bench_installer(cache_path, trust)
            started = time.perf_counter()
            installer.install_file(snapshot)
            rates.append(args.records / (time.perf_counter() - started))
        size = cache_path.resolve().stat().st_size
        print(f"signed snapshot import (verify + decode + load + swap): median {statistics.median(rates):,.0f} "
              f"records/s over {len(rates)} run(s); {statistics.median(rates) / baseline_rate:.2f}x baseline")  # fmt: skip
        print(f"database size: {size / args.records:.1f} B/record ({size / 1e9:.2f} GB)")

    rng = random.Random(7)
    hits = [ref(rng.randrange(args.records)) for _ in range(args.lookups)]
    misses = [f"E2801160{rng.randrange(args.records) * 2 + 1:016X}" for _ in range(args.lookups)]
    # Opened as the agent opens it (agent.service): read-write, the connection's own settings.
    residency = ResidentCache(enabled=True)
    with CredentialCache.open(cache_path) as cache:
        if "on" in args.lock_in_memory:
            lock_in_memory(residency, cache)
        time_lookups(cache, hits[: args.lookups // 10])  # warm the page cache
        print(f"lookup hits:   {percentiles(time_lookups(cache, hits))}")
        print(f"lookup misses: {percentiles(time_lookups(cache, misses))}")
        print(f"machine pauses: {machine_pauses(3.0)}")

        installer = bench_installer(cache_path, trust)
        version = installer.state().bundle_version or 1
        runs = [
            (locked, nice, paced)
            for _ in range(args.delta_runs)
            for locked in args.lock_in_memory
            for nice in args.worker_nice
            for paced in (False, True)
        ]
        for locked, nice, paced in runs:
            if locked == "on":
                lock_in_memory(residency, cache)
            else:
                residency.release()
                drop_from_page_cache(cache.current_file)
                time_lookups(cache, hits[: args.lookups // 10])  # the same warm-up as at start
            installer.worker_nice = nice
            version += 1
            delta_rng = random.Random(version)
            delta_lines = [
                "U\t" + line(number, delta_rng)
                for number in sorted(delta_rng.sample(range(args.records), args.delta))
            ]
            delta = workdir / f"delta-{version}.bundle"
            write_bundle(delta, kind=Kind.DELTA, version=version, base_version=version - 1,
                         lines=delta_lines, scope=scope, signers=keys, created_at=now,
                         expires_at=now + 86400)  # fmt: skip
            resident_before = residency_text(cache)
            timing, during = delta_with_lookups(installer, delta, cache, hits, paced=paced)
            # The baseline: the same loop for as long, with no install running.
            quiet = lookups_for(cache, hits, timing.visible_s + timing.checkpoint_s, paced=paced)
            mode = "one every 1 ms (a lane thread)" if paced else "back to back (worst case)"
            print(f"[lock_in_memory {locked}; before the delta {resident_before}] "
                  f"delta of {args.delta:,} changes (worker nice +{nice} over this process's "
                  f"{os.nice(0)}) visible in {timing.visible_s:.2f} s, then WAL checkpoint "
                  f"{timing.checkpoint_s:.2f} s; load average {os.getloadavg()[0]:.1f}; "
                  f"lookups {mode}:")  # fmt: skip
            print(f"  during it ({len(during.latencies_ns):,}): "
                  f"{percentiles(during.latencies_ns)}; > 5 ms: {over_5ms(during)}")  # fmt: skip
            print(f"  no install ({len(quiet.latencies_ns):,}): "
                  f"{percentiles(quiet.latencies_ns)}; > 5 ms: {over_5ms(quiet)}")  # fmt: skip
            print(f"  over {SLOW_NS // 1000} µs: until visible "
                  f"{during.slow_share(end_ns=timing.visible_ns)}, from then to the end (checkpoint) "
                  f"{during.slow_share(timing.visible_ns)}; no install {quiet.slow_share()}")  # fmt: skip
            delta.unlink()
        print(f"machine pauses after the deltas: {machine_pauses(3.0)}")
        residency.release()


def machine_pauses(seconds: float) -> str:
    """How often, and for how long, a running thread here loses its CPU with nothing else to do.

    A tight loop reads the clock and records every step over 5 µs: timer ticks, interrupts and,
    on a VM, the host taking the core. A lookup of ``d`` µs is hit by one with probability about
    ``rate * d``; once that passes 1 % the pauses, not the cache, set the lookups' p99.
    """
    clock = time.perf_counter_ns
    pauses: list[int] = []
    end = clock() + int(seconds * 1e9)
    previous = clock()
    while previous < end:
        now = clock()
        if now - previous > 5_000:
            pauses.append(now - previous)
        previous = now
    if not pauses:
        return "none over 5 µs"
    ordered = sorted(pauses)
    return (f"{len(pauses) / seconds:.0f}/s over 5 µs, median {statistics.median(ordered) / 1000:.1f} µs, "
            f"p90 {ordered[int(0.9 * len(ordered))] / 1000:.1f} µs, max {ordered[-1] / 1000:.1f} µs")  # fmt: skip


def bench_installer(cache_path: Path, trust: TrustStore) -> CacheInstaller:
    """The installer of the bench's lane, with limits far above any bundle built here."""
    return CacheInstaller(
        cache_path, trust, port_id=PORT, lane_id=LANE, limits=BundleLimits(16 << 30, 256 << 20)
    )


def lock_in_memory(residency: ResidentCache, cache: CredentialCache) -> None:
    started = time.perf_counter()
    if residency.follow(cache.current_file):
        print(f"cache file locked in memory in {time.perf_counter() - started:.2f} s: "
              f"{residency.status().locked_bytes / 1e6:.0f} MB")  # fmt: skip
    else:
        print(f"cache file NOT locked in memory: {residency.status().error}")


def drop_from_page_cache(file: Path) -> None:
    """Ask the kernel to drop the file's cached pages (only clean, unlocked ones go).

    From a child process: closing a descriptor of the file here would cancel the POSIX locks
    this process's SQLite connection holds on it.
    """
    code = "import os, sys; os.posix_fadvise(os.open(sys.argv[1], os.O_RDONLY), 0, 0, 4)"
    subprocess.run([sys.executable, "-c", code, str(file)], check=True)  # 4: POSIX_FADV_DONTNEED


def residency_text(cache: CredentialCache) -> str:
    """How much of the file is in the page cache (util-linux fincore), for the record."""
    fincore = shutil.which("fincore")
    if fincore is None:
        return "page-cache residency unknown (no fincore)"
    out = subprocess.run([fincore, "-b", "-n", "-o", "RES,SIZE", str(cache.current_file)],
                         capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    if len(out) != 2:
        return "page-cache residency unknown"
    return f"{int(out[0]) / 1e6:.0f} of {int(out[1]) / 1e6:.0f} MB in the page cache"


def over_5ms(run: LookupRun) -> str:
    """How many lookups took over 5 ms, and how many of those spent most of it runnable."""
    slow = [
        (took, wait)
        for took, wait in zip(run.latencies_ns, run.waits_ns, strict=True)
        if took > 5e6
    ]
    cpu = sum(1 for took, wait in slow if wait >= took / 2)
    return f"{len(slow)} ({cpu} of them waiting for a CPU most of the time)"


@dataclass
class LookupRun:
    """One lookup loop: each lookup's latency, run-queue wait and start (``perf_counter_ns``)."""

    latencies_ns: list[int] = field(default_factory=list)
    waits_ns: list[int] = field(default_factory=list)
    started_ns: list[int] = field(default_factory=list)

    def slow_share(self, start_ns: int = 0, end_ns: int | None = None) -> str:
        """The share of lookups over SLOW_NS among those started in [start_ns, end_ns)."""
        window = [
            took
            for took, started in zip(self.latencies_ns, self.started_ns, strict=True)
            if started >= start_ns and (end_ns is None or started < end_ns)
        ]
        if not window:
            return "no lookups"
        slow = sum(1 for took in window if took > SLOW_NS)
        return f"{100 * slow / len(window):.2f} % of {len(window):,}"


def lookups_for(
    cache: CredentialCache, refs: list[str], seconds: float, *, paced: bool
) -> LookupRun:
    """The lookup loop of :func:`delta_with_lookups` for ``seconds``, with no install running."""
    done = threading.Event()
    timer = threading.Timer(seconds, done.set)
    timer.start()
    try:
        return lookup_loop(cache, refs, done, paced=paced)
    finally:
        timer.cancel()


def lookup_loop(
    cache: CredentialCache, refs: list[str], done: threading.Event, *, paced: bool
) -> LookupRun:
    """Look refs up until ``done``: back to back, or one per millisecond as a lane thread would.

    Records each lookup's latency and the time this thread spent runnable but not running
    meanwhile (its run-queue wait, from ``/proc/thread-self/schedstat``, read outside the timed
    part): a slow lookup that waited for a CPU is the machine's load, one that did not waited
    for something else (the disk, an interrupt).
    """
    run = LookupRun()
    clock = time.perf_counter_ns
    index = 0
    schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    try:
        while not done.is_set():
            waited_ns = int(os.pread(schedstat, 128, 0).split()[1])
            started_ns = clock()
            cache.lookup(refs[index % len(refs)])
            run.latencies_ns.append(clock() - started_ns)
            run.waits_ns.append(int(os.pread(schedstat, 128, 0).split()[1]) - waited_ns)
            run.started_ns.append(started_ns)
            index += 1
            if paced:
                done.wait(0.001)
    finally:
        os.close(schedstat)
    return run


@dataclass(frozen=True)
class DeltaTiming:
    """How long a delta took to become visible and to checkpoint, and when it became visible.

    ``visible_ns`` is the request's start plus the report's ``duration_s`` on this process's
    ``perf_counter_ns`` clock: the worker's phases placed on the lookups' timeline.
    """

    visible_s: float
    checkpoint_s: float
    visible_ns: int


def delta_with_lookups(
    installer: CacheInstaller,
    delta: Path,
    cache: CredentialCache,
    refs: list[str],
    *,
    paced: bool,
) -> tuple[DeltaTiming, LookupRun]:
    """Apply ``delta`` (in the install worker, as the agent does) while this thread looks up.

    Lookups are taken until the worker has finished, WAL checkpoint included.
    """
    done = threading.Event()
    reports: list[InstallReport] = []

    def apply() -> None:
        try:
            reports.append(installer.install_file(delta))
        finally:
            done.set()

    worker = threading.Thread(target=apply)
    requested_ns = time.perf_counter_ns()
    worker.start()
    during = lookup_loop(cache, refs, done, paced=paced)
    worker.join()
    report = reports[0]
    timing = DeltaTiming(
        visible_s=report.duration_s,
        checkpoint_s=report.checkpoint_s,
        visible_ns=requested_ns + int(report.duration_s * 1e9),
    )
    return timing, during


if __name__ == "__main__":
    main()
