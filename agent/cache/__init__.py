"""The local credential cache: the SQLite file card reads are matched against.

``CredentialCache.open(path)`` then ``lookup(ref)`` on the lane's hot path; ``import_file`` and
``import_records`` load credentials all-or-nothing; ``stats()`` reports counts for the CLI.
"""

from agent.cache.store import (
    CacheError,
    CacheImportError,
    CacheOpenError,
    CacheStats,
    CredentialCache,
    ImportReport,
)

__all__ = [
    "CacheError",
    "CacheImportError",
    "CacheOpenError",
    "CacheStats",
    "CredentialCache",
    "ImportReport",
]
