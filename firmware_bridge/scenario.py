"""Scenario files: what a simulated lane controller plays (vehicles, cards, faults, bad wiring).

A scenario is a TOML file (see ``config/scenarios/``)::

    [scenario]
    name = "basic"
    seed = 7                      # makes read times, RSSI and link misbehaviour repeatable
    controller_id = "LANE-SIM-01"
    firmware = "1.4.2"

    [link]                        # optional; every probability defaults to 0
    drop_probability = 0.05       # an outgoing frame never reaches the agent
    drop_incoming_probability = 0 # a frame from the agent never reaches the controller
    garbage_probability = 0.05    # random bytes written between two frames
    garbage_max_bytes = 40
    corrupt_probability = 0.05    # one bit of an outgoing frame flipped (CRC catches it)

    [[vehicles]]
    gap_s = 2.0                   # time from the previous vehicle leaving (or start) to arrival
    loop_id = 1
    dwell_s = 3.0                 # time the presence loop stays occupied
    plate = "7ABC123"             # optional, for the camera work
    jurisdiction = "CA"

    [[vehicles.cards]]
    epc = "E280689400005003A4B1C201"
    tid = "E2806894200050035F9A0001"  # optional
    reads = 12                    # reads spread over the dwell
    rssi_dbm = [-68.0, -45.0]     # weakest and strongest reading
    antennas = [1, 2]
    straggler_reads = 1           # reads in the second after the loop clears

    [[stray_reads]]               # a card read with no vehicle on the loop (next lane over)
    at_s = 9.5                    # from the start of the scenario
    duration_s = 0.5
    epc = "E2806894000050039999F001"
    reads = 2

    [[faults]]
    at_s = 4.0
    code = "ANTENNA_VSWR"         # a FaultCode name or an integer
    detail = "antenna 2 vswr 3.1"

Card fields default to ``reads = 5``, ``rssi_dbm = [-70.0, -50.0]``, ``antennas = [1]``.
Unknown keys are errors, so a typo never silently changes a run.
"""

from __future__ import annotations

import math
import random
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from firmware_bridge.codec import (
    MAX_CONTROLLER_ID_SIZE,
    MAX_EPC_SIZE,
    MAX_FAULT_DETAIL_SIZE,
    MAX_TID_SIZE,
    FaultCode,
    FirmwareBridgeError,
)

STRAGGLER_WINDOW_S: Final = 1.0
"""Straggler reads fall within this long after the loop clears."""

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
class CardPass:
    """One card carried through the lane: how often and how strongly it is read."""

    epc: str
    reads: int = 5
    rssi_dbm: tuple[float, float] = DEFAULT_RSSI_DBM
    antennas: tuple[int, ...] = (1,)
    tid: str | None = None
    straggler_reads: int = 0


@dataclass(frozen=True, slots=True)
class Vehicle:
    """One vehicle: arrives ``gap_s`` after the previous one left, sits ``dwell_s`` on the loop."""

    dwell_s: float
    gap_s: float = 2.0
    loop_id: int = 1
    cards: tuple[CardPass, ...] = ()
    plate: str | None = None
    jurisdiction: str | None = None


@dataclass(frozen=True, slots=True)
class StrayRead:
    """Reads of a card with no vehicle of this lane on the loop, ``at_s`` from the start."""

    at_s: float
    card: CardPass
    duration_s: float = 0.5


@dataclass(frozen=True, slots=True)
class FaultInjection:
    """A FAULT the controller reports ``at_s`` from the start of the scenario."""

    at_s: float
    code: int
    detail: str = ""


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

    @property
    def duration_s(self) -> float:
        """Scenario time at which the last vehicle's straggler window has passed."""
        end = 0.0
        for vehicle in self.vehicles:
            end += vehicle.gap_s + vehicle.dwell_s
        if self.vehicles and any(card.straggler_reads for card in self.vehicles[-1].cards):
            end += STRAGGLER_WINDOW_S
        for stray in self.stray_reads:
            end = max(end, stray.at_s + stray.duration_s)
        for fault in self.faults:
            end = max(end, fault.at_s)
        return end


