"""The bundle payload codec: every valid record survives encode → decode unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from agent.cache import records
from agent.cache.bundle import decode_record, encode_record
from agent.lane.credentials import CredentialStatus, DocumentType, Program

_refs = st.integers(4, 62).flatmap(lambda n: st.binary(min_size=n, max_size=n)).map(bytes.hex)
_holders = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)
_vehicles = st.lists(
    st.fixed_dictionaries(
        {
            "jurisdiction": st.from_regex(r"[A-Z]{2,3}", fullmatch=True),
            "plate": st.from_regex(r"[A-Z0-9]{1,10}", fullmatch=True),
        }
    ),
    max_size=records.MAX_VEHICLES,
    unique_by=lambda v: (v["jurisdiction"], v["plate"]),
)
_times = st.integers(0, 4_000_000_000)


@given(
    ref=_refs,
    document_type=st.sampled_from(DocumentType),
    program=st.sampled_from(Program),
    status=st.sampled_from(CredentialStatus),
    start=_times,
    length=st.integers(1, 10**9),
    holder=_holders,
    vehicles=_vehicles,
)
def test_every_valid_record_round_trips_through_a_payload_line(
    ref: str,
    document_type: DocumentType,
    program: Program,
    status: CredentialStatus,
    start: int,
    length: int,
    holder: str,
    vehicles: list[dict[str, str]],
) -> None:
    fields = {
        "ref": ref,
        "document_type": str(document_type),
        "program": str(program),
        "status": str(status),
        "valid_from": datetime.fromtimestamp(start, UTC).isoformat(),
        "valid_until": datetime.fromtimestamp(start + length, UTC).isoformat(),
        "holder_ref": holder,
        "vehicles": vehicles,
    }
    row, problems = records.validate_record(fields)
    assert problems == []
    assert row is not None
    assert decode_record(encode_record(row), 1) == row
