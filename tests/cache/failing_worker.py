"""An install worker that fails on purpose, for the tests of how the agent survives a bad worker.

Run in place of ``agent.cache.install_worker`` (the tests patch ``install.WORKER_MODULE``).
``LANE_AGENT_TEST_WORKER_FAILURE`` says how it fails:

- ``kill``: writes every row of a delta inside its transaction, then SIGKILLs itself before the
  commit, as a crash in the middle of an install would;
- ``hang``: sleeps without reading its request, so the installer's timeout must end it;
- ``kill-decoder``: a snapshot's decoder process SIGKILLs itself after decoding
  ``DECODER_FRAMES_BEFORE_FAILURE`` frames' worth of rows (more than its pipe and buffer hold, so
  the worker has inserted some);
- ``decoder-error``: the decoder raises an unexpected exception after as many frames;
- ``kill-worker-after-fork``: the worker writes its snapshot decoder's pid to
  ``LANE_AGENT_TEST_WORKER_PROBE`` and SIGKILLs itself, leaving the decoder orphaned.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.cache import decoder, install, install_worker
from agent.cache.bundle import Manifest
from agent.cache.records import StorageRow

FAILURE = os.environ.get("LANE_AGENT_TEST_WORKER_FAILURE", "kill")
real_apply_delta = install._apply_delta


def apply_delta_then_die(
    connection: sqlite3.Connection, manifest: Manifest, lines: Iterator[str]
) -> tuple[int, int]:
    """Apply the whole delta, uncommitted, then die by SIGKILL."""
    real_apply_delta(connection, manifest, lines)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL cannot be caught")


real_snapshot_chunks = decoder.snapshot_chunks
real_fork = os.fork


DECODER_FRAMES_BEFORE_FAILURE = 40


def chunks_then_fail(lines: Iterable[str], chunk_rows: int = 1024) -> Iterator[list[StorageRow]]:
    """The decoder's rows, until it SIGKILLs itself or raises, as FAILURE says."""
    for number, chunk in enumerate(real_snapshot_chunks(lines, chunk_rows)):
        if number == DECODER_FRAMES_BEFORE_FAILURE:
            if FAILURE == "kill-decoder":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("decoder test failure")
        yield chunk


def fork_then_die() -> int:
    """Fork the decoder, say its pid, and die in the worker (the parent side of the fork)."""
    pid = real_fork()
    if pid:
        Path(os.environ["LANE_AGENT_TEST_WORKER_PROBE"]).write_text(str(pid))
        os.kill(os.getpid(), signal.SIGKILL)
    return pid


if __name__ == "__main__":
    if FAILURE == "hang":
        time.sleep(3600)
    install._apply_delta = apply_delta_then_die
    if FAILURE in ("kill-decoder", "decoder-error"):
        decoder.snapshot_chunks = chunks_then_fail
    if FAILURE == "kill-worker-after-fork":
        os.fork = fork_then_die
    sys.exit(install_worker.main())