# --- Loading ---


class _Table:
    """A TOML table being read: typed getters that raise ScenarioError naming the key path."""

    def __init__(self, source: str, path: str, data: object):
        self.source = source
        self.path = path
        if not isinstance(data, Mapping):
            raise ScenarioError(source, path, "expected a table", data)
        self._data: Mapping[str, object] = data
        self._used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str, problem: str, value: object = None) -> ScenarioError:
        return ScenarioError(self.source, self.key(name), problem, value)

    def _get(self, name: str) -> object:
        self._used.add(name)
        return self._data.get(name)

    def has(self, name: str) -> bool:
        return name in self._data

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
        return _Table(self.source, self.key(name), value)

    def finish(self) -> None:
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            expected = ", ".join(sorted(self._used))
            raise self.error(unknown[0], f"unknown key (expected one of: {expected})")


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


def _card(table: _Table) -> CardPass:
    epc = _hex_field(table, "epc", MAX_EPC_SIZE, optional=False)
    assert epc is not None
    tid = _hex_field(table, "tid", MAX_TID_SIZE, optional=True)
    reads = table.integer("reads", 5, minimum=1, maximum=MAX_READS)
    straggler_reads = table.integer("straggler_reads", 0, minimum=0, maximum=MAX_READS)
    rssi = _rssi(table)
    antennas = _antennas(table)
    return CardPass(epc, reads, rssi, antennas, tid, straggler_reads)


