"""Property tests: any valid credential comes back from the cache exactly as it went in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cache import CredentialCache
from agent.cache.records import (
    HOLDER_REF_MAX_LENGTH,
    MAX_VEHICLES,
    credential_to_record,
    ref_key,
    validate_record,
)
from agent.lane.credentials import (
    Credential,
    CredentialStatus,
    DocumentType,
    Program,
    RegisteredVehicle,
)
from tests.cache.conftest import write_csv, write_ndjson

refs = st.binary(min_size=4, max_size=62).map(lambda key: key.hex().upper())
moments = st.datetimes(
    # Hypothesis takes naive bounds and attaches the zone from timezones=.
    min_value=datetime(1970, 1, 1),
    max_value=datetime(9000, 1, 1),
    timezones=st.just(UTC),
).map(lambda moment: moment.replace(microsecond=0))
vehicles = st.lists(
    st.builds(
        RegisteredVehicle,
        plate=st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True),
        jurisdiction=st.from_regex(r"[A-Z]{2,3}", fullmatch=True),
    ),
    max_size=MAX_VEHICLES,
    unique=True,
).map(tuple)


@st.composite
def credentials(draw: st.DrawFn) -> Credential:
    valid_from = draw(moments)
    return Credential(
        ref=draw(refs),
        document_type=draw(st.sampled_from(DocumentType)),
        program=draw(st.sampled_from(Program)),
        status=draw(st.sampled_from(CredentialStatus)),
        valid_from=valid_from,
        valid_until=valid_from + draw(st.integers(1, 10**9).map(lambda s: timedelta(seconds=s))),
        holder_ref=draw(
            st.from_regex(
                rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{HOLDER_REF_MAX_LENGTH - 1}}}", fullmatch=True
            )
        ),
        vehicles=draw(vehicles),
    )


batches = st.lists(credentials(), min_size=1, max_size=8, unique_by=lambda c: c.ref)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CredentialCache]:
    """One cache for all examples: each example upserts its batch and reads it back."""
    with CredentialCache.open(tmp_path_factory.mktemp("roundtrip") / "credentials.db") as cache:
        yield cache


# The module-scoped cache is shared on purpose; each example checks only its own records.
hypothesis_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@hypothesis_settings
@given(batch=batches)
def test_records_given_in_code_round_trip(
    shared_cache: CredentialCache, batch: list[Credential]
) -> None:
    shared_cache.import_records([credential_to_record(c) for c in batch], "hypothesis")
    assert [shared_cache.lookup(c.ref) for c in batch] == batch


@hypothesis_settings
@given(batch=batches, lower_case_in_file=st.booleans())
def test_ndjson_and_csv_files_round_trip(
    shared_cache: CredentialCache,
    tmp_path_factory: pytest.TempPathFactory,
    batch: list[Credential],
    lower_case_in_file: bool,
) -> None:
    folder = tmp_path_factory.mktemp("files")
    ndjson_records = [credential_to_record(c) for c in batch]
    csv_rows = [credential_to_record(c, vehicles_as_text=True) for c in batch]
    if lower_case_in_file:
        for record in (*ndjson_records, *csv_rows):
            record["ref"] = str(record["ref"]).lower()
    for source in (
        write_ndjson(folder / "credentials.ndjson", ndjson_records),
        write_csv(folder / "credentials.csv", csv_rows),
    ):
        shared_cache.import_file(source)
        assert [shared_cache.lookup(c.ref) for c in batch] == batch


@given(text=st.text(max_size=130))
def test_ref_key_accepts_exactly_even_length_hex_of_8_to_124_digits(text: str) -> None:
    is_valid = (
        8 <= len(text) <= 124
        and len(text) % 2 == 0
        and all(ch in "0123456789abcdefABCDEF" for ch in text)
    )
    key = ref_key(text)
    assert (key is not None) == is_valid
    if key is not None:
        assert key.hex() == text.lower()


@given(record=st.dictionaries(st.sampled_from(["ref", "status", "holder_ref", "x"]), st.text()))
def test_arbitrary_junk_records_are_refused_never_crash(record: dict[str, object]) -> None:
    row, problems = validate_record(record)
    assert row is None
    assert problems
    assert json.dumps([p.describe("f:1") for p in problems])
