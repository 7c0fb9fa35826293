"""An install worker that fails on purpose, for the tests of how the agent survives a bad worker.

Run in place of ``agent.cache.install_worker`` (the tests patch ``install.WORKER_MODULE``).
``LANE_AGENT_TEST_WORKER_FAILURE`` says how it fails:

- ``kill``: writes every row of a delta inside its transaction, then SIGKILLs itself before the
  commit, as a crash in the middle of an install would;
- ``hang``: sleeps without reading its request, so the installer's timeout must end it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterator

from agent.cache import install, install_worker
from agent.cache.bundle import Manifest

FAILURE = os.environ.get("LANE_AGENT_TEST_WORKER_FAILURE", "kill")
real_apply_delta = install._apply_delta


def apply_delta_then_die(
    connection: sqlite3.Connection, manifest: Manifest, lines: Iterator[str]
) -> tuple[int, int]:
    """Apply the whole delta, uncommitted, then die by SIGKILL."""
    real_apply_delta(connection, manifest, lines)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL cannot be caught")


if __name__ == "__main__":
    if FAILURE == "hang":
        time.sleep(3600)
    install._apply_delta = apply_delta_then_die
    sys.exit(install_worker.main())