def _rssi(table: _Table) -> tuple[float, float]:
    if not table.has("rssi_dbm"):
        table.array("rssi_dbm")
        return DEFAULT_RSSI_DBM
    raw = table.array("rssi_dbm")
    numbers = [float(v) for v in raw if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(raw) != 2 or len(numbers) != 2 or not MIN_RSSI_DBM <= numbers[0] <= numbers[1] <= 0:
        raise table.error(
            "rssi_dbm",
            f"expected [weakest, strongest] in dBm, {MIN_RSSI_DBM:g} <= weakest <= strongest <= 0",
            raw,
        )
    return (numbers[0], numbers[1])


def _antennas(table: _Table) -> tuple[int, ...]:
    if not table.has("antennas"):
        table.array("antennas")
        return (1,)
    raw = table.array("antennas")
    antennas = tuple(v for v in raw if isinstance(v, int) and not isinstance(v, bool))
    if not raw or len(antennas) != len(raw) or not all(0 <= v <= 255 for v in antennas):
        raise table.error("antennas", "expected a non-empty array of antenna numbers 0..255", raw)
    return antennas


def _array_of_tables(parent: _Table, name: str) -> list[_Table]:
    return [
        _Table(parent.source, f"{parent.key(name)}[{index}]", item)
        for index, item in enumerate(parent.array(name))
    ]


def _vehicle(table: _Table) -> Vehicle:
    dwell_s = table.number("dwell_s", minimum=0.0, maximum=600.0, exclusive_minimum=True)
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
    cards = []
    for card_table in _array_of_tables(table, "cards"):
        cards.append(_card(card_table))
        card_table.finish()
    table.finish()
    return Vehicle(dwell_s, gap_s, loop_id, tuple(cards), plate, jurisdiction)


def _stray(table: _Table) -> StrayRead:
    at_s = table.number("at_s", minimum=0.0, maximum=86_400.0)
    duration_s = table.number("duration_s", 0.5, minimum=0.0, maximum=600.0)
    card = _card(table)
    table.finish()
    return StrayRead(at_s, card, duration_s)


def _fault(table: _Table) -> FaultInjection:
    at_s = table.number("at_s", minimum=0.0, maximum=86_400.0)
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
    vehicles = tuple(_vehicle(t) for t in _array_of_tables(root, "vehicles"))
    strays = tuple(_stray(t) for t in _array_of_tables(root, "stray_reads"))
    faults = tuple(_fault(t) for t in _array_of_tables(root, "faults"))
    root.finish()
    if not vehicles and not strays and not faults:
        raise ScenarioError(
            source, "vehicles", "expected at least one vehicle, stray read or fault"
        )
    return Scenario(
        name=name,
        vehicles=vehicles,
        seed=seed,
        description=description or "",
        controller_id=controller_id,
        firmware=firmware,
        stray_reads=strays,
        faults=faults,
        link=link,
    )


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file; every error names the file, key and value."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(str(path), "", f"not UTF-8 text: {exc.reason}") from None
    return parse_scenario(text, str(path))


# --- Writing ---


_TOML_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _card_lines(card: CardPass) -> list[str]:
    lines = [f"epc = {_toml_value(card.epc)}"]
    if card.tid is not None:
        lines.append(f"tid = {_toml_value(card.tid)}")
    lines += [
        f"reads = {card.reads}",
        f"rssi_dbm = {_toml_value(card.rssi_dbm)}",
        f"antennas = {_toml_value(card.antennas)}",
    ]
    if card.straggler_reads:
        lines.append(f"straggler_reads = {card.straggler_reads}")
    return lines


def dump_scenario(scenario: Scenario) -> str:
    """TOML text that :func:`parse_scenario` reads back to an equal :class:`Scenario`."""
    firmware = ".".join(str(part) for part in scenario.firmware)
    lines = [
        "[scenario]",
        f"name = {_toml_value(scenario.name)}",
        f"description = {_toml_value(scenario.description)}",
        f"seed = {scenario.seed}",
        f"controller_id = {_toml_value(scenario.controller_id)}",
        f"firmware = {_toml_value(firmware)}",
    ]
    if not scenario.link.is_clean:
        link = scenario.link
        lines += [
            "",
            "[link]",
            f"drop_probability = {_toml_value(link.drop_probability)}",
            f"drop_incoming_probability = {_toml_value(link.drop_incoming_probability)}",
            f"garbage_probability = {_toml_value(link.garbage_probability)}",
            f"garbage_max_bytes = {link.garbage_max_bytes}",
            f"corrupt_probability = {_toml_value(link.corrupt_probability)}",
        ]
    for vehicle in scenario.vehicles:
        lines += [
            "",
            "[[vehicles]]",
            f"gap_s = {_toml_value(vehicle.gap_s)}",
            f"loop_id = {vehicle.loop_id}",
            f"dwell_s = {_toml_value(vehicle.dwell_s)}",
        ]
        if vehicle.plate is not None:
            lines.append(f"plate = {_toml_value(vehicle.plate)}")
        if vehicle.jurisdiction is not None:
            lines.append(f"jurisdiction = {_toml_value(vehicle.jurisdiction)}")
        for card in vehicle.cards:
            lines += ["", "[[vehicles.cards]]", *_card_lines(card)]
    for stray in scenario.stray_reads:
        lines += [
            "",
            "[[stray_reads]]",
            f"at_s = {_toml_value(stray.at_s)}",
            f"duration_s = {_toml_value(stray.duration_s)}",
            *_card_lines(stray.card),
        ]
    for fault in scenario.faults:
        try:
            code = _toml_value(FaultCode(fault.code).name)
        except ValueError:
            code = str(fault.code)
        lines += [
            "",
            "[[faults]]",
            f"at_s = {_toml_value(fault.at_s)}",
            f"code = {code}",
            f"detail = {_toml_value(fault.detail)}",
        ]
    return "\n".join(lines) + "\n"


# --- Generating ---

_JURISDICTIONS: Final = ("CA", "AZ", "TX", "NM", "BC", "ON", "MX-BCN", "MX-SON")


def _random_plate(rng: random.Random) -> str:
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(3))
    digits = "".join(rng.choice(string.digits) for _ in range(rng.choice((3, 4))))
    return (
        f"{rng.choice(string.digits)}{letters}{digits}" if rng.random() < 0.5 else letters + digits
    )


def _random_epc(rng: random.Random) -> str:
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
    Every vehicle has a plate and jurisdiction.
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
                epcs.append(_random_epc(rng))
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
                plate=_random_plate(rng),
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
