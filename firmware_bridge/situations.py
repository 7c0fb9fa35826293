"""Seeded suites of the lane situations that make correlation hard.

Each situation is a generator of vehicles (and of reads from other lanes) that writes a format 2
scenario; the scenario carries its truth, so a run is scored by comparing crossings with it
(``bench/bench_fusion.py``, ``lane-agent scenarios generate``). The ranges below are what real
booths show (docs/fusion.md): cards in a windscreen read at -60 to -40 dBm on the booth
antennas, shielded cards and cards in the queue or the next lane at -85 to -70 dBm.

=================  =========================================================================
``clean``          single vehicles, 1-4 cards, many reads
``queue``          the next car 1-4 s behind; its cards read weakly, and rising, in the last
                   seconds of the current car's stay and as it pulls up
``adjacent``       cards of other lanes in short weak bursts: at the booth, in the gap, in an
                   empty lane
``missing_reads``  a card never read, read once, shielded (weak but steady), no card
``stopped``        60-180 s at the booth; reads before the loop and after it clears
``loop_faults``    a chattering loop, a dropout, a missing clear edge, a loop stuck occupied,
                   a vehicle the loop misses, tailgating pairs with no gap
``handed_back``    a card handed back to the car behind; stragglers 0.2-6 s after departure
``rush_hour``      all of the above mixed, as a busy lane has them
=================  =========================================================================

Every card is a distinct credential except the ones handed back, and every card of another
lane is a valid credential too: a card wrongly attached would earn an EXPEDITE, which is what a
suite must be able to catch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from firmware_bridge.scenario import (
    Anchor,
    Burst,
    CardPass,
    CardProfile,
    LoopFault,
    LoopFaultKind,
    Scenario,
    Shape,
    StrayRead,
    Vehicle,
    random_epc,
    random_plate,
)

BOOTH_ANTENNAS: Final = (1, 2)
_JURISDICTIONS: Final = ("CA", "AZ", "TX", "NM", "BC", "ON", "MX-BCN", "MX-SON", "MX-CHH")


@dataclass(slots=True)
class _Lane:
    """What a situation builds: vehicles one after the other, and reads from other lanes."""

    rng: random.Random
    vehicles: list[Vehicle] = field(default_factory=list)
    strays: list[StrayRead] = field(default_factory=list)

    def card(self, **changes: object) -> CardPass:
        """A card in a windscreen: read strongly at the booth all through the stay."""
        rng = self.rng
        strongest = round(rng.uniform(-58.0, -44.0), 1)
        weakest = round(strongest - rng.uniform(8.0, 16.0), 1)
        values: dict[str, object] = {
            "epc": random_epc(rng),
            "reads": rng.randint(8, 40),
            "rssi_dbm": (weakest, strongest),
            "antennas": BOOTH_ANTENNAS if rng.random() < 0.7 else (rng.choice(BOOTH_ANTENNAS),),
            "shape": Shape.PLATEAU if rng.random() < 0.6 else Shape.PEAK,
        }
        values.update(changes)
        return CardPass(**values)  # type: ignore[arg-type]

    def shielded(self) -> CardPass:
        rng = self.rng
        weakest = round(rng.uniform(-83.0, -78.0), 1)
        return self.card(
            profile=CardProfile.SHIELDED,
            rssi_dbm=(weakest, round(weakest + rng.uniform(4.0, 8.0), 1)),
            reads=rng.randint(8, 30),
        )

    def vehicle(self, cards: list[CardPass], **changes: object) -> Vehicle:
        rng = self.rng
        values: dict[str, object] = {
            "dwell_s": round(rng.uniform(6.0, 25.0), 2),
            "gap_s": round(rng.uniform(3.0, 12.0), 2),
            "cards": tuple(cards),
            "plate": random_plate(rng),
            "jurisdiction": rng.choice(_JURISDICTIONS),
        }
        values.update(changes)
        vehicle = Vehicle(**values)  # type: ignore[arg-type]
        self.vehicles.append(vehicle)
        return vehicle

    def cards(self, low: int = 1, high: int = 4) -> list[CardPass]:
        return [self.card() for _ in range(self.rng.randint(low, high))]

    def other_lane_burst(self, vehicle: int | None, anchor: Anchor, start_s: float) -> None:
        """A card of a car in the next lane, read a few times, weakly, in a short burst."""
        rng = self.rng
        weakest = round(rng.uniform(-84.0, -79.0), 1)
        card = CardPass(
            epc=random_epc(rng),
            reads=rng.randint(1, 6),
            rssi_dbm=(weakest, round(rng.uniform(-76.0, -70.0), 1)),
            antennas=(rng.choice(BOOTH_ANTENNAS),),
            shape=Shape.PEAK,
        )
        duration = round(rng.uniform(0.2, 2.0), 2)
        if vehicle is None:
            self.strays.append(StrayRead(at_s=start_s, card=card, duration_s=duration))
        else:
            self.strays.append(StrayRead(start_s, card, duration, vehicle=vehicle, anchor=anchor))


def _queue_approach(rng: random.Random, card: CardPass, gap_s: float) -> CardPass:
    """The card of a car queued behind: read weakly and rising from a few seconds before the car
    in front leaves until it pulls up to the booth itself."""
    lead = rng.uniform(1.0, 4.0)
    weakest = round(rng.uniform(-84.0, -79.0), 1)
    approach = Burst(
        start_s=round(-(gap_s + lead), 2),
        duration_s=round(gap_s + lead, 2),
        reads=rng.randint(2, 8),
        anchor=Anchor.ARRIVAL,
        rssi_dbm=(weakest, round(rng.uniform(-76.0, -70.0), 1)),
        shape=Shape.RISING,
        antennas=card.antennas,
    )
    return CardPass(**{**_fields(card), "bursts": (*card.bursts, approach)})  # type: ignore[arg-type]


def _fields(card: CardPass) -> dict[str, object]:
    return {name: getattr(card, name) for name in CardPass.__dataclass_fields__}


def _clean(lane: _Lane, count: int) -> None:
    """Single vehicles, 1-4 cards read strongly all through the stay."""
    for _ in range(count):
        lane.vehicle(lane.cards())


def _queue(lane: _Lane, count: int) -> None:
    """The next car 1-4 s behind; its cards read weakly, rising, as the car ahead leaves."""
    rng = lane.rng
    for index in range(count):
        gap = round(rng.uniform(1.0, 4.0), 2) if index else 5.0
        cards = lane.cards(0, 4) if rng.random() < 0.15 else lane.cards()
        if index:
            cards = [_queue_approach(rng, card, gap) for card in cards]
        lane.vehicle(cards, gap_s=gap)


def _adjacent(lane: _Lane, count: int) -> None:
    """Other lanes' cards in short weak bursts: at the booth, in the gap, in an empty lane."""
    rng = lane.rng
    for index in range(count):
        gap = round(rng.uniform(3.0, 12.0), 2)
        empty_before = index > 0 and rng.random() < 0.25
        if empty_before:
            # An empty lane: a long gap with only the next lane's cards read now and then.
            gap = round(rng.uniform(25.0, 40.0), 2)
            for _ in range(rng.randint(1, 3)):
                start = round(rng.uniform(1.0, gap - 3.0), 2)
                lane.other_lane_burst(index - 1, Anchor.DEPARTURE, start)
        cards = lane.cards(0, 3) if rng.random() < 0.2 else lane.cards()
        vehicle = lane.vehicle(cards, gap_s=gap)
        where = rng.random()
        if where < 0.5:  # at the booth, while this vehicle is there
            start = rng.uniform(0.3, max(0.4, vehicle.dwell_s - 0.5))
            lane.other_lane_burst(index, Anchor.ARRIVAL, round(start, 2))
        elif where < 0.8:  # in the gap after it
            lane.other_lane_burst(index, Anchor.DEPARTURE, round(rng.uniform(0.5, 2.5), 2))


