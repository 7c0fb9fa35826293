"""Scenario files: what a simulated lane plays, and the truth of it (which card is in which car).

A scenario is a TOML file; ``docs/scenarios.md`` is its full reference and ``config/scenarios/``
holds examples. Format 2 (``format = 2`` in ``[scenario]``) says what real lanes do: where each
card is read relative to its vehicle (on the approach, at the booth, after it left, at any
delay), on which antenna, with what signal-strength profile; cards of vehicles in other lanes;
loop faults (chatter, a lost clear edge, a loop stuck occupied, a vehicle the loop never sees);
and a drifting or stepping controller clock. Files without ``format`` are format 1 and still
play: format 2 only adds keys, and a format 1 file that uses one is told so.

Every card listed under a vehicle is in that vehicle: that is the scenario's truth
(:mod:`firmware_bridge.scenario_plan` turns it into the events the controller sends and the
expected crossings). Unknown keys are errors, so a typo never silently changes a run.
"""

from __future__ import annotations

import enum
import math
import random
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from firmware_bridge.codec import (
    MAX_CONTROLLER_ID_SIZE,
    MAX_EPC_SIZE,
    MAX_FAULT_DETAIL_SIZE,
    MAX_TID_SIZE,
    FaultCode,
    FirmwareBridgeError,
)

FORMAT_VERSIONS: Final = (1, 2)
STRAGGLER_WINDOW_S: Final = 1.0
"""Format 1 straggler reads fall within this long after the loop clears (``straggler_s``)."""
DEFAULT_RSSI_DBM: Final = (-70.0, -50.0)
MIN_RSSI_DBM: Final = -120.0
MAX_READS: Final = 1000


class ScenarioError(FirmwareBridgeError):
    """A scenario file is not valid; names the file, the key and the offending value."""

    def __init__(self, source: str, key: str, problem: str, value: object = None):
        self.source = source
        self.key = key
        self.problem = problem
        self.value = value
        where = f"{source}: {key}" if key else source
        shown = "" if value is None else f" = {value!r}"
        super().__init__(f"{where}{shown}: {problem}")


class Shape(enum.StrEnum):
    """How the signal strength of a burst of reads moves between its weakest and strongest."""

    PEAK = "peak"
    """Weak, strongest half-way, weak again (a card passing the antenna)."""
    PLATEAU = "plateau"
    """Rises quickly, stays strongest, falls at the end (a vehicle that stops at the booth)."""
    STEADY = "steady"
    """Anywhere between weakest and strongest all along (a card that does not move)."""
    RISING = "rising"
    """Weakest to strongest (a vehicle coming closer)."""
    FALLING = "falling"
    """Strongest to weakest (a vehicle moving away)."""


class Anchor(enum.StrEnum):
    """What a burst's ``start_s`` counts from."""

    ARRIVAL = "arrival"
    DEPARTURE = "departure"


class CardProfile(enum.StrEnum):
    """How a card is read while its vehicle is at the booth."""

    NORMAL = "normal"
    """``reads`` reads spread over the stay with ``shape``."""
    SHIELDED = "shielded"
    """``reads`` reads spread over the stay, steady, at the strength given (set it weak)."""
    ONCE = "once"
    """A single read at a random moment of the stay."""
    NEVER = "never"
    """Never read at the booth (it may still be read on the approach or after departure)."""


class LoopFaultKind(enum.StrEnum):
    """What the presence loop gets wrong for one vehicle."""

    CHATTER = "chatter"
    """Short clears while the vehicle rolls on (``where = "arrival"``) or off (``"departure"``)."""
    DROPOUT = "dropout"
    """One clear in the middle of the stay (``at_s`` after arrival, lasting ``blip_s``)."""
    MISSING_CLEAR = "missing_clear"
    """The clear edge of this vehicle never reaches the agent."""
    MISSING_OCCUPIED = "missing_occupied"
    """The occupied edge of this vehicle never reaches the agent (its clear does)."""
    UNDETECTED = "undetected"
    """The loop never sees this vehicle at all."""
    STUCK_OCCUPIED = "stuck_occupied"
    """From this vehicle's arrival the loop reads occupied for ``duration_s``, whatever passes."""


