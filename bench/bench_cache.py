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
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.cache import CredentialCache
from agent.cache.bundle import BundleLimits, Kind, Scope, decode_record, write_bundle
from agent.cache.install import SNAPSHOT_PAGE_SIZE, WORKER_NICE, CacheInstaller
from agent.cache.store import create_schema
from agent.cache.trust import TrustStore, trust_document

PORT, LANE = "BENCH-1", "L01"
STATUSES = ("ACTIVE",) * 18 + ("SUSPENDED", "REVOKED")
PROGRAMS = ("SENTRI", "NEXUS", "GLOBAL_ENTRY", "FAST")


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
    import sqlite_utils

    create_schema(sqlite_utils.Database(connection))
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
            installer = CacheInstaller(cache_path, trust, port_id=PORT, lane_id=LANE,
                                       limits=BundleLimits(16 << 30, 256 << 20))  # fmt: skip
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
    with CredentialCache.open(cache_path) as cache:
        time_lookups(cache, hits[: args.lookups // 10])  # warm the page cache
        print(f"lookup hits:   {percentiles(time_lookups(cache, hits))}")
        print(f"lookup misses: {percentiles(time_lookups(cache, misses))}")

        installer = CacheInstaller(cache_path, trust, port_id=PORT, lane_id=LANE,
                                   limits=BundleLimits(16 << 30, 256 << 20))  # fmt: skip
        version = installer.state().bundle_version or 1
        runs = [
            (nice, paced)
            for _ in range(args.delta_runs)
            for nice in args.worker_nice
            for paced in (False, True)
        ]
        for nice, paced in runs:
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
            took, during = delta_with_lookups(installer, delta, cache, hits, paced=paced)
            # The baseline: the same loop for as long, with no install running.
            quiet = lookups_for(cache, hits, took[0] + took[1], paced=paced)
            mode = "one every 1 ms (a lane thread)" if paced else "back to back (worst case)"
            print(f"delta of {args.delta:,} changes (worker nice +{nice} over this process's "
                  f"{os.nice(0)}) visible in {took[0]:.2f} s, then WAL checkpoint "
                  f"{took[1]:.2f} s; load average {os.getloadavg()[0]:.1f}; "
                  f"lookups {mode}:")  # fmt: skip
            print(f"  during it ({len(during):,}): {percentiles(during)}; > 5 ms: "
                  f"{over_5ms(during)}")  # fmt: skip
            print(f"  no install ({len(quiet):,}): {percentiles(quiet)}; > 5 ms: "
                  f"{over_5ms(quiet)}")  # fmt: skip
            delta.unlink()


def over_5ms(samples_ns: list[int]) -> int:
    return sum(1 for sample in samples_ns if sample > 5_000_000)


def lookups_for(
    cache: CredentialCache, refs: list[str], seconds: float, *, paced: bool
) -> list[int]:
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
) -> list[int]:
    """Look refs up until ``done``: back to back, or one per millisecond as a lane thread would."""
    samples: list[int] = []
    clock = time.perf_counter_ns
    index = 0
    while not done.is_set():
        started_ns = clock()
        cache.lookup(refs[index % len(refs)])
        samples.append(clock() - started_ns)
        index += 1
        if paced:
            done.wait(0.001)
    return samples


def delta_with_lookups(
    installer: CacheInstaller,
    delta: Path,
    cache: CredentialCache,
    refs: list[str],
    *,
    paced: bool,
) -> tuple[tuple[float, float], list[int]]:
    """Apply ``delta`` (in the install worker, as the agent does) while this thread looks up.

    Returns (seconds until visible, seconds of WAL checkpoint after) and the lookup latencies,
    taken until the worker has finished, checkpoint included.
    """
    done = threading.Event()
    took: list[float] = []

    def apply() -> None:
        try:
            report = installer.install_file(delta)
            took.extend((report.duration_s, report.checkpoint_s))
        finally:
            done.set()

    worker = threading.Thread(target=apply)
    worker.start()
    during = lookup_loop(cache, refs, done, paced=paced)
    worker.join()
    return (took[0], took[1]), during


if __name__ == "__main__":
    main()
