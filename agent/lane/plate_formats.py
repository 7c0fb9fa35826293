"""The plate formats a border lane sees, as data: one entry per jurisdiction, with its source.

Voting (:mod:`agent.lane.plates`), the reader's ranking (:mod:`agent.vision.reader`) and the
synthetic training plates (``training/``) all read this one table, so a format added here is
evidence everywhere at once. It is plain data in a Python module rather than a file read at
run time because the lane core does no I/O: importing it is all it takes.

A template spells one standard serial format, character by character:

- ``L`` a letter (from the entry's ``letters``, all of A-Z unless it says otherwise),
- ``D`` a digit, ``A`` a letter or a digit,
- ``-``, space and ``·`` are separators printed on the plate and never part of the plate
  text (``·`` marks an emblem or a gap between character groups).

Formats are evidence, not rules: vanity, specialty, dealer and older plates fit none of them and
are still read and reported as read. Where several series are current (a state that moved to
a new format keeps the old plates on the road), every current one is listed.

Sources are the public references each entry names; a format that is not in this table is not
wrong, it just gets no help from voting. ``letters`` narrows a letter position only where the
issuing authority's rule is documented (Mexico leaves out I, O and Q).
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass

PLATE_CHARACTERS = string.ascii_uppercase + string.digits
"""What a plate text may contain once separators are removed."""
SEPARATORS = "- ·"
"""Template characters printed between character groups, never part of the plate text."""


@dataclass(frozen=True, slots=True)
class JurisdictionFormats:
    """The standard serial formats of one issuing jurisdiction."""

    code: str
    """ISO 3166-2 style code: ``US-CA``, ``MX-BCN``, ``CA-ON``; European countries ``EU-DE``."""
    name: str
    family: str
    """``US``, ``MX``, ``CA``, ``EU`` or ``SA``: the benchmarks and training group plates by it
    (the synthetic plates are drawn for the first four)."""
    templates: tuple[str, ...]
    source: str
    letters: str = string.ascii_uppercase
    """Letters a ``L`` or ``A`` position may hold."""
    evidence: bool = True
    """False for formats that admit so many strings that fitting one says little (Germany's
    area-code plates fit most 5 to 8 character readings): such a jurisdiction is still reported
    in a vote's ``formats`` but does not rank readings."""


_WIKI = "Wikipedia, 'Vehicle registration plates of {}' (current passenger series), read 2026-12"
_MX_SOURCE = (
    "NOM-001-SCT-2-2016 (Diario Oficial de la Federación, 24 June 2016): private cars three "
    "letters without I, O, Q then three or four digits (AAA-00-00, AAA-000-A since 2016), "
    "private trucks two letters and four or five digits; Wikipedia (es), 'Matrículas "
    "automovilísticas de México', read 2026-12"
)
_MX_FEDERAL_SOURCE = (
    "NOM-001-SCT-2-2016 federal public service (Servicio Público Federal / autotransporte "
    "federal) plates, serial 12-AA-3B; El Universal, 'Qué significan los elementos de tu "
    "placa', read 2026-12"
)
_MX_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_MX_PRIVATE = ("LLL-DD-DD", "LLL-DDD-L", "LL-DDDDD", "LL-DD-DDD")


