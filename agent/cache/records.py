"""Credential records on their way into and out of the cache: validation, storage codes, readers.

A record arrives as a mapping of field name to value (one NDJSON object, one CSV row, or a dict
built in code) and leaves as a storage row: the compact tuple the ``credential`` table holds.
Everything that decides whether a record may enter the cache lives here, so the rules are in one
place and the store only orchestrates.

Storage encoding, chosen for the 15-million-record target (measured at 200 k records: 68 bytes
per record packed against 96 with a separate vehicle table and 120 with everything as text):

- ``ref``: the EPC as raw bytes (half the size of its hex text; a BLOB key compares with memcmp).
- document type, program, status: small integers. The codes below are part of the file format:
  never renumber one, only add. SQLite stores the integers 0 and 1 in the record header alone, so
  the most common values (ACTIVE, TRUSTED_TRAVELLER_CARD) cost no payload byte.
- ``valid_from``/``valid_until``: whole seconds since the Unix epoch, UTC.
- ``vehicles``: packed in the row as ``JURISDICTION:PLATE;…`` (NULL when none). Plates are
  normalised to ``[A-Z0-9]`` and jurisdictions to ``[A-Z0-9-]``, so the separators cannot occur
  inside them and one point read returns the whole record.

NDJSON and CSV are two spellings of one record (docs/import-format.md): both go through
:func:`validate_record`, which accepts the same values and refuses the same ones with the same
problem line. ``vehicles`` has a text notation (``CA:ABC1234;US-AZ:XYZ123``) and a JSON list
form; NDJSON takes either as the field's value, CSV either as the cell's text.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from agent.lane.credentials import (
    Credential,
    CredentialStatus,
    DocumentType,
    Program,
    RegisteredVehicle,
)

FIELDS: tuple[str, ...] = (
    "ref",
    "document_type",
    "program",
    "status",
    "valid_from",
    "valid_until",
    "holder_ref",
    "vehicles",
)
"""Every field of a record, all required, in the order CSV exports use."""
_FIELD_SET = frozenset(FIELDS)

DOCUMENT_TYPE_CODES: Mapping[DocumentType, int] = {
    DocumentType.TRUSTED_TRAVELLER_CARD: 1,
    DocumentType.PASSPORT_CARD: 2,
    DocumentType.ENHANCED_DRIVERS_LICENCE: 3,
    DocumentType.ENHANCED_ID: 4,
}
PROGRAM_CODES: Mapping[Program, int] = {
    Program.NONE: 0,
    Program.SENTRI: 1,
    Program.NEXUS: 2,
    Program.GLOBAL_ENTRY: 3,
    Program.FAST: 4,
}
STATUS_CODES: Mapping[CredentialStatus, int] = {
    CredentialStatus.ACTIVE: 1,
    CredentialStatus.SUSPENDED: 2,
    CredentialStatus.REVOKED: 3,
}

DOCUMENT_TYPE_BY_CODE: Mapping[int, DocumentType] = {c: m for m, c in DOCUMENT_TYPE_CODES.items()}
PROGRAM_BY_CODE: Mapping[int, Program] = {c: m for m, c in PROGRAM_CODES.items()}
STATUS_BY_CODE: Mapping[int, CredentialStatus] = {c: m for m, c in STATUS_CODES.items()}

REF_MIN_HEX_DIGITS = 8
REF_MAX_HEX_DIGITS = 124  # EPC bank of a Gen2 tag: up to 496 bits
HOLDER_REF_MAX_LENGTH = 64
PLATE_MAX_LENGTH = 10
MAX_VEHICLES = 16
VEHICLE_SEPARATOR = ";"
JURISDICTION_SEPARATOR = ":"

_REF = re.compile(rf"[0-9A-Fa-f]{{{REF_MIN_HEX_DIGITS},{REF_MAX_HEX_DIGITS}}}")
# Letters, digits and a little punctuation only: no spaces, so a name cannot pass as "First Last".
_HOLDER_REF = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{HOLDER_REF_MAX_LENGTH - 1}}}")
_PLATE = re.compile(rf"[A-Z0-9]{{1,{PLATE_MAX_LENGTH}}}")
_PLATE_DROPPED = str.maketrans("", "", " -")
JURISDICTION_PATTERN = r"(?:[A-Z]{2}-[A-Z0-9]{1,3}|[A-Z]{2,3})"
"""A normalised jurisdiction: ISO 3166-2 style (``US-CA``, ``MX-BCN``, ``CA-ON``, the codes of
:mod:`agent.lane.plate_formats`) or a short 2-3 letter code (``CA``, ``TX``, ``BCN``) as older
exports write it. Bundles (:mod:`agent.cache.bundle`) match the same pattern."""
_JURISDICTION = re.compile(JURISDICTION_PATTERN)

ALLOWED_REF = (
    f"{REF_MIN_HEX_DIGITS}-{REF_MAX_HEX_DIGITS} hex digits, an even number of them (the tag's EPC)"
)
ALLOWED_TIMESTAMP = (
    "ISO 8601 date-time from 1970 on, whole seconds, with a UTC offset, e.g. 2024-01-01T00:00:00Z"
)
ALLOWED_HOLDER_REF = (
    f"1-{HOLDER_REF_MAX_LENGTH} characters of A-Z a-z 0-9 . _ : - starting with a letter or digit"
    " (an opaque reference, never a name)"
)
ALLOWED_PLATE = f"1-{PLATE_MAX_LENGTH} letters or digits once spaces and dashes are removed"
ALLOWED_JURISDICTION = (
    "US-CA, MX-BCN, CA-ON style (ISO 3166-2: 2 letters, '-', 1-3 letters or digits)"
    " or 2-3 letters (CA, TX, BCN)"
)
ALLOWED_VEHICLE_ENTRY = "JURISDICTION:PLATE entries separated by ';'"
ALLOWED_VEHICLES = (
    "JURISDICTION:PLATE entries separated by ';' (empty: none), or a JSON list of"
    ' "JURISDICTION:PLATE" strings or {"plate": ..., "jurisdiction": ...} objects'
)
ALLOWED_VEHICLE_ITEM = (
    'a "JURISDICTION:PLATE" string or an object with exactly the keys "plate" and "jurisdiction"'
)


# Keyed by plain str so a value read from a file is looked up without building an enum first.
_DOCUMENT_TYPE_CODE_BY_NAME: Mapping[str, int] = {str(m): c for m, c in DOCUMENT_TYPE_CODES.items()}
_PROGRAM_CODE_BY_NAME: Mapping[str, int] = {str(m): c for m, c in PROGRAM_CODES.items()}
_STATUS_CODE_BY_NAME: Mapping[str, int] = {str(m): c for m, c in STATUS_CODES.items()}

ALLOWED_DOCUMENT_TYPE = "one of " + ", ".join(_DOCUMENT_TYPE_CODE_BY_NAME)
ALLOWED_PROGRAM = "one of " + ", ".join(_PROGRAM_CODE_BY_NAME)
ALLOWED_STATUS = "one of " + ", ".join(_STATUS_CODE_BY_NAME)

StorageRow = tuple[bytes, int, int, int, int, int, str, str | None]
"""(ref, document_type, program, status, valid_from, valid_until, holder_ref, vehicles)."""


class Problem(NamedTuple):
    """Why one field of one record cannot enter the cache."""

    field: str
    value: object
    allowed: str

    def describe(self, position: str) -> str:
        """``position: field: value: what is allowed`` — the line an operator reads."""
        return f"{position}: {self.field}: {show_value(self.value)}: {self.allowed}"


class Marker:
    """Stands in for a value in problem lines, shown bare so absent never reads as empty."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return self.label