def _missing_reads(lane: _Lane, count: int) -> None:
    """A card never read, read once, shielded (weak but steady); vehicles with no card."""
    rng = lane.rng
    for _ in range(count):
        kind = rng.choice(("never", "once", "shielded", "none", "shielded_only"))
        cards = lane.cards(0, 2)
        match kind:
            case "never":
                cards.append(lane.card(profile=CardProfile.NEVER))
                if len(cards) == 1:
                    cards.append(lane.card())
            case "once":
                cards.append(lane.card(profile=CardProfile.ONCE))
            case "shielded":
                cards.append(lane.shielded())
            case "shielded_only":
                cards = [lane.shielded()]
            case _:
                cards = []
        rng.shuffle(cards)
        lane.vehicle(cards)


def _stopped(lane: _Lane, count: int) -> None:
    """60-180 s at the booth; reads before the loop and after it clears."""
    rng = lane.rng
    for _ in range(count):
        gap = round(rng.uniform(3.0, 12.0), 2)
        cards = [
            lane.card(
                reads=rng.randint(20, 120),
                approach_reads=rng.randint(2, 6),
                # Read on its way in once the vehicle before it has left the booth.
                approach_s=round(rng.uniform(1.5, min(5.0, gap - 0.5)), 2),
                straggler_reads=rng.randint(1, 4),
                straggler_delay_s=round(rng.uniform(0.2, 1.5), 2),
                straggler_s=round(rng.uniform(0.5, 3.0), 2),
            )
            for _ in range(rng.randint(1, 3))
        ]
        lane.vehicle(cards, dwell_s=round(rng.uniform(60.0, 180.0), 1), gap_s=gap)