JURISDICTIONS: tuple[JurisdictionFormats, ...] = (
    # United States: the four border states first, then the states most often seen at a port.
    JurisdictionFormats("US-CA", "California", "US", ("DLLLDDD",), _WIKI.format("California")),
    JurisdictionFormats("US-AZ", "Arizona", "US", ("LLL DDDD", "LLL DDD"), _WIKI.format("Arizona")),
    JurisdictionFormats(
        "US-NM", "New Mexico", "US", ("LLL DDD", "DDD LLL", "LLL DDDD"), _WIKI.format("New Mexico")
    ),
    JurisdictionFormats("US-TX", "Texas", "US", ("LLL-DDDD", "LLD-LLLL"), _WIKI.format("Texas")),
    JurisdictionFormats("US-NV", "Nevada", "US", ("DLL·DDD", "DDL·DDD"), _WIKI.format("Nevada")),
    JurisdictionFormats("US-UT", "Utah", "US", ("LDD DLL", "DDD LLL"), _WIKI.format("Utah")),
    JurisdictionFormats(
        "US-CO", "Colorado", "US", ("LLL-LDD", "LLL-DDD", "DDD-LLL"), _WIKI.format("Colorado")
    ),
    JurisdictionFormats(
        "US-OK", "Oklahoma", "US", ("LLL-DDD", "DDD-LLL", "LLL-DDDD"), _WIKI.format("Oklahoma")
    ),
    JurisdictionFormats(
        "US-FL", "Florida", "US", ("LLL·LDD", "DDD·LLL", "LLLL·DD"), _WIKI.format("Florida")
    ),
    JurisdictionFormats("US-GA", "Georgia", "US", ("LLL DDDD",), _WIKI.format("Georgia")),
    JurisdictionFormats("US-NY", "New York", "US", ("LLL-DDDD",), _WIKI.format("New York")),
    JurisdictionFormats(
        "US-NJ", "New Jersey", "US", ("LDD-LLL", "LLL-DDL"), _WIKI.format("New Jersey")
    ),
    JurisdictionFormats("US-PA", "Pennsylvania", "US", ("LLL-DDDD",), _WIKI.format("Pennsylvania")),
    JurisdictionFormats("US-IL", "Illinois", "US", ("LL DDDDD",), _WIKI.format("Illinois")),
    JurisdictionFormats(
        "US-MI", "Michigan", "US", ("LLL DDDD", "DLLL DD"), _WIKI.format("Michigan")
    ),
    JurisdictionFormats("US-OH", "Ohio", "US", ("LLL DDDD",), _WIKI.format("Ohio")),
    JurisdictionFormats(
        "US-WA", "Washington", "US", ("LLLDDDD", "DDD-LLL"), _WIKI.format("Washington")
    ),
    JurisdictionFormats(
        "US-MA", "Massachusetts", "US", ("DLLL DD", "DLL DDD"), _WIKI.format("Massachusetts")
    ),
    JurisdictionFormats(
        "US-VA", "Virginia", "US", ("LLL-DDDD",), _WIKI.format("Virginia (U.S. state)")
    ),
    JurisdictionFormats(
        "US-NC", "North Carolina", "US", ("LLL-DDDD",), _WIKI.format("North Carolina")
    ),
    JurisdictionFormats(
        "US",
        "United States, issuing state not identified",
        "US",
        ("LLDLDL", "DLLDDD", "LDDDDDD"),
        "Seen on the tune half of the dev photos (training/plate_eval_split.toml): 20, 3 and 2 "
        "of its 56 US plates; the issuing states are not identified in the labels",
    ),
    # Mexico: every state on the border, Nuevo León included, and the federal plates.
    *(
        JurisdictionFormats(code, name, "MX", _MX_PRIVATE, _MX_SOURCE, _MX_LETTERS)
        for code, name in (
            ("MX-BCN", "Baja California"),
            ("MX-SON", "Sonora"),
            ("MX-CHH", "Chihuahua"),
            ("MX-COA", "Coahuila"),
            ("MX-NLE", "Nuevo León"),
            ("MX-TAM", "Tamaulipas"),
        )
    ),
    JurisdictionFormats(
        "MX-CMX", "Ciudad de México", "MX", ("DDD-LLL", "LLL-DDD-L"), _MX_SOURCE, _MX_LETTERS
    ),
    JurisdictionFormats(
        "MX-FED", "Servicio Público Federal", "MX", ("DD-LL-DA",), _MX_FEDERAL_SOURCE, _MX_LETTERS
    ),
    # Canada.
    JurisdictionFormats("CA-ON", "Ontario", "CA", ("LLLL DDD",), _WIKI.format("Ontario")),
    JurisdictionFormats("CA-QC", "Québec", "CA", ("LDD LLL", "DDD LLL"), _WIKI.format("Quebec")),
    JurisdictionFormats(
        "CA-BC", "British Columbia", "CA", ("LLD DDL", "DDD LLL"), _WIKI.format("British Columbia")
    ),
    JurisdictionFormats("CA-AB", "Alberta", "CA", ("LLL-DDDD",), _WIKI.format("Alberta")),
    JurisdictionFormats("CA-MB", "Manitoba", "CA", ("LLL DDD",), _WIKI.format("Manitoba")),
    JurisdictionFormats("CA-SK", "Saskatchewan", "CA", ("DDD LLL",), _WIKI.format("Saskatchewan")),
    JurisdictionFormats(
        "CA-NB", "New Brunswick", "CA", ("LLL-DDD",), _WIKI.format("New Brunswick")
    ),
    JurisdictionFormats("CA-NS", "Nova Scotia", "CA", ("LLL DDD",), _WIKI.format("Nova Scotia")),
    # Europe: the plates most often seen on cars shipped or driven to North America, and the
    # Slovak/Czech series that make up much of the European dev photos.
    JurisdictionFormats(
        "EU-DE",
        "Germany",
        "EU",
        tuple(
            "L" * area + "·" + "L" * letters + " " + "D" * digits
            for area in (1, 2, 3)
            for letters in (1, 2)
            for digits in (1, 2, 3, 4)
            if 5 <= area + letters + digits <= 8
        ),
        _WIKI.format("Germany") + "; area code 1-3 letters, seal, 1-2 letters, 1-4 digits",
        evidence=False,
    ),
    JurisdictionFormats("EU-FR", "France", "EU", ("LL-DDD-LL",), _WIKI.format("France")),
    JurisdictionFormats("EU-IT", "Italy", "EU", ("LL DDDLL",), _WIKI.format("Italy")),
    JurisdictionFormats("EU-ES", "Spain", "EU", ("DDDD LLL",), _WIKI.format("Spain")),
    JurisdictionFormats(
        "EU-NL",
        "Netherlands",
        "EU",
        ("LL-DDD-L", "D-LLL-DD", "LLL-DD-L"),
        _WIKI.format("the Netherlands"),
    ),
    JurisdictionFormats(
        "EU-PL", "Poland", "EU", ("LL DDDDD", "LLL DDDD", "LL DDDLL"), _WIKI.format("Poland")
    ),
    JurisdictionFormats(
        "EU-SK", "Slovakia", "EU", ("LL-DDDLL", "LL DDDLL"), _WIKI.format("Slovakia")
    ),
    JurisdictionFormats(
        "EU-CZ", "Czechia", "EU", ("DLD DDDD", "DLL DDDD"), _WIKI.format("the Czech Republic")
    ),
    JurisdictionFormats(
        "EU-GB", "United Kingdom", "EU", ("LLDD LLL",), _WIKI.format("the United Kingdom")
    ),
    # South America: formats only (the synthetic plates draw the four families above). Mercosur
    # plates of Argentina (LL DDD LL) already fit the European series above.
    JurisdictionFormats(
        "SA-BR",
        "Brazil",
        "SA",
        ("LLL DLDD", "LLL-DDDD"),
        "CONTRAN (Conselho Nacional de Trânsito) resolution of March 2018: Mercosur plates "
        "LLL1L11 (for example BRA2E19) on new cars from September 2018, the earlier grey "
        "plates LLL-1111 until replaced; Wikipedia, 'Vehicle registration plates of Brazil', "
        "read 2026-12",
    ),
)
"""Every jurisdiction whose formats the lane knows, grouped by family."""

