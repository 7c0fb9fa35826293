"""Reading a config file: every problem named with its file, line, key, value and what is
allowed (``lane-agent config check`` and the service print the same and exit 78)."""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config.base import _PATTERN_MEANING
from agent.config.model import AgentConfig
from agent.config.readers import READER_FAMILIES


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file, phrased for the technician who wrote it."""

    file: Path
    line: int | None
    key: str
    value: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        value = f" = {self.value}" if self.value else ""
        return f"{where}: {self.key}{value}: {self.message}"


class ConfigError(Exception):
    """The config file could not be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def load_config(path: Path) -> AgentConfig:
    """Read, validate and resolve a lane config file, or raise ``ConfigError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [ConfigProblem(path, None, "(file)", "", f"cannot read: {reason}")]
        ) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _toml_error_line(str(exc))
        raise ConfigError(
            [ConfigProblem(path, line, "(syntax)", "", f"not valid TOML: {exc}")]
        ) from exc
    try:
        # JSON mode keeps strict typing while accepting strings for enums and paths, and
        # arrays for tuples; TOML dates (never valid here) become strings and are refused.
        config = AgentConfig.model_validate_json(json.dumps(raw, default=str))
    except ValidationError as exc:
        raise ConfigError(_problems(path, text, raw, exc)) from exc
    return config.with_paths_relative_to(path.resolve().parent)


def _toml_error_line(message: str) -> int | None:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else None


def _problems(
    path: Path, text: str, raw: dict[str, Any], exc: ValidationError
) -> list[ConfigProblem]:
    errors = exc.errors(include_url=False)
    locs = [_without_union_tag(tuple(str(part) for part in error["loc"])) for error in errors]
    problems = []
    for error, loc_tuple in zip(errors, locs, strict=True):
        if any(
            len(other) > len(loc_tuple) and other[: len(loc_tuple)] == loc_tuple for other in locs
        ):
            continue  # a container-level echo of an item error already reported
        loc = list(loc_tuple)
        key = ".".join(loc) if loc else "(top level)"
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(loc, raw)
            given = error.get("input")
            value = "" if isinstance(given, dict) else _render(given)
        elif error["type"] == "missing":
            message = "required key is missing"
            value = ""
        elif error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            # The section names no family, or one there is not: say which there are.
            loc = [*loc, "type"]
            key = ".".join(loc)
            given = error.get("ctx", {}).get("tag")
            value = "" if given is None else _render(given)
            message = (
                "required key is missing" if given is None else "unknown reader family"
            ) + f"; one of: {', '.join(READER_FAMILIES)}"
        elif error["type"] == "string_pattern_mismatch":
            message = _PATTERN_MEANING.get(
                str(error.get("ctx", {}).get("pattern")), _plain(error["msg"])
            )
            value = _render(error.get("input"))
        else:
            message = _plain(error["msg"])
            given = error.get("input")
            value = "" if isinstance(given, dict) else _render(given)
        problems.append(ConfigProblem(path, _line_of(text, loc), key, value, message))
    return problems


def _without_union_tag(loc: tuple[str, ...]) -> tuple[str, ...]:
    """``("reader", "llrp", "host")`` → ``("reader", "host")``: the family is the section's
    ``type`` key, not a table of the file."""
    if len(loc) >= 2 and loc[0] == "reader" and loc[1] in READER_FAMILIES:
        return (loc[0], *loc[2:])
    return loc


def _unknown_key_message(loc: list[str], raw: dict[str, Any]) -> str:
    model: type[BaseModel] = AgentConfig
    for part in loc[:-1]:
        if model is AgentConfig and part == "reader":
            section = raw.get("reader")
            family = section.get("type") if isinstance(section, dict) else None
            model = READER_FAMILIES.get(str(family), READER_FAMILIES["lane_controller"])
            continue
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif field is not None and _section_of(annotation) is not None:
            model = _section_of(annotation)  # type: ignore[assignment]
        else:
            break
    allowed = sorted(model.model_fields)
    close = difflib.get_close_matches(loc[-1], allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key; {hint}allowed here: {', '.join(allowed)}"


def _section_of(annotation: object) -> type[BaseModel] | None:
    """The section model of an optional section (``X | None``), else None."""
    for member in getattr(annotation, "__args__", ()):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _plain(message: str) -> str:
    message = message.removeprefix("Value error, ")
    return message[0].lower() + message[1:] if message else message


def _render(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    return repr(value)


def _line_of(text: str, loc: list[str]) -> int | None:
    """Best-effort line of a key: the last occurrence of ``key =`` under its table header."""
    keys = [part for part in loc if not part.isdigit()]
    if not keys:
        return None
    table, key = keys[:-1], keys[-1]
    current: list[str] = []
    fallback: int | None = None
    section: int | None = None  # the table's header: where a missing key belongs
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"^\[([^\[\]]+)\]", stripped)
        if header:
            current = [p.strip().strip('"') for p in header.group(1).split(".")]
            if current == keys:
                fallback = number
            elif current == table and table and section is None:
                section = number
            continue
        assignment = re.match(r'^"?([A-Za-z0-9_-]+)"?\s*=', stripped)
        if not assignment or assignment.group(1) != key:
            continue
        if current == table:
            return number
        if fallback is None and current[: len(table)] == table:
            fallback = number
    return fallback if fallback is not None else section