def _loop_faults(lane: _Lane, count: int) -> None:
    """Chatter, dropouts, lost edges, a loop stuck occupied or blind, tailgating pairs."""
    rng = lane.rng
    index = 0
    while index < count:
        kind = rng.choice(
            (
                "chatter_arrival",
                "chatter_departure",
                "dropout",
                "missing_clear",
                "stuck",
                "undetected",
                "tailgating",
            )
        )
        if kind == "tailgating" and index + 1 < count:
            lane.vehicle(lane.cards())
            lane.vehicle(lane.cards(), gap_s=0.0)
            index += 2
            continue
        fault: LoopFault | None
        match kind:
            case "chatter_arrival" | "chatter_departure":
                where = Anchor.ARRIVAL if kind == "chatter_arrival" else Anchor.DEPARTURE
                fault = LoopFault(LoopFaultKind.CHATTER, where=where, blips=rng.randint(2, 5))
            case "dropout":
                fault = LoopFault(LoopFaultKind.DROPOUT, blip_s=(0.3, 1.5))
            case "missing_clear":
                fault = LoopFault(LoopFaultKind.MISSING_CLEAR)
            case "stuck":
                fault = LoopFault(
                    LoopFaultKind.STUCK_OCCUPIED, duration_s=round(rng.uniform(40.0, 90.0), 1)
                )
            case "undetected":
                fault = LoopFault(LoopFaultKind.UNDETECTED)
            case _:
                fault = None
        lane.vehicle(lane.cards(), loop_fault=fault)
        index += 1


def _handed_back(lane: _Lane, count: int) -> None:
    """A card handed back to the car behind; stragglers 0.2-6 s after departure."""
    rng = lane.rng
    previous: list[CardPass] = []
    for _ in range(count):
        cards = lane.cards()
        if previous and rng.random() < 0.4:
            handed = rng.choice(previous)
            cards.append(lane.card(epc=handed.epc))
        cards = [
            lane.card(
                **{
                    **_fields(card),
                    "straggler_reads": rng.randint(1, 4),
                    "straggler_delay_s": round(rng.uniform(0.2, 3.0), 2),
                    "straggler_s": round(rng.uniform(0.5, 3.0), 2),
                }
            )
            if rng.random() < 0.7
            else card
            for card in cards
        ]
        lane.vehicle(cards, gap_s=round(rng.uniform(1.0, 6.0), 2))
        previous = cards


def _rush_hour(lane: _Lane, count: int) -> None:
    """All of the above mixed, as a busy lane has them."""
    builders = (_clean, _queue, _adjacent, _missing_reads, _handed_back)
    done = 0
    while done < count:
        step = min(count - done, lane.rng.randint(2, 5))
        lane.rng.choice(builders)(lane, step)
        done = len(lane.vehicles)


SITUATIONS: Final[dict[str, Callable[[_Lane, int], None]]] = {
    "clean": _clean,
    "queue": _queue,
    "adjacent": _adjacent,
    "missing_reads": _missing_reads,
    "stopped": _stopped,
    "loop_faults": _loop_faults,
    "handed_back": _handed_back,
    "rush_hour": _rush_hour,
}
"""Every situation, by name, in the order suites list them."""


def generate_situation(situation: str, vehicles: int, seed: int) -> Scenario:
    """A format 2 scenario of ``vehicles`` vehicles in ``situation``; repeatable for ``seed``."""
    try:
        build = SITUATIONS[situation]
    except KeyError:
        raise ValueError(
            f"unknown situation {situation!r} (known: {', '.join(SITUATIONS)})"
        ) from None
    if vehicles < 1:
        raise ValueError(f"vehicles must be >= 1, got {vehicles}")
    lane = _Lane(random.Random(f"{situation}:{seed}"))
    build(lane, vehicles)
    return Scenario(
        name=situation,
        vehicles=tuple(lane.vehicles),
        seed=seed,
        description=f"{len(lane.vehicles)} vehicles, situation {situation}, seed {seed}",
        controller_id="LANE-SIM",
        firmware=(1, 4, 2),
        stray_reads=tuple(lane.strays),
        format=2,
    )


def suite_cards(scenario: Scenario) -> list[str]:
    """Every card the scenario reads (vehicles' and other lanes'), once each, in order."""
    refs = [card.epc for vehicle in scenario.vehicles for card in vehicle.cards]
    refs += [stray.card.epc for stray in scenario.stray_reads]
    return list(dict.fromkeys(refs))