@dataclass(frozen=True, slots=True)
class LinkMisbehaviour:
    """How badly the simulated cable behaves. All probabilities are per frame."""

    drop_probability: float = 0.0
    drop_incoming_probability: float = 0.0
    garbage_probability: float = 0.0
    garbage_max_bytes: int = 32
    corrupt_probability: float = 0.0

    @property
    def is_clean(self) -> bool:
        return self == LinkMisbehaviour()


@dataclass(frozen=True, slots=True)
class Burst:
    """Reads of one card in one stretch of time, placed relative to its vehicle (format 2)."""

    start_s: float
    duration_s: float
    reads: int
    anchor: Anchor = Anchor.ARRIVAL
    rssi_dbm: tuple[float, float] = DEFAULT_RSSI_DBM
    shape: Shape = Shape.STEADY
    antennas: tuple[int, ...] = (1,)


@dataclass(frozen=True, slots=True)
class CardPass:
    """One card carried through the lane: how often, how strongly and when it is read."""

    epc: str
    reads: int = 5
    rssi_dbm: tuple[float, float] = DEFAULT_RSSI_DBM
    antennas: tuple[int, ...] = (1,)
    tid: str | None = None
    straggler_reads: int = 0
    profile: CardProfile = CardProfile.NORMAL
    shape: Shape = Shape.PEAK
    approach_reads: int = 0
    approach_s: float = 3.0
    straggler_s: float = STRAGGLER_WINDOW_S
    straggler_delay_s: float = 0.0
    bursts: tuple[Burst, ...] = ()

    @property
    def uses_format_2(self) -> bool:
        return (
            self.profile is not CardProfile.NORMAL
            or self.shape is not Shape.PEAK
            or self.approach_reads > 0
            or self.straggler_s != STRAGGLER_WINDOW_S
            or self.straggler_delay_s != 0.0
            or bool(self.bursts)
        )


