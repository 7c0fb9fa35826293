"""Matching rules and lane policy: from a closed crossing and cache records to a recommendation.

The agent recommends; the officer decides. Nothing here admits anyone: the best outcome is
``EXPEDITE`` (the officer may process the vehicle as a trusted-traveller crossing), and it is
given only when every card the crossing carries is *attached* to the vehicle (occupant
association is sure it is in it), is an active credential in a program this lane accepts, and a
vehicle was actually detected at the booth; in a lane with a camera, also only when the plate
read is, character for character, one registered to a holder of a valid card. Missing or
uncertain plate evidence (no plate read, camera or reader down, a look-alike match) withholds
EXPEDITE and gives PRIMARY; a plate registered to none of the holders gives REFER.

A card whose association is *uncertain* is matched and shown, but it never helps the vehicle
(its credential counts for nothing, not even for the plate) and never hurts it silently: its
own result is not turned into a reason (a neighbour's revoked card must not raise an ALERT on
this vehicle); the crossing is a REFER with ``CARD_ASSOCIATION_UNCERTAIN``. Cards judged to be
the next vehicle's or another lane's are not matched at all.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.lane.association import Association
from agent.lane.correlator import CardObservation, ClosedBy, Crossing, LoopAnomaly, OpenedBy
from agent.lane.credentials import Credential, CredentialStatus, Program
from agent.lane.plates import PlateCheck, PlateMatchKind, PlateOutcome, assess_plate


class LaneType(enum.StrEnum):
    """How the lane uses card results."""

    TRUSTED_TRAVELLER = "trusted_traveller"
    """Dedicated lane (SENTRI, NEXUS, FAST…): every occupant must hold an accepted credential."""
    GENERAL = "general"
    """Any traveller may use it: card results are informational, never EXPEDITE."""


class CardResult(enum.StrEnum):
    """Outcome of matching one card against the cache."""

    VALID = "valid"
    UNKNOWN = "unknown"
    REVOKED = "revoked"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    PROGRAM_NOT_ALLOWED = "program_not_allowed"


class Recommendation(enum.StrEnum):
    """What the lane suggests to the officer, mildest first."""

    EXPEDITE = "EXPEDITE"
    """Trusted-traveller lane, every card valid and accepted: standard expedited processing."""
    PRIMARY = "PRIMARY"
    """Normal primary inspection: a general lane, or a camera lane without plate evidence."""
    REFER = "REFER"
    """Something does not add up: refer for closer inspection."""
    ALERT = "ALERT"
    """A revoked credential was presented: alert the officer."""


class Reason(enum.StrEnum):
    """Why the recommendation is what it is; several may apply to one crossing."""

    NO_CARD_READ = "NO_CARD_READ"
    UNKNOWN_CARD = "UNKNOWN_CARD"
    CARD_REVOKED = "CARD_REVOKED"
    CARD_SUSPENDED = "CARD_SUSPENDED"
    CARD_EXPIRED = "CARD_EXPIRED"
    CARD_NOT_YET_VALID = "CARD_NOT_YET_VALID"
    PROGRAM_NOT_ALLOWED = "PROGRAM_NOT_ALLOWED"
    NO_VEHICLE_DETECTED = "NO_VEHICLE_DETECTED"
    DEPARTURE_NOT_SEEN = "DEPARTURE_NOT_SEEN"
    PLATE_NOT_REGISTERED = "PLATE_NOT_REGISTERED"
    PLATE_LOOKALIKE_MATCH = "PLATE_LOOKALIKE_MATCH"
    PLATE_NOT_READ = "PLATE_NOT_READ"
    CAMERA_UNAVAILABLE = "CAMERA_UNAVAILABLE"
    PLATE_READER_UNAVAILABLE = "PLATE_READER_UNAVAILABLE"
    CACHE_STALE = "CACHE_STALE"
    """The credential data is older than the lane's max_cache_age (or of unknown age)."""
    CARD_ASSOCIATION_UNCERTAIN = "CARD_ASSOCIATION_UNCERTAIN"
    """A card was read that may or may not be in this vehicle: the officer checks it."""
    LOOP_EDGE_MISSING = "LOOP_EDGE_MISSING"
    """The vehicle was told from the one before or after it by its cards, not by the loop."""


