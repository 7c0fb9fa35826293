"""Matching rules and lane policy: from a closed crossing and cache records to a recommendation.

The agent recommends; the officer decides. Nothing here admits anyone: the best outcome is
``EXPEDITE`` (the officer may process the vehicle as a trusted-traveller crossing), and it is
given only when every card read is an active credential in a program this lane accepts and a
vehicle was actually detected at the booth.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from agent.lane.correlator import CardObservation, ClosedBy, Crossing
from agent.lane.credentials import Credential, CredentialStatus, Program


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
    """General lane: normal primary inspection, card results shown for information."""
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


_REASON_FOR_RESULT: dict[CardResult, Reason] = {
    CardResult.UNKNOWN: Reason.UNKNOWN_CARD,
    CardResult.REVOKED: Reason.CARD_REVOKED,
    CardResult.SUSPENDED: Reason.CARD_SUSPENDED,
    CardResult.EXPIRED: Reason.CARD_EXPIRED,
    CardResult.NOT_YET_VALID: Reason.CARD_NOT_YET_VALID,
    CardResult.PROGRAM_NOT_ALLOWED: Reason.PROGRAM_NOT_ALLOWED,
}


@dataclass(frozen=True, slots=True)
class LanePolicy:
    """The lane's rules, from config."""

    lane_type: LaneType
    allowed_programs: frozenset[Program]


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
) -> Decision:
    """Match every card of ``crossing`` and turn the results into a recommendation."""
    at = datetime.fromtimestamp(crossing.closed_at, tz=UTC)
    matches = tuple(match_card(card, lookup(card.ref), policy, at) for card in crossing.cards)
    reasons = _reasons(crossing, matches)
    return Decision(
        crossing=crossing,
        matches=matches,
        recommendation=_recommend(policy, reasons),
        reasons=reasons,
    )


def _reasons(crossing: Crossing, matches: Iterable[CardMatch]) -> tuple[Reason, ...]:
    found: set[Reason] = set()
    any_card = False
    for match in matches:
        any_card = True
        reason = _REASON_FOR_RESULT.get(match.result)
        if reason is not None:
            found.add(reason)
    if not any_card:
        found.add(Reason.NO_CARD_READ)
    if not crossing.vehicle_detected:
        found.add(Reason.NO_VEHICLE_DETECTED)
    if crossing.closed_by in (ClosedBy.MAX_DURATION, ClosedBy.NEXT_ARRIVAL):
        found.add(Reason.DEPARTURE_NOT_SEEN)
    order = list(Reason)
    return tuple(sorted(found, key=order.index))


def _recommend(policy: LanePolicy, reasons: tuple[Reason, ...]) -> Recommendation:
    if Reason.CARD_REVOKED in reasons:
        return Recommendation.ALERT
    if policy.lane_type is LaneType.GENERAL:
        return Recommendation.PRIMARY
    if reasons:
        return Recommendation.REFER
    return Recommendation.EXPEDITE
