"""Child of test_resident: a lane's cache channel in a process that may not lock memory.

Arguments: the lane config and a ref to look up. Prints one JSON object: whether the process holds CAP_IPC_LOCK, its RLIMIT_MEMLOCK, every
log record at INFO or above, whether the lookup found the card, the residency status and how many
kB of the cache file ended up locked.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
from pathlib import Path

from agent.cache import CredentialCache
from agent.cache.channel import CacheChannel
from agent.config import load_config

CAP_IPC_LOCK = 14


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"level": record.levelno, "message": record.getMessage()})


def has_cap_ipc_lock() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    return False


def locked_kib(file: Path) -> int:
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            current = len(head) == 6 and head[5] == str(file)
        elif current and head and head[0] == "Locked:":
            total += int(head[1])
    return total


def main() -> None:
    collect = Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.INFO)
    config = load_config(Path(sys.argv[1]))
    cache = CredentialCache.open(config.cache.path)
    channel = CacheChannel(config, cache, trust_owner_uid=os.getuid())
    found = cache.lookup(sys.argv[2]) is not None
    channel.residency.follow(cache.current_file)  # a second failure: no second warning
    print(
        json.dumps(
            {
                "cap_ipc_lock": has_cap_ipc_lock(),
                "memlock_limit": resource.getrlimit(resource.RLIMIT_MEMLOCK)[0],
                "records": collect.records,
                "found": found,
                "resident": channel.status()["resident"],
                "locked_kib": locked_kib(cache.current_file),
            }
        )
    )
    channel.stop()
    cache.close()


if __name__ == "__main__":
    main()
