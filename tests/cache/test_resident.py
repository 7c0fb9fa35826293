"""cache.lock_in_memory: the cache file in force stays locked in memory, follows snapshot swaps
and growth, releases what it no longer needs, and a lane without the right to lock goes on."""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cache import CredentialCache
from agent.cache.bundle import Kind
from agent.cache.channel import CacheChannel
from agent.cache.resident import ResidentCache
from agent.config import load_config
from tests.cache.kit import (
    LANE,
    PORT,
    Central,
    installed_snapshot_1,
    record_line,
    ref,
)

SNAPSHOT_RECORDS = 3000  # a few hundred KiB: well under any RLIMIT_MEMLOCK a CI runner has
CHILD = Path(__file__).resolve().parent / "memlock_child.py"
CAP_IPC_LOCK = 14
PR_CAPBSET_DROP = 24


def locked_kib_by_file() -> dict[str, int]:
    """``Locked:`` kB of this process's mappings, summed per mapped file (/proc/self/smaps)."""
    locked: dict[str, int] = {}
    current: str | None = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            current = head[5] if len(head) == 6 else None
            if current is not None:
                locked.setdefault(current, 0)
        elif head and head[0] == "Locked:" and current is not None:
            locked[current] += int(head[1])
    return locked


def mapped(file: Path) -> int | None:
    """Locked kB of ``file``'s mappings, or None when this process maps no part of it."""
    return locked_kib_by_file().get(str(file.resolve()))


def holds_posix_lock(file: Path) -> bool:
    """Whether this process holds a POSIX lock on ``file`` (/proc/locks names pid and inode)."""
    inode = file.resolve().stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (
            fields[1] == "POSIX"
            and fields[4] == str(os.getpid())
            and int(fields[5].rsplit(":", 1)[1]) == inode
        ):
            return True
    return False


def open_descriptors(file: Path) -> int:
    """How many of this process's descriptors name ``file``."""
    target = str(file.resolve())
    count = 0
    for entry in Path("/proc/self/fd").iterdir():
        try:
            count += os.readlink(entry) == target
        except OSError:
            continue
    return count


