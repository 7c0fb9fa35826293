"""The real install worker, writing down the nice value it installs at (for the priority test).

Run in place of ``agent.cache.install_worker`` (the test patches ``install.WORKER_MODULE``); the
file named by ``LANE_AGENT_TEST_WORKER_PROBE`` receives ``os.nice(0)`` as seen by the install.
"""

from __future__ import annotations

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
    Path(os.environ["LANE_AGENT_TEST_WORKER_PROBE"]).write_text(str(os.nice(0)))
    return real_install(request, stream, size)


if __name__ == "__main__":
    install_worker.install = install_noting_priority
    sys.exit(install_worker.main())
