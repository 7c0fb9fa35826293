"""Child processes of the credential cache die with the process that started them.

The install worker (:mod:`agent.cache.install_worker`) and the snapshot decoder it forks
(:mod:`agent.cache.decoder`) both write, or feed the writing of, the cache file. If the agent (or
the worker) is killed, a child left running could finish an install the restarted agent no longer
expects, or keep a copy of the install lock. Linux's ``PR_SET_PDEATHSIG`` has the kernel SIGKILL
the child when its parent dies.

Its own module because both children need it: the decoder importing it from the install worker
closed an import cycle (install → decoder → install_worker → install).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 3


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when the agent dies, and exit if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)  # the agent died before the signal was armed
