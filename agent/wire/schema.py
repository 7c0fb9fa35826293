"""The JSON Schemas of everything the lanes publish, found by their ``$id``.

Every payload names its schema in a ``schema`` field (``lane-agent/crossing-event/1``); a
consumer looks the schema up here by that id, so a new version is a new file, not a new code
path, and events written by an earlier agent (still in a lane's outbox) stay readable.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

SCHEMA_PACKAGE = "agent.wire"
SCHEMA_FOLDER = "schemas"


class UnknownSchemaError(LookupError):
    """No schema with this ``$id`` ships with this version of the wire package."""

    def __init__(self, schema_id: str, known: list[str]) -> None:
        super().__init__(f"unknown schema {schema_id!r} (known: {', '.join(known)})")
        self.schema_id = schema_id


@cache
def _by_id() -> dict[str, dict[str, Any]]:
    folder = resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_FOLDER)
    found: dict[str, dict[str, Any]] = {}
    for entry in folder.iterdir():
        if entry.name.endswith(".schema.json"):
            document = json.loads(entry.read_text(encoding="utf-8"))
            found[str(document["$id"])] = document
    return found


def schema_ids() -> list[str]:
    """Every schema id this version knows, sorted."""
    return sorted(_by_id())


def load_schema(schema_id: str) -> dict[str, Any]:
    """The schema document with this ``$id``; raises :class:`UnknownSchemaError`.

    The same dict is returned on every call: treat it as read-only.
    """
    try:
        return _by_id()[schema_id]
    except KeyError:
        raise UnknownSchemaError(schema_id, schema_ids()) from None
