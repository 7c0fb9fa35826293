"""Fixtures for the credential cache: real SQLite files in tmp_path, opened as production does."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from agent.cache import CredentialCache
from agent.cache.records import FIELDS
from tests.cache.kit import Central, installed_snapshot_1

GOOD_REF = "E2801160600002084F5A3B11"
OTHER_REF = "E2801160600002084F5A3B22"


def valid_record(**overrides: object) -> dict[str, object]:
    """An NDJSON-shaped record that passes every rule; overrides replace fields."""
    record: dict[str, object] = {
        "ref": GOOD_REF,
        "document_type": "TRUSTED_TRAVELLER_CARD",
        "program": "SENTRI",
        "status": "ACTIVE",
        "valid_from": "2024-01-01T00:00:00Z",
        "valid_until": "2029-01-01T00:00:00Z",
        "holder_ref": "H-000123",
        "vehicles": [{"plate": "ABC1234", "jurisdiction": "CA"}],
    }
    record.update(overrides)
    return record


def write_ndjson(path: Path, records: Iterable[Mapping[str, object]]) -> Path:
    with path.open("w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record) + "\n")
    return path


def write_csv(
    path: Path, rows: Iterable[Mapping[str, object]], header: Iterable[str] = FIELDS
) -> Path:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(rows)
    return path


def dump(path: Path) -> str:
    """Every committed schema object and row of a database file, as SQL text."""
    connection = sqlite3.connect(path)
    try:
        return "\n".join(connection.iterdump())
    finally:
        connection.close()


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "credentials.db"


@pytest.fixture
def cache(cache_path: Path) -> Iterator[CredentialCache]:
    with CredentialCache.open(cache_path) as opened:
        yield opened


@pytest.fixture
def central(tmp_path: Path) -> Central:
    """Central's keys with its 2-of-3 trust file written in ``tmp_path``."""
    made = Central(tmp_path)
    made.write_trust()
    return made


@pytest.fixture
def snapshot_1_path(tmp_path: Path, central: Central) -> Path:
    """A lane cache installed from ``central``'s snapshot 1 with records 1-100."""
    return installed_snapshot_1(tmp_path, central)
