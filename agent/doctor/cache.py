"""The cache checks: the credential file (integrity, data version, age) and the trust file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from agent.config import AgentConfig
from agent.doctor.report import Check, fail, ok, skip

_IMPORT_FIX = (
    "load the lane's credentials: `lane-agent cache import FILE --config CONFIG` (a signed "
    "bundle from central, or a plain file in a lab)"
)


def check_cache(config: AgentConfig) -> Check:
    """quick_check, counts, data version and the data's age against ``max_cache_age_s``."""
    from agent.cache import CacheError, CredentialCache

    path = config.cache.path
    if not path.exists():
        return fail("cache", f"{path}: no cache file yet", _IMPORT_FIX)
    integrity = _quick_check(path)
    if integrity != "ok":
        return fail(
            "cache",
            f"{path}: damaged ({integrity})",
            "stop the agent, move the file aside and import the credentials again",
        )
    try:
        with CredentialCache.open(path, read_only=True) as cache:
            stats = cache.stats()
            meta = cache.meta()
    except CacheError as exc:
        return fail(
            "cache", str(exc), "fix the file's permissions, or move it aside and import again"
        )
    fresh = meta.get("fresh_at")
    age_s = None if fresh is None else max(0.0, time.time() - int(fresh))
    limit = config.cache.max_cache_age_s
    version = (stats.data_version or "none")[:19]
    detail = (
        f"{path}: {stats.credentials} credentials, data version {version}, "
        f"age {_duration(age_s)} (max_cache_age_s {_duration(limit) if limit else 'off'}), "
        "quick_check ok"
    )
    if stats.credentials == 0:
        return fail("cache", f"{detail}; it is empty: nobody can be expedited", _IMPORT_FIX)
    if limit and (age_s is None or age_s > limit):
        return fail(
            "cache",
            f"{detail}; too old: crossings get CACHE_STALE and nobody is expedited",
            "check the broker check above (central sends signed updates and freshness notices "
            "over it) or import a current bundle",
        )
    return ok("cache", detail)


def check_trust(config: AgentConfig, owner_uid: int | None) -> Check:
    """The trust file parsed and checked as the service loads it."""
    from agent.cache.trust import TrustError, TrustStore

    trust_file = config.cache.trust_file
    if trust_file is None:
        return skip("cache trust", "cache.trust_file unset: signed cache updates are off")
    try:
        trust = TrustStore.load(trust_file, required_owner_uid=owner_uid)
    except TrustError as exc:
        return fail(
            "cache trust",
            str(exc),
            "install the trust file central issued for this lane: root-owned, mode 0644 "
            "(`lane-agent keys install-trust`)",
        )
    live = sum(1 for key in trust.keys.values() if not key.revoked)
    return ok(
        "cache trust",
        f"{trust_file}: serial {trust.serial}, {trust.threshold} of {live} keys must sign",
    )


def _quick_check(path: Path) -> str:
    try:
        connection = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            rows = connection.execute("PRAGMA quick_check").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return str(exc)
    return "; ".join(str(row[0]) for row in rows[:3])


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