_REASON_FOR_RESULT: dict[CardResult, Reason] = {
    CardResult.UNKNOWN: Reason.UNKNOWN_CARD,
    CardResult.REVOKED: Reason.CARD_REVOKED,
    CardResult.SUSPENDED: Reason.CARD_SUSPENDED,
    CardResult.EXPIRED: Reason.CARD_EXPIRED,
    CardResult.NOT_YET_VALID: Reason.CARD_NOT_YET_VALID,
    CardResult.PROGRAM_NOT_ALLOWED: Reason.PROGRAM_NOT_ALLOWED,
}

_REASON_FOR_PLATE: dict[PlateMatchKind, Reason] = {
    PlateMatchKind.NOT_REGISTERED: Reason.PLATE_NOT_REGISTERED,
    PlateMatchKind.LOOKALIKE: Reason.PLATE_LOOKALIKE_MATCH,
    PlateMatchKind.NOT_READ: Reason.PLATE_NOT_READ,
    PlateMatchKind.CAMERA_UNAVAILABLE: Reason.CAMERA_UNAVAILABLE,
    PlateMatchKind.READER_UNAVAILABLE: Reason.PLATE_READER_UNAVAILABLE,
}

NO_EXPEDITE_REASONS = frozenset(
    {
        Reason.PLATE_LOOKALIKE_MATCH,
        Reason.PLATE_NOT_READ,
        Reason.CAMERA_UNAVAILABLE,
        Reason.PLATE_READER_UNAVAILABLE,
        Reason.CACHE_STALE,
        Reason.LOOP_EDGE_MISSING,
    }
)
"""Missing or uncertain evidence that says nothing against the traveller (plate not read,
stale cache, a loop that missed an edge): no EXPEDITE, but PRIMARY (normal inspection) rather
than REFER."""


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """The lane's rules, from config."""

    lane_type: LaneType
    allowed_programs: frozenset[Program]
    plate_check: PlateCheck | None = None
    """Set when the lane has a camera: EXPEDITE then also needs the plate of a card holder."""
    max_cache_age_s: float | None = None
    """Cache data older than this withholds EXPEDITE (CACHE_STALE); None: no limit."""


@dataclass(frozen=True, slots=True)
class CardMatch:
    """One card of a crossing with its cache record (None when unknown) and the result."""

    observation: CardObservation
    credential: Credential | None
    result: CardResult


@dataclass(frozen=True, slots=True)
class Decision:
    """The lane's recommendation for one crossing."""

    crossing: Crossing
    matches: tuple[CardMatch, ...]
    recommendation: Recommendation
    reasons: tuple[Reason, ...]
    plate: PlateOutcome | None = None
    """The plate result; None in a lane without a camera."""
    cache_age_s: float | None = None
    """Age of the cache data at the crossing's close; None when unknown."""


def match_card(
    observation: CardObservation,
    credential: Credential | None,
    policy: LanePolicy,
    at: datetime,
) -> CardMatch:
    """Classify one card. Status problems outrank dates, dates outrank program rules."""
    result = _classify(credential, policy, at)
    return CardMatch(observation=observation, credential=credential, result=result)


def _classify(credential: Credential | None, policy: LanePolicy, at: datetime) -> CardResult:
    if credential is None:
        return CardResult.UNKNOWN
    if credential.status is CredentialStatus.REVOKED:
        return CardResult.REVOKED
    if credential.status is CredentialStatus.SUSPENDED:
        return CardResult.SUSPENDED
    if at >= credential.valid_until:
        return CardResult.EXPIRED
    if at < credential.valid_from:
        return CardResult.NOT_YET_VALID
    if (
        policy.lane_type is LaneType.TRUSTED_TRAVELLER
        and credential.program not in policy.allowed_programs
    ):
        return CardResult.PROGRAM_NOT_ALLOWED
    return CardResult.VALID


