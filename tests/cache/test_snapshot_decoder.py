"""Snapshots are decoded by a second process while the install worker writes the rows.

The worker forks a decoder (``agent.cache.decoder``) so that decoding and SQLite's inserts run on
two cores. What the lane sees must not change: the same rows, the same refusals with the same
details, and a cache left as it was when either process dies.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.cache import CredentialCache, decoder, install
from agent.cache.bundle import (
    BundleRefusedError,
    Kind,
    RefusalReason,
)
from agent.cache.install import InstallWorkerError
from tests.cache import failing_worker
from tests.cache.kit import (
    Central,
    fingerprint,
    installer_for,
    record_line,
    ref,
)

RECORDS = 5 * decoder.ROWS_PER_FRAME + 17
"""Enough records for several frames and a short last one."""


def snapshot_2(central: Central, bad_line: int | None = None) -> bytes:
    lines = [record_line(n, "SUSPENDED" if n % 7 == 0 else "ACTIVE") for n in range(1, RECORDS + 1)]
    if bad_line is not None:
        lines[bad_line - 1] = lines[bad_line - 1].replace("SENTRI", "NO_SUCH_PROGRAM")
    return central.bundle(Kind.SNAPSHOT, 2, lines)


def test_a_snapshot_of_many_frames_installs_every_record_in_order(
    snapshot_1_path: Path, central: Central
) -> None:
    report = installer_for(snapshot_1_path, central).install_bytes(
        snapshot_2(central), source="mqtt"
    )
    assert (report.records, report.changed) == (RECORDS, RECORDS)
    with CredentialCache.open(snapshot_1_path, read_only=True) as cache:
        for number in (1, decoder.ROWS_PER_FRAME, decoder.ROWS_PER_FRAME + 1, RECORDS):
            found = cache.lookup(ref(number))
            assert found is not None
            assert found.holder_ref == f"H-{number}"
            assert found.status.value == ("SUSPENDED" if number % 7 == 0 else "ACTIVE")
        assert cache.lookup(ref(RECORDS + 1)) is None


def test_a_bad_record_in_a_later_frame_is_refused_by_line_number_and_changes_nothing(
    snapshot_1_path: Path, central: Central
) -> None:
    before = fingerprint(snapshot_1_path)
    bad = 3 * decoder.ROWS_PER_FRAME + 5
    with pytest.raises(BundleRefusedError) as refused:
        installer_for(snapshot_1_path, central).install_bytes(
            snapshot_2(central, bad_line=bad), source="mqtt"
        )
    assert refused.value.reason is RefusalReason.INVALID_RECORD
    assert refused.value.detail.startswith(f"line {bad}:")
    assert fingerprint(snapshot_1_path) == before


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        ("kill-decoder", "snapshot decoder process ended"),
        ("decoder-error", "snapshot decoder failed: RuntimeError: decoder test failure"),
    ],
)
def test_a_decoder_that_dies_or_fails_after_rows_were_inserted_leaves_the_cache_as_it_was(
    snapshot_1_path: Path,
    central: Central,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
    message: str,
) -> None:
    frames = failing_worker.DECODER_FRAMES_BEFORE_FAILURE + 8
    bundle = central.bundle(Kind.SNAPSHOT, 2, map(record_line, range(1, frames * 1024 + 1)))
    before = fingerprint(snapshot_1_path)
    installer = installer_for(snapshot_1_path, central)
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.failing_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_FAILURE", failure)
    with pytest.raises(InstallWorkerError, match=message):
        installer.install_bytes(bundle, source="mqtt")
    assert fingerprint(snapshot_1_path) == before
    assert installer.stats().refused == {}, "a crash is not a refusal of the bundle"
    monkeypatch.setattr(install, "WORKER_MODULE", "agent.cache.install_worker")
    assert installer.install_bytes(bundle, source="mqtt").state.bundle_version == 2


def test_a_killed_worker_takes_its_decoder_with_it(
    snapshot_1_path: Path, central: Central, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No decoder may outlive its worker: it holds a copy of the install lock's descriptor."""
    bundle = snapshot_2(central)
    before = fingerprint(snapshot_1_path)
    probe = tmp_path / "decoder-pid"
    installer = installer_for(snapshot_1_path, central)
    monkeypatch.setattr(install, "WORKER_MODULE", "tests.cache.failing_worker")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_FAILURE", "kill-worker-after-fork")
    monkeypatch.setenv("LANE_AGENT_TEST_WORKER_PROBE", str(probe))
    with pytest.raises(InstallWorkerError, match="killed by SIGKILL"):
        installer.install_bytes(bundle, source="mqtt")
    decoder_pid = int(probe.read_text())
    deadline = time.monotonic() + 10
    while running(decoder_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(decoder_pid), "the orphaned decoder is still running"
    target, files, rows = fingerprint(snapshot_1_path)
    assert (target, rows) == (before[0], before[2])
    # The killed worker's half-built file stays until the next install removes it; nobody reads it.
    assert [name for name in files if not name.endswith(".building")] == before[1]
    monkeypatch.setattr(install, "WORKER_MODULE", "agent.cache.install_worker")
    assert installer.install_bytes(bundle, source="mqtt").state.bundle_version == 2


def running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting for init to reap it has stopped running)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


COMPARE_BOTH_PATHS = """
import sys
import threading
from pathlib import Path

from agent.cache import decoder
from agent.cache.bundle import payload_lines, read_header, snapshot_chunks
from tests.cache.kit import LIMITS, Central

central = Central(Path(sys.argv[1]))
bundle = Path(sys.argv[2])
if sys.argv[3] == "fork-fails":

    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    decoder.os.fork = no_fork
with bundle.open("rb") as stream:
    header = read_header(stream, bundle.stat().st_size, central.trust(), LIMITS)
    stream.seek(header.payload_offset)
    here = [row for chunk in snapshot_chunks(payload_lines(stream, header.manifest)) for row in chunk]
    stream.seek(header.payload_offset)
    assert threading.active_count() == 1, "the decoder would not fork here"
    forked = [row for chunk in decoder.snapshot_rows_decoded(stream, header.manifest) for row in chunk]
    if sys.argv[3] == "fork":
        assert stream.tell() == header.payload_offset, "the decoder moved this process's offset"
assert forked == here, "the forked decoder's rows differ"
print(len(forked))
"""


@pytest.mark.parametrize("fork", ["fork", "fork-fails"])
def test_decoding_in_process_and_in_a_forked_decoder_gives_the_same_rows(
    central: Central, tmp_path: Path, fork: str
) -> None:
    """Both paths on the same payload, row for row, in a fresh single-threaded interpreter.

    Not in pytest's own process: its other tests may leave threads running, and forking a
    threaded process is what the decoder refuses to do. When fork fails (no processes or memory
    left) the rows are decoded in-process instead of failing the install.
    """
    bundle = tmp_path / "snapshot.bundle"
    bundle.write_bytes(snapshot_2(central))
    result = subprocess.run(
        [sys.executable, "-c", COMPARE_BOTH_PATHS, str(central.directory), str(bundle), fork],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(RECORDS)
    assert ("decoding in the install worker" in result.stderr) == (fork == "fork-fails")
