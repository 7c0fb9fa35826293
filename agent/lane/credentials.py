"""What the lane knows about a credential: the record the cache returns for a tag reference.

The tag on a trusted-traveller card carries only a reference number; everything else lives in
the credential cache. The core sees records as these frozen values and never the database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Program(enum.StrEnum):
    """Trusted-traveller program a credential belongs to (NONE for plain WHTI documents)."""

    SENTRI = "SENTRI"
    NEXUS = "NEXUS"
    GLOBAL_ENTRY = "GLOBAL_ENTRY"
    FAST = "FAST"
    NONE = "NONE"


class DocumentType(enum.StrEnum):
    """Physical document that carries the tag."""

    TRUSTED_TRAVELLER_CARD = "TRUSTED_TRAVELLER_CARD"
    PASSPORT_CARD = "PASSPORT_CARD"
    ENHANCED_DRIVERS_LICENCE = "ENHANCED_DRIVERS_LICENCE"
    ENHANCED_ID = "ENHANCED_ID"


class CredentialStatus(enum.StrEnum):
    """Administrative status as central last published it."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"


@dataclass(frozen=True, slots=True)
class RegisteredVehicle:
    """A vehicle registered to a credential holder (used for plate matching)."""

    plate: str
    jurisdiction: str


@dataclass(frozen=True, slots=True)
class Credential:
    """One cache record, keyed by the tag's reference number (EPC, upper-case hex).

    ``holder_ref`` is an opaque reference central resolves; the lane never holds names or
    birth dates.
    """

    ref: str
    document_type: DocumentType
    program: Program
    status: CredentialStatus
    valid_from: datetime
    valid_until: datetime
    holder_ref: str
    vehicles: tuple[RegisteredVehicle, ...] = field(default=())
