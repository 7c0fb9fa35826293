"""Refused imports: every rule has its own message, and a refused import changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cache import CacheImportError, CredentialCache
from agent.cache.store import MAX_REPORTED_PROBLEMS
from tests.cache.conftest import (
    GOOD_REF,
    OTHER_REF,
    dump,
    valid_record,
    write_csv,
    write_ndjson,
)

NEW_REF = "E2801160600002084F5A3B33"


@pytest.fixture
def loaded_cache(cache: CredentialCache) -> Iterator[CredentialCache]:
    """A cache holding two records, and a check that whatever the test did left it unchanged."""
    cache.import_records(
        [valid_record(), valid_record(ref=OTHER_REF)], "baseline", data_version="v1"
    )
    before = dump(cache.path)
    yield cache
    assert dump(cache.path) == before, "a refused import changed the cache"


def refused_problems(cache: CredentialCache, source: Path) -> list[str]:
    with pytest.raises(CacheImportError) as raised:
        cache.import_file(source)
    return raised.value.problems


# (overrides of one NDJSON record on line 2, the exact problem line after "file:2: ")
NDJSON_RULES = [
    pytest.param(
        {"ref": "E28011606000020Z4F5A3B33"},
        "ref: 'E28011606000020Z4F5A3B33': 8-124 hex digits, an even number of them (the tag's EPC)",
        id="ref-not-hex",
    ),
    pytest.param(
        {"ref": "E2801160600002084F5A3B3"},
        "ref: 'E2801160600002084F5A3B3': 8-124 hex digits, an even number of them (the tag's EPC)",
        id="ref-odd-length",
    ),
    pytest.param(
        {"ref": "E2801160"[:6]},
        "ref: 'E28011': 8-124 hex digits, an even number of them (the tag's EPC)",
        id="ref-too-short",
    ),
    pytest.param(
        {"ref": "AB" * 63},
        "ref: 'ABABABABABABABABABABABABABABABABABABABABABABABABABABABAB...:"
        " 8-124 hex digits, an even number of them (the tag's EPC)",
        id="ref-too-long",
    ),
    pytest.param(
        {"ref": 12345678},
        "ref: 12345678: 8-124 hex digits, an even number of them (the tag's EPC)",
        id="ref-a-number",
    ),
    pytest.param(
        {"document_type": "DRIVERS_LICENCE"},
        "document_type: 'DRIVERS_LICENCE': one of TRUSTED_TRAVELLER_CARD, PASSPORT_CARD,"
        " ENHANCED_DRIVERS_LICENCE, ENHANCED_ID",
        id="unknown-document-type",
    ),
    pytest.param(
        {"program": "sentri"},
        "program: 'sentri': one of NONE, SENTRI, NEXUS, GLOBAL_ENTRY, FAST",
        id="unknown-program",
    ),
    pytest.param(
        {"status": "EXPIRED"},
        "status: 'EXPIRED': one of ACTIVE, SUSPENDED, REVOKED",
        id="unknown-status",
    ),
    pytest.param(
        {"valid_from": "2029-01-01T00:00:00Z"},
        "valid_until: '2029-01-01T00:00:00Z': later than valid_from '2029-01-01T00:00:00Z'",
        id="from-equals-until",
    ),
    pytest.param(
        {"valid_from": "2030-01-01T00:00:00+00:00"},
        "valid_until: '2029-01-01T00:00:00Z': later than valid_from '2030-01-01T00:00:00+00:00'",
        id="from-after-until",
    ),
    pytest.param(
        {"valid_from": "2024-13-01T00:00:00Z"},
        "valid_from: '2024-13-01T00:00:00Z': ISO 8601 date-time from 1970 on, whole seconds,"
        " with a UTC offset, e.g. 2024-01-01T00:00:00Z",
        id="timestamp-bad-month",
    ),
    pytest.param(
        {"valid_until": "2029-01-01T00:00:00"},
        "valid_until: '2029-01-01T00:00:00': ISO 8601 date-time from 1970 on, whole seconds,"
        " with a UTC offset, e.g. 2024-01-01T00:00:00Z",
        id="timestamp-without-offset",
    ),
    pytest.param(
        {"valid_from": "2024-01-01T00:00:00.5Z"},
        "valid_from: '2024-01-01T00:00:00.5Z': ISO 8601 date-time from 1970 on, whole seconds,"
        " with a UTC offset, e.g. 2024-01-01T00:00:00Z",
        id="timestamp-fractional-seconds",
    ),
    pytest.param(
        {"valid_from": "1969-12-31T23:59:59Z"},
        "valid_from: '1969-12-31T23:59:59Z': ISO 8601 date-time from 1970 on, whole seconds,"
        " with a UTC offset, e.g. 2024-01-01T00:00:00Z",
        id="timestamp-before-1970",
    ),
    pytest.param(
        {"valid_from": 1704067200},
        "valid_from: 1704067200: ISO 8601 date-time from 1970 on, whole seconds,"
        " with a UTC offset, e.g. 2024-01-01T00:00:00Z",
        id="timestamp-a-number",
    ),
    pytest.param(
        {"holder_ref": ""},
        "holder_ref: '': 1-64 characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"
        " (an opaque reference, never a name)",
        id="empty-holder-ref",
    ),
    pytest.param(
        {"holder_ref": "Jane Doe"},
        "holder_ref: 'Jane Doe': 1-64 characters of A-Z a-z 0-9 . _ : - starting with a letter"
        " or digit (an opaque reference, never a name)",
        id="holder-ref-looks-like-a-name",
    ),
    pytest.param(
        {"holder_reff": "H-1"},
        "holder_reff: 'H-1': unknown field: allowed are ref, document_type, program, status,"
        " valid_from, valid_until, holder_ref, vehicles; did you mean 'holder_ref'?",
        id="unknown-field",
    ),
    pytest.param(
        {"vehicles": 12},
        "vehicles: 12: JURISDICTION:PLATE entries separated by ';' (empty: none), or a JSON"
        ' list of "JURISDICTION:PLATE" strings or {"plate": ..., "jurisdiction": ...} objects',
        id="vehicles-neither-text-nor-list",
    ),
    pytest.param(
        {"vehicles": [{"plate": "ABC1234", "jurisdiction": "CA", "colour": "red"}]},
        "vehicles: {'plate': 'ABC1234', 'jurisdiction': 'CA', 'colour': 'red'}:"
        ' a "JURISDICTION:PLATE" string or an object with exactly the keys "plate" and'
        ' "jurisdiction"',
        id="vehicle-with-extra-key",
    ),
    pytest.param(
        {"vehicles": [{"plate": "AB$123", "jurisdiction": "CA"}]},
        "vehicles.plate: 'AB$123': 1-10 letters or digits once spaces and dashes are removed",
        id="plate-bad-character",
    ),
    pytest.param(
        {"vehicles": [{"plate": "ABCDEFGHIJK", "jurisdiction": "CA"}]},
        "vehicles.plate: 'ABCDEFGHIJK': 1-10 letters or digits once spaces and dashes are removed",
        id="plate-too-long",
    ),
    pytest.param(
        {"vehicles": [{"plate": "ABC1234", "jurisdiction": "C4"}]},
        "vehicles.jurisdiction: 'C4': US-CA, MX-BCN, CA-ON style (ISO 3166-2: 2 letters, '-',"
        " 1-3 letters or digits) or 2-3 letters (CA, TX, BCN)",
        id="jurisdiction-not-letters",
    ),
    pytest.param(
        {
            "vehicles": [
                {"plate": "ABC 1234", "jurisdiction": "CA"},
                {"plate": "abc-1234", "jurisdiction": "ca"},
            ]
        },
        "vehicles: 'CA:ABC1234': each vehicle once per record",
        id="same-vehicle-twice",
    ),
    pytest.param(
        {"vehicles": [{"plate": f"P{n}", "jurisdiction": "CA"} for n in range(17)]},
        "vehicles: (17 vehicles): at most 16 per record",
        id="too-many-vehicles",
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), NDJSON_RULES)
def test_ndjson_rule_is_refused_with_its_own_message(
    loaded_cache: CredentialCache, tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    source = write_ndjson(
        tmp_path / "credentials.ndjson",
        [valid_record(ref=NEW_REF, status="REVOKED"), valid_record(**overrides)],
    )
    assert refused_problems(loaded_cache, source) == [f"{source}:2: {expected}"]


@pytest.mark.parametrize("field", ["ref", "program", "valid_from", "holder_ref", "vehicles"])
def test_missing_field_is_refused(
    loaded_cache: CredentialCache, tmp_path: Path, field: str
) -> None:
    record = valid_record()
    del record[field]
    source = write_ndjson(tmp_path / "credentials.ndjson", [record])
    [problem] = refused_problems(loaded_cache, source)
    assert problem.startswith(f"{source}:1: {field}: (missing): ")


def test_duplicate_ref_in_one_file_names_both_lines(
    loaded_cache: CredentialCache, tmp_path: Path
) -> None:
    source = write_ndjson(
        tmp_path / "credentials.ndjson",
        [valid_record(ref=NEW_REF), valid_record(ref=GOOD_REF), valid_record(ref=NEW_REF.lower())],
    )
    assert refused_problems(loaded_cache, source) == [
        f"{source}:3: ref: '{NEW_REF}': each ref once per import; first on {source}:1"
    ]


def test_every_problem_of_a_record_is_reported_not_only_the_first(
    loaded_cache: CredentialCache, tmp_path: Path
) -> None:
    source = write_ndjson(
        tmp_path / "credentials.ndjson",
        [valid_record(ref="XX", program="NOPE", holder_ref="")],
    )
    fields = [problem.split(": ")[1] for problem in refused_problems(loaded_cache, source)]
    assert fields == ["ref", "program", "holder_ref"]


def test_problem_list_is_capped_and_says_how_many_more(
    loaded_cache: CredentialCache, tmp_path: Path
) -> None:
    bad = [valid_record(ref=f"AA{n:06X}", status="LOST") for n in range(MAX_REPORTED_PROBLEMS + 10)]
    source = write_ndjson(tmp_path / "credentials.ndjson", bad)
    with pytest.raises(CacheImportError) as raised:
        loaded_cache.import_file(source)
    assert len(raised.value.problems) == MAX_REPORTED_PROBLEMS
    assert raised.value.omitted == 10
    message = str(raised.value)
    assert message.startswith(f"import refused, {MAX_REPORTED_PROBLEMS + 10} problem(s):\n")
    assert message.endswith("\n... and 10 more")


def test_one_bad_record_among_many_good_refuses_them_all(
    loaded_cache: CredentialCache, tmp_path: Path
) -> None:
    good = [valid_record(ref=f"BB{n:06X}") for n in range(25_000)]
    source = write_ndjson(
        tmp_path / "credentials.ndjson", [*good, valid_record(ref="CC000000", status="LOST")]
    )
    refused_problems(loaded_cache, source)
    assert loaded_cache.lookup("BB000000") is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(
            b"{not json", "(line): '{not json': JSON: Expecting property name", id="not-json"
        ),
        pytest.param(b'["a", "list"]', "(line): ['a', 'list']: a JSON object", id="json-array"),
        pytest.param(
            b'{"ref": "\xff"}', '(line): b\'{"ref": "\\xff"}\': UTF-8 text', id="not-utf8"
        ),
    ],
)
def test_unreadable_ndjson_line_is_refused(
    loaded_cache: CredentialCache, tmp_path: Path, line: bytes, expected: str
) -> None:
    source = tmp_path / "credentials.ndjson"
    source.write_bytes(line + b"\n")
    [problem] = refused_problems(loaded_cache, source)
    assert problem.startswith(f"{source}:1: {expected}")


@pytest.mark.parametrize(
    ("vehicles", "expected"),
    [
        pytest.param(
            "CAABC1234",
            "vehicles: 'CAABC1234': JURISDICTION:PLATE entries separated by ';'",
            id="no-colon",
        ),
        pytest.param(
            "CA:ABC1234;",
            "vehicles: '': JURISDICTION:PLATE entries separated by ';'",
            id="trailing-separator",
        ),
        pytest.param(
            "CA:",
            "vehicles.plate: '': 1-10 letters or digits once spaces and dashes are removed",
            id="empty-plate",
        ),
        pytest.param(
            ":ABC1234",
            "vehicles.jurisdiction: '': US-CA, MX-BCN, CA-ON style (ISO 3166-2: 2 letters,"
            " '-', 1-3 letters or digits) or 2-3 letters (CA, TX, BCN)",
            id="empty-jurisdiction",
        ),
    ],
)
def test_bad_csv_vehicle_syntax_is_refused(
    loaded_cache: CredentialCache, tmp_path: Path, vehicles: str, expected: str
) -> None:
    source = write_csv(tmp_path / "credentials.csv", [valid_record(vehicles=vehicles)])
    assert refused_problems(loaded_cache, source) == [f"{source}:2: {expected}"]


def test_csv_unknown_and_missing_columns_are_reported_once_at_the_header(
    loaded_cache: CredentialCache, tmp_path: Path
) -> None:
    header = [
        "ref",
        "document_type",
        "programme",
        "status",
        "valid_from",
        "valid_until",
        "holder_ref",
    ]
    row = valid_record(programme="SENTRI")
    del row["program"], row["vehicles"]
    source = write_csv(tmp_path / "credentials.csv", [row, row], header=header)
    assert refused_problems(loaded_cache, source) == [
        f"{source}:1: programme: (column): unknown field: allowed are ref, document_type, program,"
        " status, valid_from, valid_until, holder_ref, vehicles; did you mean 'program'?",
        f"{source}:1: program: (missing): a column for every field",
        f"{source}:1: vehicles: (missing): a column for every field",
    ]


def test_csv_row_with_wrong_cell_count_is_refused(
    loaded_cache: CredentialCache, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "credentials.csv", [valid_record(vehicles="")])
    with source.open("a", encoding="utf-8") as stream:
        stream.write("E2801160600002084F5A3B33,PASSPORT_CARD\n")
    assert refused_problems(loaded_cache, source) == [
        f"{source}:3: (row): (2 cells): 8 cells, one per column"
    ]


def test_empty_csv_is_refused(loaded_cache: CredentialCache, tmp_path: Path) -> None:
    source = tmp_path / "credentials.csv"
    source.write_bytes(b"")
    [problem] = refused_problems(loaded_cache, source)
    assert problem.startswith(f"{source}:1: (header): (missing): a header row: ref, document_type")


def test_unknown_extension_is_refused_naming_the_formats(
    loaded_cache: CredentialCache, tmp_path: Path
) -> None:
    source = write_ndjson(tmp_path / "credentials.json", [valid_record()])
    assert refused_problems(loaded_cache, source) == [
        f"{source}: (file): '.json': one of .ndjson, .jsonl, .csv (the extension selects the format)"
    ]


def test_missing_file_is_refused(loaded_cache: CredentialCache, tmp_path: Path) -> None:
    source = tmp_path / "absent.csv"
    assert refused_problems(loaded_cache, source) == [
        f"{source}: (file): cannot read: No such file or directory"
    ]


def test_bad_record_given_in_code_names_source_and_index(loaded_cache: CredentialCache) -> None:
    with pytest.raises(CacheImportError) as raised:
        loaded_cache.import_records([valid_record(ref=NEW_REF), valid_record(status=None)], "demo")
    assert raised.value.problems == ["demo:2: status: None: one of ACTIVE, SUSPENDED, REVOKED"]