@dataclass(frozen=True, slots=True)
class LoopFault:
    """What the loop gets wrong for one vehicle (format 2)."""

    kind: LoopFaultKind
    where: Anchor = Anchor.ARRIVAL
    blips: int = 3
    blip_s: tuple[float, float] = (0.05, 0.3)
    at_s: float | None = None
    duration_s: float = 60.0


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One vehicle: arrives ``gap_s`` after the previous one left (or at ``arrive_s``) and sits
    ``dwell_s`` on the loop. Every card listed is in it."""

    dwell_s: float
    gap_s: float = 2.0
    loop_id: int = 1
    cards: tuple[CardPass, ...] = ()
    plate: str | None = None
    jurisdiction: str | None = None
    arrive_s: float | None = None
    loop_fault: LoopFault | None = None

    @property
    def uses_format_2(self) -> bool:
        return (
            self.arrive_s is not None
            or self.loop_fault is not None
            or any(card.uses_format_2 for card in self.cards)
        )


@dataclass(frozen=True, slots=True)
class StrayRead:
    """Reads of a card that is in no vehicle of this lane (a neighbouring lane's).

    At ``at_s`` from the start of the scenario, or (format 2) ``start_s`` from the arrival or
    departure of vehicle number ``vehicle`` (0-based).
    """

    at_s: float
    card: CardPass
    duration_s: float = 0.5
    vehicle: int | None = None
    anchor: Anchor = Anchor.ARRIVAL

    @property
    def uses_format_2(self) -> bool:
        return self.vehicle is not None or self.card.uses_format_2


@dataclass(frozen=True, slots=True)
class FaultInjection:
    """A FAULT the controller reports ``at_s`` from the start of the scenario."""

    at_s: float
    code: int
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ClockStep:
    """The controller's clock jumps by ``step_ms`` at ``at_s`` (format 2)."""

    at_s: float
    step_ms: int


@dataclass(frozen=True, slots=True)
class ControllerClock:
    """How the simulated controller's clock misbehaves (format 2)."""

    drift_ppm: float = 0.0
    steps: tuple[ClockStep, ...] = ()

    @property
    def is_perfect(self) -> bool:
        return self == ControllerClock()


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole simulated run."""

    name: str
    vehicles: tuple[Vehicle, ...]
    seed: int = 0
    description: str = ""
    controller_id: str = "LANE-SIM"
    firmware: tuple[int, int, int] = (1, 0, 0)
    stray_reads: tuple[StrayRead, ...] = ()
    faults: tuple[FaultInjection, ...] = ()
    link: LinkMisbehaviour = field(default_factory=LinkMisbehaviour)
    clock: ControllerClock = field(default_factory=ControllerClock)
    format: int = 1

    @property
    def duration_s(self) -> float:
        """Scenario time at which the last event has happened (see the plan)."""
        from firmware_bridge.scenario_plan import plan_scenario

        return max((event.at_s for event in plan_scenario(self)), default=0.0)


# --- Loading ---

_E = TypeVar("_E", bound=enum.StrEnum)
_FORMAT_2_HINT = " (a format 2 key: set format = 2 in [scenario])"


class _Table:
    """A TOML table being read: typed getters that raise ScenarioError naming the key path."""

    def __init__(self, source: str, path: str, data: object, *, v2: bool = False):
        self.source = source
        self.path = path
        self.v2 = v2
        if not isinstance(data, Mapping):
            raise ScenarioError(source, path, "expected a table", data)
        self._data: Mapping[str, object] = data
        self._used: set[str] = set()
        self._format_2_keys: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str, value: object = None) -> ScenarioError:
        return ScenarioError(self.source, self.key(name), problem, value)

    def _get(self, name: str) -> object:
        self._used.add(name)
        return self._data.get(name)

    def has(self, name: str) -> bool:
        return name in self._data

    def v2_key(self, name: str) -> bool:
        """Whether a format 2 key may be read here; in format 1 it stays unknown."""
        if self.v2:
            return True
        self._format_2_keys.add(name)
        return False

    def required(self, name: str) -> object:
        if name not in self._data:
            raise self.error(name, "required key is missing")
        return self._get(name)

    def number(
        self,
        name: str,
        default: float | None = None,
        *,
        minimum: float = -math.inf,
        maximum: float = math.inf,
        exclusive_minimum: bool = False,
    ) -> float:
        if not self.has(name) and default is not None:
            self._used.add(name)
            return default
        value = self.required(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise self.error(name, "expected a number", value)
        low_ok = value > minimum if exclusive_minimum else value >= minimum
        if not low_ok or value > maximum:
            low = "greater than" if exclusive_minimum else "at least"
            raise self.error(
                name, f"expected a number {low} {minimum:g} and at most {maximum:g}", value
            )
        return float(value)

    def optional_number(self, name: str, *, minimum: float, maximum: float) -> float | None:
        if not self.has(name):
            self._used.add(name)
            return None
        return self.number(name, minimum=minimum, maximum=maximum)

    def integer(self, name: str, default: int | None = None, *, minimum: int, maximum: int) -> int:
        if not self.has(name) and default is not None:
            self._used.add(name)
            return default
        value = self.required(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, "expected an integer", value)
        if not minimum <= value <= maximum:
            raise self.error(name, f"expected an integer {minimum}..{maximum}", value)
        return value

    def text(self, name: str, default: str | None = None, *, optional: bool = False) -> str | None:
        if not self.has(name):
            if default is None and not optional:
                self.required(name)
            self._used.add(name)
            return default
        value = self._get(name)
        if not isinstance(value, str):
            raise self.error(name, "expected a string", value)
        return value

    def choice(self, name: str, kind: type[_E], default: _E) -> _E:
        value = self.text(name, default.value)
        try:
            return kind(value or "")
        except ValueError:
            allowed = ", ".join(member.value for member in kind)
            raise self.error(name, f"expected one of {allowed}", value) from None

    def array(self, name: str) -> list[object]:
        if not self.has(name):
            self._used.add(name)
            return []
        value = self._get(name)
        if not isinstance(value, list):
            raise self.error(name, "expected an array", value)
        return value

    def table(self, name: str) -> _Table:
        value = self._get(name) if self.has(name) else {}
        return _Table(self.source, self.key(name), value, v2=self.v2)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            expected = ", ".join(sorted(self._used - self._format_2_keys))
            hint = _FORMAT_2_HINT if unknown[0] in self._format_2_keys else ""
            raise self.error(unknown[0], f"unknown key{hint} (expected one of: {expected})")


def _hex_field(table: _Table, name: str, max_bytes: int, *, optional: bool) -> str | None:
    value = table.text(name, optional=optional)
    if value is None:
        return None
    digits = value.replace(" ", "")
    if (
        not digits
        or len(digits) % 2
        or len(digits) > 2 * max_bytes
        or any(c not in string.hexdigits for c in digits)
    ):
        raise table.error(name, f"expected an even number of hex digits, 2..{2 * max_bytes}", value)
    return digits.upper()


def _ascii_field(table: _Table, name: str, value: str | None, maximum: int) -> None:
    if value is not None and (
        len(value) > maximum or not all(0x20 <= ord(c) <= 0x7E for c in value)
    ):
        raise table.error(name, f"expected printable ASCII of at most {maximum} characters", value)


def _pair(
    table: _Table,
    name: str,
    default: tuple[float, float],
    *,
    minimum: float,
    maximum: float,
    meaning: str,
) -> tuple[float, float]:
    if not table.has(name):
        table.array(name)
        return default
    raw = table.array(name)
    numbers = [float(v) for v in raw if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(raw) != 2 or len(numbers) != 2 or not minimum <= numbers[0] <= numbers[1] <= maximum:
        raise table.error(name, meaning, raw)
    return (numbers[0], numbers[1])


def _rssi(table: _Table, name: str = "rssi_dbm") -> tuple[float, float]:
    return _pair(
        table,
        name,
        DEFAULT_RSSI_DBM,
        minimum=MIN_RSSI_DBM,
        maximum=0.0,
        meaning=f"expected [weakest, strongest] in dBm, {MIN_RSSI_DBM:g} <= weakest <= "
        "strongest <= 0",
    )


def _antennas(table: _Table, default: tuple[int, ...] = (1,)) -> tuple[int, ...]:
    if not table.has("antennas"):
        table.array("antennas")
        return default
    raw = table.array("antennas")
    antennas = tuple(v for v in raw if isinstance(v, int) and not isinstance(v, bool))
    if not raw or len(antennas) != len(raw) or not all(0 <= v <= 255 for v in antennas):
        raise table.error("antennas", "expected a non-empty array of antenna numbers 0..255", raw)
    return antennas


def _array_of_tables(parent: _Table, name: str) -> list[_Table]:
    return [
        _Table(parent.source, f"{parent.key(name)}[{index}]", item, v2=parent.v2)
        for index, item in enumerate(parent.array(name))
    ]


def _burst(table: _Table, antennas: tuple[int, ...]) -> Burst:
    burst = Burst(
        anchor=table.choice("anchor", Anchor, Anchor.ARRIVAL),
        start_s=table.number("start_s", minimum=-3600.0, maximum=3600.0),
        duration_s=table.number("duration_s", 0.0, minimum=0.0, maximum=3600.0),
        reads=table.integer("reads", minimum=1, maximum=MAX_READS),
        rssi_dbm=_rssi(table),
        shape=table.choice("shape", Shape, Shape.STEADY),
        antennas=_antennas(table, antennas),
    )
    table.finish()
    return burst


def _card(table: _Table) -> CardPass:
    epc = _hex_field(table, "epc", MAX_EPC_SIZE, optional=False)
    assert epc is not None
    tid = _hex_field(table, "tid", MAX_TID_SIZE, optional=True)
    reads = table.integer("reads", 5, minimum=1, maximum=MAX_READS)
    straggler_reads = table.integer("straggler_reads", 0, minimum=0, maximum=MAX_READS)
    rssi = _rssi(table)
    antennas = _antennas(table)
    card = CardPass(epc, reads, rssi, antennas, tid, straggler_reads)
    if not table.v2_key("profile"):
        for name in (
            "shape",
            "approach_reads",
            "approach_s",
            "straggler_s",
            "straggler_delay_s",
            "bursts",
        ):
            table.v2_key(name)
        return card
    return CardPass(
        epc,
        reads,
        rssi,
        antennas,
        tid,
        straggler_reads,
        profile=table.choice("profile", CardProfile, CardProfile.NORMAL),
        shape=table.choice("shape", Shape, Shape.PEAK),
        approach_reads=table.integer("approach_reads", 0, minimum=0, maximum=MAX_READS),
        approach_s=table.number("approach_s", 3.0, minimum=0.0, maximum=600.0),
        straggler_s=table.number("straggler_s", STRAGGLER_WINDOW_S, minimum=0.0, maximum=600.0),
        straggler_delay_s=table.number("straggler_delay_s", 0.0, minimum=0.0, maximum=600.0),
        bursts=tuple(_burst(t, antennas) for t in _array_of_tables(table, "bursts")),
    )


def _loop_fault(table: _Table) -> LoopFault:
    fault = LoopFault(
        kind=table.choice("kind", LoopFaultKind, LoopFaultKind.CHATTER),
        where=table.choice("where", Anchor, Anchor.ARRIVAL),
        blips=table.integer("blips", 3, minimum=1, maximum=50),
        blip_s=_pair(
            table,
            "blip_s",
            (0.05, 0.3),
            minimum=0.001,
            maximum=60.0,
            meaning="expected [shortest, longest] clear in seconds, 0.001..60",
        ),
        at_s=table.optional_number("at_s", minimum=0.0, maximum=3600.0),
        duration_s=table.number("duration_s", 60.0, minimum=0.0, maximum=86_400.0),
    )
    if not table.has("kind"):
        raise table.error("kind", "required key is missing")
    table.finish()
    return fault


def _vehicle(table: _Table) -> Vehicle:
    dwell_s = table.number("dwell_s", minimum=0.0, maximum=3600.0, exclusive_minimum=True)
    gap_s = table.number("gap_s", 2.0, minimum=0.0, maximum=3600.0)
    loop_id = table.integer("loop_id", 1, minimum=0, maximum=255)
    plate = table.text("plate", optional=True)
    if plate is not None and not 1 <= len(plate) <= 16:
        raise table.error("plate", "expected 1..16 characters", plate)
    jurisdiction = table.text("jurisdiction", optional=True)
    if jurisdiction is not None and not 2 <= len(jurisdiction) <= 6:
        raise table.error(
            "jurisdiction", "expected 2..6 characters, like CA or MX-BCN", jurisdiction
        )
    arrive_s: float | None = None
    loop_fault: LoopFault | None = None
    if table.v2_key("arrive_s"):
        arrive_s = table.optional_number("arrive_s", minimum=0.0, maximum=864_000.0)
        if arrive_s is not None and table.has("gap_s"):
            raise table.error("gap_s", "give gap_s or arrive_s, not both", table._data["gap_s"])
    if table.v2_key("loop_fault") and table.has("loop_fault"):
        loop_fault = _loop_fault(table.table("loop_fault"))
    cards = []
    for card_table in _array_of_tables(table, "cards"):
        cards.append(_card(card_table))
        card_table.finish()
    table.finish()
    return Vehicle(dwell_s, gap_s, loop_id, tuple(cards), plate, jurisdiction, arrive_s, loop_fault)


def _stray(table: _Table, vehicles: int) -> StrayRead:
    vehicle: int | None = None
    anchor = Anchor.ARRIVAL
    if table.v2_key("vehicle") and table.has("vehicle"):
        vehicle = table.integer("vehicle", minimum=0, maximum=max(0, vehicles - 1))
        if not vehicles:
            raise table.error("vehicle", "there are no vehicles to place it by", vehicle)
        anchor = table.choice("anchor", Anchor, Anchor.ARRIVAL)
        at_s = table.number("start_s", minimum=-3600.0, maximum=3600.0)
    else:
        table.v2_key("anchor")
        table.v2_key("start_s")
        at_s = table.number("at_s", minimum=0.0, maximum=864_000.0)
    duration_s = table.number("duration_s", 0.5, minimum=0.0, maximum=600.0)
    card = _card(table)
    table.finish()
    return StrayRead(at_s, card, duration_s, vehicle, anchor)


def _fault(table: _Table) -> FaultInjection:
    at_s = table.number("at_s", minimum=0.0, maximum=864_000.0)
    raw = table.required("code")
    if isinstance(raw, str):
        try:
            code = int(FaultCode[raw])
        except KeyError:
            names = ", ".join(c.name for c in FaultCode)
            raise table.error("code", f"expected an integer or one of {names}", raw) from None
    else:
        code = table.integer("code", minimum=0, maximum=0xFFFF)
    detail = table.text("detail", "")
    assert detail is not None
    _ascii_field(table, "detail", detail, MAX_FAULT_DETAIL_SIZE)
    table.finish()
    return FaultInjection(at_s, code, detail)


def _clock(table: _Table) -> ControllerClock:
    drift = table.number("drift_ppm", 0.0, minimum=-100_000.0, maximum=100_000.0)
    steps = []
    for step in _array_of_tables(table, "steps"):
        steps.append(
            ClockStep(
                at_s=step.number("at_s", minimum=0.0, maximum=864_000.0),
                step_ms=step.integer("step_ms", minimum=-86_400_000, maximum=86_400_000),
            )
        )
        step.finish()
    table.finish()
    return ControllerClock(drift, tuple(sorted(steps, key=lambda s: s.at_s)))


def _firmware(table: _Table) -> tuple[int, int, int]:
    text = table.text("firmware", "1.0.0")
    assert text is not None
    parts = text.split(".")
    if len(parts) != 3 or not all(p.isdigit() and int(p) <= 255 for p in parts):
        raise table.error("firmware", "expected MAJOR.MINOR.PATCH, each 0..255", text)
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def _link(table: _Table) -> LinkMisbehaviour:
    probabilities = {
        name: table.number(name, 0.0, minimum=0.0, maximum=0.9)
        for name in (
            "drop_probability",
            "drop_incoming_probability",
            "garbage_probability",
            "corrupt_probability",
        )
    }
    garbage_max_bytes = table.integer("garbage_max_bytes", 32, minimum=1, maximum=4096)
    table.finish()
    return LinkMisbehaviour(garbage_max_bytes=garbage_max_bytes, **probabilities)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse scenario TOML; ``source`` names the file in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, "", f"invalid TOML: {exc}") from None
    root = _Table(source, "", document)
    head = root.table("scenario")
    version = head.integer("format", 1, minimum=1, maximum=max(FORMAT_VERSIONS))
    root.v2 = head.v2 = version >= 2
    name = head.text("name")
    assert name is not None
    description = head.text("description", "")
    seed = head.integer("seed", 0, minimum=0, maximum=2**63 - 1)
    controller_id = head.text("controller_id", "LANE-SIM")
    assert controller_id is not None
    if not controller_id:
        raise head.error("controller_id", "expected a non-empty string", controller_id)
    _ascii_field(head, "controller_id", controller_id, MAX_CONTROLLER_ID_SIZE)
    firmware = _firmware(head)
    head.finish()
    link = _link(root.table("link"))
    clock = ControllerClock()
    if root.v2_key("clock"):
        clock = _clock(root.table("clock"))
    vehicles = tuple(_vehicle(t) for t in _array_of_tables(root, "vehicles"))
    strays = tuple(_stray(t, len(vehicles)) for t in _array_of_tables(root, "stray_reads"))
    faults = tuple(_fault(t) for t in _array_of_tables(root, "faults"))
    root.finish()
    if not vehicles and not strays and not faults:
        raise ScenarioError(
            source, "vehicles", "expected at least one vehicle, stray read or fault"
        )
    scenario = Scenario(
        name=name,
        vehicles=vehicles,
        seed=seed,
        description=description or "",
        controller_id=controller_id,
        firmware=firmware,
        stray_reads=strays,
        faults=faults,
        link=link,
        clock=clock,
        format=version,
    )
    _check_timeline(scenario, source)
    return scenario


def _check_timeline(scenario: Scenario, source: str) -> None:
    """Vehicles take the booth one after the other: an ``arrive_s`` before the previous
    vehicle's departure is an error (a tailgater arrives exactly then: ``gap_s = 0``)."""
    clock = 0.0
    for index, vehicle in enumerate(scenario.vehicles):
        if vehicle.arrive_s is not None and vehicle.arrive_s < clock - 1e-9:
            raise ScenarioError(
                source,
                f"vehicles[{index}].arrive_s",
                f"expected no earlier than the previous vehicle's departure at {clock:g} s",
                vehicle.arrive_s,
            )
        arrive = vehicle.arrive_s if vehicle.arrive_s is not None else clock + vehicle.gap_s
        clock = arrive + vehicle.dwell_s


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; every error names the file, key and value."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(path), "", f"not UTF-8 text: {exc.reason}") from None
    return parse_scenario(text, str(path))


# --- Generating (the demo's lane) ---

_JURISDICTIONS: Final = ("CA", "AZ", "TX", "NM", "BC", "ON", "MX-BCN", "MX-SON")


def random_plate(rng: random.Random) -> str:
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
    digits = "".join(rng.choice(string.digits) for _ in range(rng.choice((3, 4))))
    return (
        f"{rng.choice(string.digits)}{letters}{digits}" if rng.random() < 0.5 else letters + digits
    )


def random_epc(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024X}"


def generate_scenario(
    vehicles: int,
    card_refs: Sequence[str],
    seed: int,
    *,
    name: str = "generated",
    unknown_card_ratio: float = 0.15,
    no_card_ratio: float = 0.2,
    max_cards: int = 3,
    gap_s: tuple[float, float] = (1.0, 6.0),
    dwell_s: tuple[float, float] = (2.0, 5.0),
    link: LinkMisbehaviour | None = None,
) -> Scenario:
    """A repeatable demo run: vehicles with 0..``max_cards`` cards drawn from ``card_refs``.

    About ``no_card_ratio`` of the vehicles carry no card; each card is one of ``card_refs``
    except for about ``unknown_card_ratio`` of them, which get a random EPC no cache knows.
    Every vehicle has a plate and jurisdiction. (``firmware_bridge.situations`` writes the
    harder lanes: queues, neighbouring lanes, loop faults.)
    """
    if vehicles < 0:
        raise ValueError(f"vehicles must be >= 0, got {vehicles}")
    refs = list(dict.fromkeys(ref.upper() for ref in card_refs))
    rng = random.Random(seed)
    built = []
    for _ in range(vehicles):
        count = 0 if rng.random() < no_card_ratio else rng.randint(1, max_cards)
        epcs: list[str] = []
        while len(epcs) < count:
            remaining = [ref for ref in refs if ref not in epcs]
            if not remaining or rng.random() < unknown_card_ratio:
                epcs.append(random_epc(rng))
            else:
                epcs.append(rng.choice(remaining))
        cards = tuple(
            CardPass(
                epc=epc,
                reads=rng.randint(3, 20),
                rssi_dbm=(round(rng.uniform(-75, -60), 1), round(rng.uniform(-55, -40), 1)),
                antennas=(1, 2) if rng.random() < 0.7 else (1,),
                straggler_reads=1 if rng.random() < 0.2 else 0,
            )
            for epc in epcs
        )
        built.append(
            Vehicle(
                dwell_s=round(rng.uniform(*dwell_s), 2),
                gap_s=round(rng.uniform(*gap_s), 2),
                loop_id=1,
                cards=cards,
                plate=random_plate(rng),
                jurisdiction=rng.choice(_JURISDICTIONS),
            )
        )
    return Scenario(
        name=name,
        vehicles=tuple(built),
        seed=seed,
        description=f"{vehicles} generated vehicles, seed {seed}",
        link=link or LinkMisbehaviour(),
    )
