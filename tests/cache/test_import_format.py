"""One import format in two spellings (docs/import-format.md): NDJSON and CSV records go through
one parser, accept the same vehicle notations and jurisdiction codes, and are refused with the
same problem lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cache import CacheImportError, CredentialCache, records
from agent.cache.bundle import decode_record, encode_record
from agent.lane.credentials import Credential, RegisteredVehicle
from tests.cache.conftest import valid_record, write_csv, write_ndjson

# (vehicles as NDJSON writes them, the same as a CSV cell, what the cache holds)
VEHICLE_NOTATIONS = [
    pytest.param(
        [{"plate": "7ABC123", "jurisdiction": "US-CA"}],
        "US-CA:7ABC123",
        (("7ABC123", "US-CA"),),
        id="object-list-vs-text",
    ),
    pytest.param(
        "CA:ABC0000",
        "CA:ABC0000",
        (("ABC0000", "CA"),),
        id="text-in-both",
    ),
    pytest.param(
        ["MX-BCN:AAA 00 00", "ca-on:ABCD 123"],
        '["MX-BCN:AAA 00 00", "ca-on:ABCD 123"]',
        (("AAA0000", "MX-BCN"), ("ABCD123", "CA-ON")),
        id="list-of-text-vs-json-cell",
    ),
    pytest.param(
        [{"plate": "xyz-123", "jurisdiction": " bcn "}, "EU-DE:B MW 1234"],
        "BCN:XYZ 123 ; EU-DE:B-MW-1234",
        (("XYZ123", "BCN"), ("BMW1234", "EU-DE")),
        id="mixed-list-vs-spaced-text",
    ),
    pytest.param([], "", (), id="none"),
    pytest.param("", "[]", (), id="empty-text-vs-empty-json-cell"),
]


def _import(cache_path: Path, source: Path) -> CredentialCache:
    cache = CredentialCache.open(cache_path)
    cache.import_file(source)
    return cache


@pytest.mark.parametrize(("ndjson_vehicles", "csv_cell", "stored"), VEHICLE_NOTATIONS)
def test_the_same_record_imports_identically_from_ndjson_and_csv(
    tmp_path: Path,
    ndjson_vehicles: object,
    csv_cell: str,
    stored: tuple[tuple[str, str], ...],
) -> None:
    """The vehicles written either way in either file end as the same credential."""
    ndjson = write_ndjson(tmp_path / "in.ndjson", [valid_record(vehicles=ndjson_vehicles)])
    csv_file = write_csv(tmp_path / "in.csv", [valid_record(vehicles=csv_cell)])
    with (
        _import(tmp_path / "a.db", ndjson) as from_ndjson,
        _import(tmp_path / "b.db", csv_file) as from_csv,
    ):
        credential = from_ndjson.lookup(str(valid_record()["ref"]))
        assert credential is not None
        assert credential == from_csv.lookup(str(valid_record()["ref"]))
    assert credential.vehicles == tuple(
        RegisteredVehicle(plate=plate, jurisdiction=jurisdiction) for plate, jurisdiction in stored
    )


@pytest.mark.parametrize(
    "jurisdiction",
    ["US-CA", "MX-BCN", "CA-ON", "EU-DE", "US-1", "CA", "TX", "BCN", "NLE", "us-ca", " MX-SON "],
)
def test_iso_3166_2_and_short_jurisdiction_codes_are_accepted(jurisdiction: str) -> None:
    for vehicles in ([{"plate": "ABC123", "jurisdiction": jurisdiction}], f"{jurisdiction}:ABC123"):
        row, problems = records.validate_record(valid_record(vehicles=vehicles))
        assert problems == []
        assert row is not None
        assert row[7] == f"{jurisdiction.strip().upper()}:ABC123"


@pytest.mark.parametrize(
    "jurisdiction", ["USA-CA", "U-CA", "US-CALI", "US_CA", "US-", "-CA", "C4", "C", "CALI", ""]
)
def test_malformed_jurisdiction_codes_are_refused_naming_what_is_allowed(
    jurisdiction: str,
) -> None:
    row, problems = records.validate_record(valid_record(vehicles=f"{jurisdiction}:ABC123"))
    assert row is None
    assert [p.describe("f:1") for p in problems] == [
        f"f:1: vehicles.jurisdiction: {jurisdiction!r}: {records.ALLOWED_JURISDICTION}"
    ]
    assert "US-CA" in records.ALLOWED_JURISDICTION


# Records that each break one rule, with vehicles in text notation so both files hold them alike.
BAD_RECORDS: list[dict[str, object]] = [
    {"ref": "E28011606000020Z4F5A3B33"},
    {"program": "SENTRY"},
    {"status": "active"},
    {"valid_from": "2024-01-01"},
    {"valid_until": "2023-01-01T00:00:00Z"},
    {"holder_ref": "Jane Doe"},
    {"vehicles": "CA7ABC123"},
    {"vehicles": "CA:7ABC123;"},
    {"vehicles": "USA-CA:7ABC123"},
    {"vehicles": "CA:7ABC123$"},
    {"vehicles": "CA:ABC1234;ca:abc-1234"},
    {"vehicles": ";".join(f"CA:P{n}" for n in range(17))},
    {"vehicles": "[not json"},
    {"vehicles": '[{"plate": "A1"}]'},
]


def _problems(source: Path, cache_path: Path) -> list[str]:
    with CredentialCache.open(cache_path) as cache, pytest.raises(CacheImportError) as raised:
        cache.import_file(source)
    return raised.value.problems


def test_bad_records_are_refused_with_the_same_lines_in_ndjson_and_csv(tmp_path: Path) -> None:
    """Record N is NDJSON line N and CSV line N + 1 (after the header): apart from that, every
    problem line (field, value, what is allowed) is the same, and every bad record has one."""
    rows = [valid_record(vehicles="")] + [
        {**valid_record(ref=f"E2801160600002085{n:07d}", vehicles="CA:OK1"), **bad}
        for n, bad in enumerate(BAD_RECORDS)
    ]
    ndjson = write_ndjson(tmp_path / "bad.ndjson", rows)
    csv_file = write_csv(tmp_path / "bad.csv", rows)

    from_ndjson = _problems(ndjson, tmp_path / "a.db")
    from_csv = _problems(csv_file, tmp_path / "b.db")

    def by_record(lines: list[str], name: Path, header_lines: int) -> list[tuple[int, str]]:
        out = []
        for line in lines:
            position, _, problem = line.removeprefix(f"{name}:").partition(": ")
            out.append((int(position) - header_lines, problem))
        return out

    assert by_record(from_ndjson, ndjson, 0) == by_record(from_csv, csv_file, 1)
    assert {number for number, _ in by_record(from_ndjson, ndjson, 0)} == set(
        range(2, len(BAD_RECORDS) + 2)
    ), "the good first record has no problem, every bad one has"
    assert f"{ndjson}:9: vehicles: '': JURISDICTION:PLATE entries separated by ';'" in from_ndjson
    assert (
        f"{csv_file}:12: vehicles.plate: '7ABC123$': 1-10 letters or digits once spaces and"
        " dashes are removed" in from_csv
    )


@pytest.mark.parametrize(
    ("vehicles", "expected"),
    [
        pytest.param(
            None,
            f"vehicles: None: {records.ALLOWED_VEHICLES}",
            id="null",
        ),
        pytest.param(
            {"plate": "A1", "jurisdiction": "CA"},
            f"vehicles: {{'plate': 'A1', 'jurisdiction': 'CA'}}: {records.ALLOWED_VEHICLES}",
            id="object-not-in-a-list",
        ),
        pytest.param(
            ["CA:A1;TX:B2"],
            "vehicles: 'CA:A1;TX:B2': JURISDICTION:PLATE entries separated by ';'",
            id="list-entry-with-two-vehicles",
        ),
        pytest.param(
            [7],
            f"vehicles: 7: {records.ALLOWED_VEHICLE_ITEM}",
            id="list-entry-neither-text-nor-object",
        ),
    ],
)
def test_ndjson_only_values_are_refused_naming_the_notations(
    tmp_path: Path, vehicles: object, expected: str
) -> None:
    """JSON can hold values a CSV cell cannot; they are refused with the notations allowed."""
    source = write_ndjson(tmp_path / "one.ndjson", [valid_record(vehicles=vehicles)])
    assert _problems(source, tmp_path / "c.db") == [f"{source}:1: {expected}"]


def test_missing_vehicles_are_a_missing_field_in_both_formats(tmp_path: Path) -> None:
    record = valid_record()
    del record["vehicles"]
    ndjson = write_ndjson(tmp_path / "m.ndjson", [record])
    assert _problems(ndjson, tmp_path / "a.db") == [
        f"{ndjson}:1: vehicles: (missing): {records.ALLOWED_VEHICLES}"
    ]
    header = [f for f in records.FIELDS if f != "vehicles"]
    csv_file = write_csv(tmp_path / "m.csv", [record], header=header)
    assert _problems(csv_file, tmp_path / "b.db") == [
        f"{csv_file}:1: vehicles: (missing): a column for every field"
    ]


def test_iso_jurisdictions_travel_in_bundles_and_back() -> None:
    """A bundle line holds the same codes the import accepts: encode and decode keep them."""
    row, problems = records.validate_record(
        valid_record(vehicles="US-CA:7ABC123;MX-BCN:AAA0000;CA:XYZ1")
    )
    assert problems == []
    assert row is not None
    assert decode_record(encode_record(row), 1) == row
    credential: Credential = records.row_to_credential(row)
    assert [v.jurisdiction for v in credential.vehicles] == ["US-CA", "MX-BCN", "CA"]
