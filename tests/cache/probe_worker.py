"""The real install worker, writing down the nice value it installs at (for the priority test).

Run in place of ``agent.cache.install_worker`` (the test patches ``install.WORKER_MODULE``); the
file named by ``LANE_AGENT_TEST_WORKER_PROBE`` receives the process's nice value as seen by the
install. With ``LANE_AGENT_TEST_DENY_NICE`` set, ``os.nice`` fails with EPERM, as it does under a
seccomp filter that denies setpriority.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import IO, Any

from agent.cache import install_worker

real_install = install_worker.install


def install_noting_priority(
    request: dict[str, Any], stream: IO[bytes], size: int
) -> dict[str, Any]:
    """Note this process's nice value, then install as the real worker does."""
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    Path(os.environ["LANE_AGENT_TEST_WORKER_PROBE"]).write_text(str(niceness))
    return real_install(request, stream, size)


def denied_nice(_increment: int) -> int:
    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))


if __name__ == "__main__":
    install_worker.install = install_noting_priority
    if os.environ.get("LANE_AGENT_TEST_DENY_NICE"):
        os.nice = denied_nice
    sys.exit(install_worker.main())