MISSING = Marker("(missing)")
COLUMN = Marker("(column)")
_SHOWN_VALUE_MAX = 60


def show_value(value: object) -> str:
    """Quote a value for a problem line, shortened so one bad megabyte cell stays readable."""
    shown = repr(value)
    if len(shown) > _SHOWN_VALUE_MAX:
        return shown[: _SHOWN_VALUE_MAX - 3] + "..."
    return shown


def ref_key(ref: str) -> bytes | None:
    """The storage key for a tag reference in any letter case; None when it is not a valid EPC."""
    if _REF.fullmatch(ref) is None or len(ref) % 2:
        return None
    return bytes.fromhex(ref)


def _epoch_seconds(value: object) -> int | None:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    elif isinstance(value, datetime):
        moment = value
    else:
        return None
    if moment.tzinfo is None or moment.microsecond:
        return None
    seconds = int(moment.timestamp())
    return seconds if seconds >= 0 else None


def _text_vehicles(text: str, problems: list[Problem], pairs: list[tuple[object, object]]) -> None:
    """Add the pairs of ``JURISDICTION:PLATE;…`` text (one entry, for a list item) to ``pairs``."""
    for entry in text.split(VEHICLE_SEPARATOR):
        jurisdiction, colon, plate = entry.partition(JURISDICTION_SEPARATOR)
        if colon:
            pairs.append((jurisdiction, plate))
        else:
            problems.append(Problem("vehicles", entry, ALLOWED_VEHICLE_ENTRY))


