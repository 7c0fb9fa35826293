"""Writing scenarios back to TOML: what ``parse_scenario`` reads back to an equal scenario.

Generated suites (:mod:`firmware_bridge.situations`) are written with this, so a technician or
an outside test suite can read, edit and replay exactly what a benchmark played.
"""

from __future__ import annotations

from typing import Final

from firmware_bridge.codec import FaultCode
from firmware_bridge.scenario import (
    STRAGGLER_WINDOW_S,
    Burst,
    CardPass,
    CardProfile,
    LoopFault,
    Scenario,
    Shape,
    Vehicle,
)

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


def toml_value(value: object) -> str:
    """One TOML value: booleans, integers, floats (exactly), strings and arrays of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _burst_lines(burst: Burst) -> list[str]:
    return [
        f"anchor = {toml_value(burst.anchor.value)}",
        f"start_s = {toml_value(burst.start_s)}",
        f"duration_s = {toml_value(burst.duration_s)}",
        f"reads = {burst.reads}",
        f"rssi_dbm = {toml_value(burst.rssi_dbm)}",
        f"shape = {toml_value(burst.shape.value)}",
        f"antennas = {toml_value(burst.antennas)}",
    ]


def _card_lines(card: CardPass, table: str) -> list[str]:
    """The card's keys, then its bursts as ``[[<table>.bursts]]``."""
    lines = [f"epc = {toml_value(card.epc)}"]
    if card.tid is not None:
        lines.append(f"tid = {toml_value(card.tid)}")
    lines += [
        f"reads = {card.reads}",
        f"rssi_dbm = {toml_value(card.rssi_dbm)}",
        f"antennas = {toml_value(card.antennas)}",
    ]
    if card.straggler_reads:
        lines.append(f"straggler_reads = {card.straggler_reads}")
    if card.profile is not CardProfile.NORMAL:
        lines.append(f"profile = {toml_value(card.profile.value)}")
    if card.shape is not Shape.PEAK:
        lines.append(f"shape = {toml_value(card.shape.value)}")
    if card.approach_reads:
        lines.append(f"approach_reads = {card.approach_reads}")
        lines.append(f"approach_s = {toml_value(card.approach_s)}")
    if card.straggler_s != STRAGGLER_WINDOW_S:
        lines.append(f"straggler_s = {toml_value(card.straggler_s)}")
    if card.straggler_delay_s:
        lines.append(f"straggler_delay_s = {toml_value(card.straggler_delay_s)}")
    for burst in card.bursts:
        lines += ["", f"[[{table}.bursts]]", *_burst_lines(burst)]
    return lines


def _loop_fault_lines(fault: LoopFault) -> list[str]:
    lines = [
        "",
        "[vehicles.loop_fault]",
        f"kind = {toml_value(fault.kind.value)}",
        f"where = {toml_value(fault.where.value)}",
        f"blips = {fault.blips}",
        f"blip_s = {toml_value(fault.blip_s)}",
        f"duration_s = {toml_value(fault.duration_s)}",
    ]
    if fault.at_s is not None:
        lines.append(f"at_s = {toml_value(fault.at_s)}")
    return lines


def _vehicle_lines(vehicle: Vehicle) -> list[str]:
    lines = ["", "[[vehicles]]"]
    if vehicle.arrive_s is not None:
        lines.append(f"arrive_s = {toml_value(vehicle.arrive_s)}")
    else:
        lines.append(f"gap_s = {toml_value(vehicle.gap_s)}")
    lines += [f"loop_id = {vehicle.loop_id}", f"dwell_s = {toml_value(vehicle.dwell_s)}"]
    if vehicle.plate is not None:
        lines.append(f"plate = {toml_value(vehicle.plate)}")
    if vehicle.jurisdiction is not None:
        lines.append(f"jurisdiction = {toml_value(vehicle.jurisdiction)}")
    if vehicle.loop_fault is not None:
        lines += _loop_fault_lines(vehicle.loop_fault)
    for card in vehicle.cards:
        lines += ["", "[[vehicles.cards]]", *_card_lines(card, "vehicles.cards")]
    return lines


def dump_scenario(scenario: Scenario) -> str:
    """TOML text that :func:`~firmware_bridge.scenario.parse_scenario` reads back to an equal
    :class:`~firmware_bridge.scenario.Scenario` (format 2 whenever a format 2 key is used)."""
    uses_format_2 = (
        any(v.uses_format_2 for v in scenario.vehicles)
        or any(s.uses_format_2 for s in scenario.stray_reads)
        or not scenario.clock.is_perfect
    )
    version = max(scenario.format, 2 if uses_format_2 else 1)
    firmware = ".".join(str(part) for part in scenario.firmware)
    lines = ["[scenario]"]
    if version >= 2:
        lines.append(f"format = {version}")
    lines += [
        f"name = {toml_value(scenario.name)}",
        f"description = {toml_value(scenario.description)}",
        f"seed = {scenario.seed}",
        f"controller_id = {toml_value(scenario.controller_id)}",
        f"firmware = {toml_value(firmware)}",
    ]
    if not scenario.link.is_clean:
        link = scenario.link
        lines += [
            "",
            "[link]",
            f"drop_probability = {toml_value(link.drop_probability)}",
            f"drop_incoming_probability = {toml_value(link.drop_incoming_probability)}",
            f"garbage_probability = {toml_value(link.garbage_probability)}",
            f"garbage_max_bytes = {link.garbage_max_bytes}",
            f"corrupt_probability = {toml_value(link.corrupt_probability)}",
        ]
    if not scenario.clock.is_perfect:
        lines += ["", "[clock]", f"drift_ppm = {toml_value(scenario.clock.drift_ppm)}"]
        for step in scenario.clock.steps:
            lines += [
                "",
                "[[clock.steps]]",
                f"at_s = {toml_value(step.at_s)}",
                f"step_ms = {step.step_ms}",
            ]
    for vehicle in scenario.vehicles:
        lines += _vehicle_lines(vehicle)
    for stray in scenario.stray_reads:
        lines += ["", "[[stray_reads]]"]
        if stray.vehicle is not None:
            lines += [
                f"vehicle = {stray.vehicle}",
                f"anchor = {toml_value(stray.anchor.value)}",
                f"start_s = {toml_value(stray.at_s)}",
            ]
        else:
            lines.append(f"at_s = {toml_value(stray.at_s)}")
        lines.append(f"duration_s = {toml_value(stray.duration_s)}")
        lines += _card_lines(stray.card, "stray_reads")
    for fault in scenario.faults:
        try:
            code = toml_value(FaultCode(fault.code).name)
        except ValueError:
            code = str(fault.code)
        lines += [
            "",
            "[[faults]]",
            f"at_s = {toml_value(fault.at_s)}",
            f"code = {code}",
            f"detail = {toml_value(fault.detail)}",
        ]
    return "\n".join(lines) + "\n"
