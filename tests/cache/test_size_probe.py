"""Size probe: the storage layout stays far below the 120 bytes/record budget of the 15 M target.

Prints records/s and lookup latency for the record (run with ``-s``); asserts only the size, which
is deterministic for a seeded data set on a given SQLite version.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

from agent.cache import CredentialCache

PROBE_RECORDS = 200_000
BYTES_PER_RECORD_BUDGET = 120  # the 15-million-record target


def synthetic_records(count: int, seed: int = 20240601) -> Iterator[dict[str, object]]:
    """Realistic shapes: 96-bit EPCs, mostly active, zero to three vehicles of 5-8 characters."""
    rng = random.Random(seed)
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
    for index in range(count):
        yield {
            "ref": rng.randbytes(12).hex().upper(),
            "document_type": rng.choice(["TRUSTED_TRAVELLER_CARD"] * 8 + ["PASSPORT_CARD"]),
            "program": rng.choice(["SENTRI", "NEXUS", "GLOBAL_ENTRY", "FAST", "NONE"]),
            "status": rng.choice(["ACTIVE"] * 18 + ["SUSPENDED", "REVOKED"]),
            "valid_from": f"20{rng.randrange(19, 25)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T00:00:00Z",
            "valid_until": f"20{rng.randrange(26, 31)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}T00:00:00Z",
            "holder_ref": f"H-{index:09d}",
            "vehicles": [
                {
                    "plate": "".join(rng.choices(alphabet, k=rng.randrange(5, 9))),
                    "jurisdiction": rng.choice(["CA", "AZ", "TX", "NM", "BC", "ON", "QC", "BCN"]),
                }
                for _ in range(rng.choice([0, 1, 1, 1, 2, 2, 3]))
            ],
        }


def test_200k_records_fit_the_bytes_per_record_budget(tmp_path: Path) -> None:
    records = list(synthetic_records(PROBE_RECORDS))
    refs = [str(record["ref"]) for record in records[::10]]
    with CredentialCache.open(tmp_path / "credentials.db") as cache:
        started = time.perf_counter()
        report = cache.import_records(records, "probe")
        elapsed = time.perf_counter() - started
        stats = cache.stats()
        latencies = []
        for ref in refs:
            before = time.perf_counter_ns()
            cache.lookup(ref)
            latencies.append(time.perf_counter_ns() - before)
    latencies.sort()
    bytes_per_record = stats.file_size_bytes / stats.credentials
    print(
        f"\nsize probe: {stats.credentials} records, {stats.vehicles} vehicles,"
        f" {bytes_per_record:.1f} bytes/record, {report.records / elapsed:,.0f} records/s"
        f" (validate + upsert), lookup p50 {latencies[len(latencies) // 2] / 1000:.1f} us"
        f" p99 {latencies[int(len(latencies) * 0.99)] / 1000:.1f} us"
    )
    assert stats.credentials == PROBE_RECORDS
    assert bytes_per_record <= BYTES_PER_RECORD_BUDGET
