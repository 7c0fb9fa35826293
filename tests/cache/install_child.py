"""Child process for the kill -9 tests: install one bundle file, saying when it starts.

Usage: python -m tests.cache.install_child CACHE TRUST BUNDLE
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agent.cache.install import CacheInstaller
from agent.cache.trust import TrustStore
from tests.cache.kit import LANE, LIMITS, PORT


def main() -> None:
    cache, trust, bundle = (Path(arg) for arg in sys.argv[1:4])
    installer = CacheInstaller(
        cache,
        TrustStore.load(trust, required_owner_uid=os.getuid()),
        port_id=PORT,
        lane_id=LANE,
        limits=LIMITS,
    )
    print("installing", flush=True)
    installer.install_file(bundle)
    print("installed", flush=True)


if __name__ == "__main__":
    main()
