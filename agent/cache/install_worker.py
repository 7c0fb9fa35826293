"""The child process that installs one bundle for :class:`agent.cache.install.CacheInstaller`.

Usage (the installer runs it; nobody else needs to)::

    python -m agent.cache.install_worker --parent-pid PID  < request line + bundle bytes

Why a process: verifying, decoding and validating a bundle is Python work. On a thread of the
agent it holds the GIL for up to the 5 ms switch interval at a time while the lane thread waits to
look a card up; in its own process it runs on another core and the lane's lookups only meet
SQLite, whose WAL lets this process commit while the lane keeps reading.

Stdin: one JSON line (cache path, trust document, port and lane, limits, the agent clock's
reading, source, ``nice``: how far below the agent's priority to run, and ``fd``: an open bundle
file inherited from the agent, or null when the bundle's bytes follow the line). Stdout: one JSON line, one of ``{"outcome": ...}``,
``{"refused": {"reason", "detail"}}`` or ``{"error": "..."}``, with ``logs``: the records this
process logged at INFO and above, for the agent to re-emit (they are the installer's own
messages, which never quote cache content). The worker dies with the agent (Linux
``PR_SET_PDEATHSIG``, :mod:`agent.cache.parent_death`), so a killed agent never leaves a writer
behind that could finish an install the restarted agent no longer expects.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import IO, Any

from agent.cache.parent_death import die_with_parent

logger = logging.getLogger(__name__)


class _Collected(logging.Handler):
    """Keeps the records logged here, to send them to the agent with the result."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))


def install(request: dict[str, Any], stream: IO[bytes], size: int) -> dict[str, Any]:
    """Install the bundle in ``stream`` as the request says; the reply (without ``logs``)."""
    # Imported here so that a worker whose agent is gone exits before paying for the imports.
    from agent.cache.bundle import BundleLimits, BundleRefusedError
    from agent.cache.install import CacheInstaller
    from agent.cache.store import CacheError, CacheImportError
    from agent.cache.trust import TrustStore

    now = float(request["now"])
    try:
        installer = CacheInstaller(
            Path(request["path"]),
            TrustStore.from_document(request["trust"], source=str(request["trust_source"])),
            port_id=str(request["port_id"]),
            lane_id=str(request["lane_id"]),
            limits=BundleLimits(*request["limits"]),
            clock=lambda: now,
        )
        outcome = installer.install_in_this_process(stream, size, source=str(request["source"]))
    except BundleRefusedError as err:
        return {"refused": {"reason": err.reason.value, "detail": err.detail}}
    except CacheImportError as err:
        # Its problem lines quote records: the agent logs this error above DEBUG.
        return {"error": f"{type(err).__name__} ({len(err.problems) + err.omitted} problem(s))"}
    except (CacheError, OSError, sqlite3.Error) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    return {"outcome": outcome.to_json()}


def main() -> int:
    """Read the request, install, write the reply; exit status 0 whenever a reply was written."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args()
    die_with_parent(args.parent_pid)
    collected = _Collected()
    logging.getLogger().addHandler(collected)
    logging.getLogger().setLevel(logging.INFO)
    request = json.loads(sys.stdin.buffer.readline())
    # Lower priority than the agent: when both want the same core, the lane's lookup wins.
    nice = int(request.get("nice", 0))
    if nice:
        try:
            os.nice(nice)
        except OSError as err:  # a seccomp filter that denies setpriority: install anyway
            logger.warning(
                "install worker runs at the agent's priority: nice(%d) failed: %s", nice, err
            )
    with contextlib.ExitStack() as stack:
        fd = request["fd"]
        stream: IO[bytes]
        if fd is None:
            stream = io.BytesIO(sys.stdin.buffer.read())
            size = len(stream.getbuffer())
        else:
            stream = stack.enter_context(os.fdopen(int(fd), "rb"))
            size = os.fstat(stream.fileno()).st_size
        reply = install(request, stream, size)
    reply["logs"] = collected.records
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