FAMILIES: tuple[str, ...] = ("US", "MX", "CA", "EU", "SA")

COUNTRY_LEGENDS: tuple[str, ...] = ("USA", "United States", "México", "Canada", "Brasil")
"""Country names printed on plates of the families above (``USA`` at the foot of many US
plates, ``MÉXICO`` across the top of every Mexican one). With the jurisdictions' own names
they are the legends a text detector finds beside the serial (see ``plate_legends``)."""


def plate_legends() -> frozenset[str]:
    """Plate texts that are a printed legend, never a serial: every jurisdiction's name and
    the country names, as plate text (upper case, accents and spaces dropped), whole and as
    their words of four letters or more (``NEW MEXICO`` is read as one line or two)."""
    legends: set[str] = set()
    # "US" (issuing state not identified) is a group of formats, not a name on a plate.
    names = (entry.name for entry in JURISDICTIONS if "-" in entry.code)
    for name in (*names, *COUNTRY_LEGENDS):
        plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().upper()
        words = ["".join(ch for ch in word if ch.isalnum()) for word in plain.split()]
        legends.add("".join(words))
        legends.update(word for word in words if len(word) >= 4)
    return frozenset(legends)


def template_text(template: str) -> str:
    """The template without its separators: one ``L``/``D``/``A`` per plate character."""
    return "".join(ch for ch in template if ch not in SEPARATORS)


def template_pattern(template: str, letters: str = string.ascii_uppercase) -> str:
    """Regular expression (full match, no anchors) of the plate texts ``template`` allows."""
    letter_class = "[" + letters + "]"
    classes = {"L": letter_class, "D": "[0-9]", "A": "[" + letters + "0-9]"}
    parts: list[str] = []
    for ch in template_text(template):
        if ch not in classes:
            raise ValueError(f"template {template!r}: {ch!r} is not L, D, A or a separator")
        parts.append(classes[ch])
    return "".join(parts)


def compiled_formats(
    jurisdictions: tuple[JurisdictionFormats, ...] = JURISDICTIONS, *, evidence_only: bool = False
) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """(jurisdiction code, compiled full-match pattern) for every template, table order;
    ``evidence_only`` leaves out the jurisdictions whose formats do not rank readings."""
    return tuple(
        (entry.code, re.compile(template_pattern(template, entry.letters)))
        for entry in jurisdictions
        if entry.evidence or not evidence_only
        for template in entry.templates
    )