def kib(file: Path) -> int:
    """The file's size rounded up to whole 4 KiB pages, in kB as smaps counts it."""
    return -(-file.stat().st_size // 4096) * 4


def has_cap_ipc_lock() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    return False


@pytest.fixture(autouse=True)
def room_to_lock() -> None:
    """These tests lock a few MiB: raise the soft RLIMIT_MEMLOCK to the hard one if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if has_cap_ipc_lock() or soft == resource.RLIM_INFINITY or soft >= 8 << 20:
        return
    if hard == resource.RLIM_INFINITY or hard >= 8 << 20:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (min(hard, 8 << 20), hard))
        return
    pytest.skip(f"RLIMIT_MEMLOCK hard limit {hard} B and no CAP_IPC_LOCK: cannot lock 8 MiB")


@pytest.fixture
def cache_path(tmp_path: Path, central: Central) -> Path:
    return installed_snapshot_1(tmp_path, central, SNAPSHOT_RECORDS)


def write_config(tmp_path: Path, cache_path: Path, central: Central, extra: str = "") -> Path:
    config_path = tmp_path / "lane.toml"
    config_path.write_text(
        f'[lane]\nport_id = "{PORT}"\nlane_id = "{LANE}"\n[controller]\ndevice = "/dev/null"\n'
        f'[cache]\npath = "{cache_path}"\ntrust_file = "{central.trust_path}"\n{extra}'
    )
    return config_path


def test_following_a_file_locks_all_of_it_in_memory_and_keeps_sqlites_locks(
    cache_path: Path,
) -> None:
    """Closing any descriptor of a file cancels the process's POSIX locks on it, SQLite's too."""
    file = cache_path.resolve()
    cache = CredentialCache.open(cache_path)
    assert cache.lookup(ref(1)) is not None
    assert holds_posix_lock(file), "SQLite keeps a shared lock on a WAL database it has open"
    residency = ResidentCache(enabled=True)
    try:
        assert mapped(file) is None
        assert residency.follow(file)
        assert mapped(file) == kib(file)
        status = residency.status()
        assert (status.locked_bytes, status.file, status.error) == (
            file.stat().st_size,
            file.name,
            None,
        )
        assert residency.follow(file), "following the same file again keeps it"
        assert mapped(file) == kib(file), "and does not map it twice"
        assert holds_posix_lock(file)
    finally:
        residency.release()
    assert mapped(file) is None, "release unmaps it"
    assert holds_posix_lock(file), "and keeps the descriptor whose close would cancel locks"
    cache.close()


def test_disabled_it_locks_nothing(cache_path: Path) -> None:
    residency = ResidentCache(enabled=False)
    assert not residency.follow(cache_path.resolve())
    assert mapped(cache_path) is None
    assert residency.status().as_dict() == {
        "enabled": False,
        "locked_bytes": 0,
        "file": None,
        "error": None,
    }


def test_a_grown_file_is_locked_again_whole_and_the_shorter_mapping_released(
    tmp_path: Path,
) -> None:
    file = tmp_path / "grows.db"
    file.write_bytes(b"\1" * (64 << 10))
    residency = ResidentCache(enabled=True)
    try:
        residency.follow(file)
        assert mapped(file) == 64
        with file.open("ab") as stream:
            stream.write(b"\2" * (100 << 10))
        residency.follow(file)
        assert mapped(file) == 164, "one mapping of the whole grown file, the first one gone"
        assert residency.status().locked_bytes == 164 << 10
    finally:
        residency.release()


def test_the_lane_locks_its_cache_and_moves_the_lock_to_a_new_snapshot(
    tmp_path: Path, cache_path: Path, central: Central
) -> None:
    """A snapshot swap locks the new file before lookups move to it and unmaps the old one."""
    first = cache_path.resolve()
    channel = CacheChannel(
        load_config(write_config(tmp_path, cache_path, central)),
        CredentialCache.open(cache_path),
        trust_owner_uid=os.getuid(),
    )
    try:
        assert channel.installer is not None
        assert mapped(first) == kib(first)
        assert holds_posix_lock(first), "SQLite's lock on the file in force is still held"
        assert channel.status()["resident"] == {
            "enabled": True,
            "locked_bytes": first.stat().st_size,
            "file": first.name,
            "error": None,
        }
        channel.installer.install_bytes(
            central.bundle(Kind.SNAPSHOT, 2, map(record_line, range(1, 2 * SNAPSHOT_RECORDS))),
            source="mqtt",
        )
        second = cache_path.resolve()
        assert second != first
        assert channel.cache.current_file == second
        assert mapped(second) == kib(second)
        assert holds_posix_lock(second)
        assert mapped(first) is None, "the old snapshot's mapping is released"
        assert channel.cache.lookup(ref(2 * SNAPSHOT_RECORDS - 1)) is not None
        assert open_descriptors(first) == 0, "and its descriptor closed, lookups having moved"
    finally:
        channel.stop()
        channel.cache.close()
    assert mapped(cache_path) is None, "stop releases the lock"


def test_lock_in_memory_false_leaves_the_file_unlocked(
    tmp_path: Path, cache_path: Path, central: Central
) -> None:
    config = load_config(write_config(tmp_path, cache_path, central, "lock_in_memory = false\n"))
    assert config.cache.lock_in_memory is False
    channel = CacheChannel(config, CredentialCache.open(cache_path), trust_owner_uid=os.getuid())
    try:
        assert mapped(cache_path) is None
        assert channel.status()["resident"] == {
            "enabled": False,
            "locked_bytes": 0,
            "file": None,
            "error": None,
        }
    finally:
        channel.cache.close()


def _without_lock_rights() -> None:
    """In the child before exec: a 64 KiB RLIMIT_MEMLOCK and, for root, no CAP_IPC_LOCK.

    Dropping the capability from the bounding set before exec leaves root's new program
    without it (capabilities(7)), so the limit applies as it does to the unit's service user.
    """
    resource.setrlimit(resource.RLIMIT_MEMLOCK, (64 << 10, 64 << 10))
    if os.geteuid() == 0:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_IPC_LOCK)")


def test_a_lane_that_may_not_lock_warns_once_naming_the_limit_and_goes_on(
    tmp_path: Path, cache_path: Path, central: Central
) -> None:
    """RLIMIT_MEMLOCK below the file size: one warning, status says why, lookups still work."""
    config_path = write_config(tmp_path, cache_path, central)
    result = subprocess.run(
        [sys.executable, str(CHILD), str(config_path), ref(7)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        preexec_fn=_without_lock_rights,  # runs before exec: the capability drop needs the exec
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["cap_ipc_lock"] is False
    assert report["memlock_limit"] == 64 << 10
    assert report["found"] is True, "the lane looks cards up without the lock"
    warnings = [r for r in report["records"] if r["level"] >= logging.WARNING]
    assert len(warnings) == 1, report["records"]
    assert "RLIMIT_MEMLOCK is 64 KiB" in warnings[0]["message"]
    assert "LimitMEMLOCK=" in warnings[0]["message"]
    assert report["resident"]["enabled"] is True
    assert report["resident"]["locked_bytes"] == 0
    assert report["resident"]["error"]
    assert report["locked_kib"] == 0