def decide(
    crossing: Crossing,
    lookup: Callable[[str], Credential | None],
    policy: LanePolicy,
    cache_fresh_at: float | None = None,
) -> Decision:
    """Match every card of ``crossing`` and turn the results into a recommendation.

    ``cache_fresh_at`` is when the cache data was last vouched for (Unix seconds, passed in: the
    core reads no clock); its age at the crossing's close decides CACHE_STALE.
    """
    at = datetime.fromtimestamp(crossing.closed_at, tz=UTC)
    matches = tuple(match_card(card, lookup(card.ref), policy, at) for card in crossing.cards)
    plate = _assess_plate(crossing, matches, policy.plate_check)
    reasons = _reasons(crossing, matches, plate)
    cache_age_s = None if cache_fresh_at is None else crossing.closed_at - cache_fresh_at
    if policy.max_cache_age_s is not None and (
        cache_age_s is None or cache_age_s > policy.max_cache_age_s
    ):
        order = list(Reason)
        reasons = tuple(sorted({*reasons, Reason.CACHE_STALE}, key=order.index))
    return Decision(
        crossing=crossing,
        matches=matches,
        recommendation=_recommend(policy, reasons),
        reasons=reasons,
        plate=plate,
        cache_age_s=cache_age_s,
    )


def _assess_plate(
    crossing: Crossing, matches: Iterable[CardMatch], check: PlateCheck | None
) -> PlateOutcome | None:
    if check is None:
        return None
    valid = [
        m.credential
        for m in matches
        if m.result is CardResult.VALID and m.credential and _attached(m)
    ]
    return assess_plate(
        crossing.plates,
        crossing.vision_faults,
        (vehicle for credential in valid for vehicle in credential.vehicles),
        any_valid_card=bool(valid),
        check=check,
    )


def _reasons(
    crossing: Crossing, matches: Iterable[CardMatch], plate: PlateOutcome | None = None
) -> tuple[Reason, ...]:
    found: set[Reason] = set()
    any_card = False
    for match in matches:
        any_card = True
        if not _attached(match):
            # Never helps, never hurts silently: its own result is no reason for this vehicle.
            found.add(Reason.CARD_ASSOCIATION_UNCERTAIN)
            continue
        reason = _REASON_FOR_RESULT.get(match.result)
        if reason is not None:
            found.add(reason)
    if not any_card:
        found.add(Reason.NO_CARD_READ)
    if not crossing.vehicle_detected:
        found.add(Reason.NO_VEHICLE_DETECTED)
    if crossing.closed_by in (
        ClosedBy.MAX_DURATION,
        ClosedBy.NEXT_ARRIVAL,
        ClosedBy.EVIDENCE_SPLIT,
    ):
        found.add(Reason.DEPARTURE_NOT_SEEN)
    if crossing.opened_by is OpenedBy.EVIDENCE or LoopAnomaly.SPLIT_BY_CARDS in crossing.anomalies:
        found.add(Reason.LOOP_EDGE_MISSING)
    plate_reason = _REASON_FOR_PLATE.get(plate.match.kind) if plate else None
    if plate_reason is not None:
        found.add(plate_reason)
    order = list(Reason)
    return tuple(sorted(found, key=order.index))


def _attached(match: CardMatch) -> bool:
    return match.observation.association is Association.ATTACHED


def _recommend(policy: LanePolicy, reasons: tuple[Reason, ...]) -> Recommendation:
    if Reason.CARD_REVOKED in reasons:
        return Recommendation.ALERT
    if policy.lane_type is LaneType.GENERAL:
        return Recommendation.PRIMARY
    if any(reason not in NO_EXPEDITE_REASONS for reason in reasons):
        return Recommendation.REFER
    if reasons:
        return Recommendation.PRIMARY
    return Recommendation.EXPEDITE