def _vehicle_pairs(value: object, problems: list[Problem]) -> list[tuple[object, object]]:
    """The (jurisdiction, plate) pairs of a ``vehicles`` value in any accepted notation.

    One parser for both formats: text notation, or a JSON list (an NDJSON array, or the same
    array written in a CSV cell) of text entries or objects.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                problems.append(Problem("vehicles", value, ALLOWED_VEHICLES))
                return []
        elif not text:
            return []
        else:
            text_pairs: list[tuple[object, object]] = []
            _text_vehicles(value, problems, text_pairs)
            return text_pairs
    if not isinstance(value, list | tuple):
        problems.append(Problem("vehicles", value, ALLOWED_VEHICLES))
        return []
    pairs: list[tuple[object, object]] = []
    for item in value:
        if isinstance(item, str):
            if VEHICLE_SEPARATOR in item:  # one vehicle per list item
                problems.append(Problem("vehicles", item, ALLOWED_VEHICLE_ENTRY))
            else:
                _text_vehicles(item, problems, pairs)
        elif isinstance(item, Mapping) and set(item) == {"plate", "jurisdiction"}:
            pairs.append((item["jurisdiction"], item["plate"]))
        else:
            problems.append(Problem("vehicles", item, ALLOWED_VEHICLE_ITEM))
    return pairs


def _pack_vehicles(pairs: list[tuple[object, object]], problems: list[Problem]) -> str | None:
    if len(pairs) > MAX_VEHICLES:
        problems.append(
            Problem(
                "vehicles", Marker(f"({len(pairs)} vehicles)"), f"at most {MAX_VEHICLES} per record"
            )
        )
        return None
    packed: list[str] = []
    for raw_jurisdiction, raw_plate in pairs:
        jurisdiction = raw_jurisdiction.strip().upper() if isinstance(raw_jurisdiction, str) else ""
        plate = raw_plate.translate(_PLATE_DROPPED).upper() if isinstance(raw_plate, str) else ""
        ok = True
        if _JURISDICTION.fullmatch(jurisdiction) is None:
            problems.append(
                Problem("vehicles.jurisdiction", raw_jurisdiction, ALLOWED_JURISDICTION)
            )
            ok = False
        if _PLATE.fullmatch(plate) is None:
            problems.append(Problem("vehicles.plate", raw_plate, ALLOWED_PLATE))
            ok = False
        if not ok:
            continue
        entry = f"{jurisdiction}{JURISDICTION_SEPARATOR}{plate}"
        if entry in packed:
            problems.append(Problem("vehicles", entry, "each vehicle once per record"))
            continue
        packed.append(entry)
    return VEHICLE_SEPARATOR.join(packed) or None


def _unknown_field_problem(name: str, value: object) -> Problem:
    close = difflib.get_close_matches(name, FIELDS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return Problem(name, value, f"unknown field: allowed are {', '.join(FIELDS)}{hint}")


def validate_record(fields: Mapping[str, object]) -> tuple[StorageRow | None, list[Problem]]:
    """Check one record, from NDJSON, CSV or code, against every rule and encode it for storage.

    Returns the storage row when the record is valid, else None and every problem found (not
    just the first), so an operator can fix a file in one round.
    """
    problems: list[Problem] = []
    if not fields.keys() <= _FIELD_SET:
        problems.extend(
            _unknown_field_problem(name, value)
            for name, value in fields.items()
            if name not in _FIELD_SET
        )

    raw_ref = fields.get("ref", MISSING)
    key = ref_key(raw_ref) if isinstance(raw_ref, str) else None
    if key is None:
        problems.append(Problem("ref", raw_ref, ALLOWED_REF))

    raw_document_type = fields.get("document_type", MISSING)
    document_type = (
        _DOCUMENT_TYPE_CODE_BY_NAME.get(raw_document_type)
        if isinstance(raw_document_type, str)
        else None
    )
    if document_type is None:
        problems.append(Problem("document_type", raw_document_type, ALLOWED_DOCUMENT_TYPE))

    raw_program = fields.get("program", MISSING)
    program = _PROGRAM_CODE_BY_NAME.get(raw_program) if isinstance(raw_program, str) else None
    if program is None:
        problems.append(Problem("program", raw_program, ALLOWED_PROGRAM))

    raw_status = fields.get("status", MISSING)
    status = _STATUS_CODE_BY_NAME.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        problems.append(Problem("status", raw_status, ALLOWED_STATUS))

    raw_from = fields.get("valid_from", MISSING)
    valid_from = _epoch_seconds(raw_from)
    if valid_from is None:
        problems.append(Problem("valid_from", raw_from, ALLOWED_TIMESTAMP))
    raw_until = fields.get("valid_until", MISSING)
    valid_until = _epoch_seconds(raw_until)
    if valid_until is None:
        problems.append(Problem("valid_until", raw_until, ALLOWED_TIMESTAMP))
    if valid_from is not None and valid_until is not None and valid_from >= valid_until:
        problems.append(Problem("valid_until", raw_until, f"later than valid_from {raw_from!r}"))

    holder_ref = fields.get("holder_ref", MISSING)
    if not isinstance(holder_ref, str) or _HOLDER_REF.fullmatch(holder_ref) is None:
        problems.append(Problem("holder_ref", holder_ref, ALLOWED_HOLDER_REF))

    vehicles = _pack_vehicles(_vehicle_pairs(fields.get("vehicles", MISSING), problems), problems)

    if (
        problems
        or key is None
        or document_type is None
        or program is None
        or status is None
        or valid_from is None
        or valid_until is None
        or not isinstance(holder_ref, str)
    ):
        return None, problems
    return (key, document_type, program, status, valid_from, valid_until, holder_ref, vehicles), []


def row_to_credential(row: StorageRow) -> Credential:
    """Decode a storage row; raises KeyError on a code this version does not know."""
    key, document_type, program, status, valid_from, valid_until, holder_ref, vehicles = row
    return Credential(
        ref=key.hex().upper(),
        document_type=DOCUMENT_TYPE_BY_CODE[document_type],
        program=PROGRAM_BY_CODE[program],
        status=STATUS_BY_CODE[status],
        valid_from=datetime.fromtimestamp(valid_from, UTC),
        valid_until=datetime.fromtimestamp(valid_until, UTC),
        holder_ref=holder_ref,
        vehicles=unpack_vehicles(vehicles),
    )


def unpack_vehicles(packed: str | None) -> tuple[RegisteredVehicle, ...]:
    """The vehicles of a stored row, in the order they were imported."""
    if not packed:
        return ()
    vehicles = []
    for entry in packed.split(VEHICLE_SEPARATOR):
        jurisdiction, _, plate = entry.partition(JURISDICTION_SEPARATOR)
        vehicles.append(RegisteredVehicle(plate=plate, jurisdiction=jurisdiction))
    return tuple(vehicles)


def format_timestamp(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z``, the form exports and the meta table use."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def credential_to_record(
    credential: Credential, *, vehicles_as_text: bool = False
) -> dict[str, object]:
    """The import record for a credential: NDJSON form, or CSV form with ``vehicles_as_text``."""
    vehicles: object
    if vehicles_as_text:
        vehicles = VEHICLE_SEPARATOR.join(
            f"{v.jurisdiction}{JURISDICTION_SEPARATOR}{v.plate}" for v in credential.vehicles
        )
    else:
        vehicles = [{"plate": v.plate, "jurisdiction": v.jurisdiction} for v in credential.vehicles]
    return {
        "ref": credential.ref,
        "document_type": str(credential.document_type),
        "program": str(credential.program),
        "status": str(credential.status),
        "valid_from": format_timestamp(credential.valid_from),
        "valid_until": format_timestamp(credential.valid_until),
        "holder_ref": credential.holder_ref,
        "vehicles": vehicles,
    }


class ReadMeter:
    """How far a reader has read into its file, for progress reports.

    Counted in the blocks the file was read in (up to a few hundred KiB ahead of the record
    being validated): close enough for a progress bar, and free of per-line cost.
    """

    def __init__(self) -> None:
        self.total_bytes: int | None = None
        self._raw: io.RawIOBase | None = None

    def attach(self, raw: io.RawIOBase, total_bytes: int) -> None:
        """Called by a reader once it has opened its file."""
        self._raw, self.total_bytes = raw, total_bytes

    @property
    def bytes_read(self) -> int:
        """Bytes read from the file so far (all of them once the reader has closed it)."""
        if self._raw is None:
            return 0
        try:
            return self._raw.tell()
        except (OSError, ValueError):  # closed: the reader has finished
            return self.total_bytes or 0


def _metered(stream: io.BufferedIOBase | io.TextIOBase, meter: ReadMeter | None) -> None:
    if meter is not None:
        buffered = stream.buffer if isinstance(stream, io.TextIOWrapper) else stream
        raw = getattr(buffered, "raw", None)
        if isinstance(raw, io.RawIOBase):
            meter.attach(raw, os.fstat(raw.fileno()).st_size)


class SourceRecord(NamedTuple):
    """One record read from a source: its fields, or the problem that kept it from being read."""

    position: str
    fields: Mapping[str, object] | None
    problem: Problem | None


def read_ndjson(path: Path, meter: ReadMeter | None = None) -> Iterator[SourceRecord]:
    """One JSON object per line; blank lines are skipped. Raises OSError when unreadable."""
    name = str(path)
    with path.open("rb") as stream:
        _metered(stream, meter)
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            position = f"{name}:{number}"
            try:
                value = json.loads(line)
            except UnicodeDecodeError:
                yield SourceRecord(position, None, Problem("(line)", line.rstrip(), "UTF-8 text"))
                continue
            except json.JSONDecodeError as err:
                yield SourceRecord(
                    position,
                    None,
                    Problem("(line)", line.decode(errors="replace").rstrip(), f"JSON: {err.msg}"),
                )
                continue
            if not isinstance(value, dict):
                yield SourceRecord(position, None, Problem("(line)", value, "a JSON object"))
                continue
            yield SourceRecord(position, value, None)


def read_csv(path: Path, meter: ReadMeter | None = None) -> Iterator[SourceRecord]:
    """CSV with a header row naming every field; blank lines are skipped.

    A bad header is reported once at line 1 and ends the read: every row would otherwise repeat
    the same complaint. Raises OSError when unreadable.
    """
    name = str(path)
    with path.open(encoding="utf-8-sig", newline="") as stream:
        _metered(stream, meter)
        reader = csv.reader(stream, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                yield SourceRecord(
                    f"{name}:1",
                    None,
                    Problem("(header)", MISSING, "a header row: " + ", ".join(FIELDS)),
                )
                return
            header_problems = _header_problems(header)
            for problem in header_problems:
                yield SourceRecord(f"{name}:1", None, problem)
            if header_problems:
                return
            for cells in reader:
                position = f"{name}:{reader.line_num}"
                if not cells:
                    continue
                if len(cells) != len(header):
                    yield SourceRecord(
                        position,
                        None,
                        Problem(
                            "(row)",
                            Marker(f"({len(cells)} cells)"),
                            f"{len(header)} cells, one per column",
                        ),
                    )
                    continue
                yield SourceRecord(position, dict(zip(header, cells, strict=True)), None)
        except UnicodeDecodeError:
            yield SourceRecord(
                f"{name}:{reader.line_num + 1}", None, Problem("(file)", "(bytes)", "UTF-8 text")
            )
        except csv.Error as err:
            yield SourceRecord(
                f"{name}:{reader.line_num}", None, Problem("(row)", str(err), "valid CSV")
            )


def _header_problems(header: list[str]) -> list[Problem]:
    problems = [_unknown_field_problem(column, COLUMN) for column in header if column not in FIELDS]
    problems.extend(
        Problem(column, COLUMN, "each column once")
        for column in set(header)
        if header.count(column) > 1
    )
    problems.extend(
        Problem(field, MISSING, "a column for every field")
        for field in FIELDS
        if field not in header
    )
    return problems
