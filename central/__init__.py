"""Central operations: the ingest that closes the lanes' delivery contract into PostgreSQL, the
board of every lane, and the signing and publishing of credential cache bundles.

Imports ``agent.wire`` (topics, schemas, bundle and trust formats) and nothing else of ``agent``:
the lanes and central share the wire definitions, not code (tests/central/test_imports.py).
"""

__version__ = "0.1.0"
