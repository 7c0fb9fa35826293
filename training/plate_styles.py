"""How the plates of each jurisdiction look, close enough to train a reader on.

Per jurisdiction: background, ink, the legends printed above and below the serial, the plate's
proportions and the fonts that come closest to the state's dies among fonts the project may
use (see ``training/fonts.toml``). Serial formats are not here: they come from
:mod:`agent.lane.plate_formats`, the same table voting uses.

Colours are BGR (OpenCV order). Nothing here claims to be a faithful reproduction of a plate
design: the point is the variety a lane camera sees (light and dark grounds, coloured inks,
graphics behind the characters, legends, emblems, stacked characters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

Colour = tuple[int, int, int]

WHITE: Colour = (238, 240, 240)
NAVY: Colour = (90, 30, 20)
BLACK: Colour = (25, 25, 25)
MAROON: Colour = (40, 30, 120)
GREEN: Colour = (50, 90, 20)
RED: Colour = (40, 40, 190)
YELLOW: Colour = (40, 200, 240)
EU_BLUE: Colour = (150, 55, 0)


@dataclass(frozen=True, slots=True)
class PlateStyle:
    """What a plate of one jurisdiction looks like apart from its serial."""

    backgrounds: tuple[Colour, ...] = (WHITE,)
    """Top colour of the plate; a second colour makes a vertical gradient (``gradient_to``)."""
    gradient_to: tuple[Colour, ...] = ()
    inks: tuple[Colour, ...] = (NAVY, BLACK)
    header: tuple[str, ...] = ()
    """Legends above the serial (one is picked per plate)."""
    header_inks: tuple[Colour, ...] = (RED, NAVY)
    footer: tuple[str, ...] = ()
    aspect: float = 2.0
    """Width / height of the plate (US, Mexico, Canada: 12 x 6 in or 300 x 150 mm)."""
    serial_height: float = 0.5
    """Character height as a share of the plate height."""
    fonts: tuple[str, ...] = ("roboto_condensed_bold", "dejavu_condensed_bold", "bebas_neue")
    eu_band: str = ""
    """Country code printed in the blue band at the left of a European plate ('' for none)."""
    stacked_chance: float = 0.0
    """Chance of small stacked characters beside the serial (not part of the plate text)."""
    emblem_colours: tuple[Colour, ...] = (RED, NAVY, GREEN)
    extra: dict[str, float] = field(default_factory=dict)


_US_FONTS = ("roboto_condensed_bold", "dejavu_condensed_bold", "bebas_neue", "osp_din")
_EU_FONTS = ("osp_din", "roboto_condensed_bold", "dejavu_condensed_bold")

STYLES: dict[str, PlateStyle] = {
    "US-CA": PlateStyle(
        inks=(NAVY,),
        header=("California",),
        header_inks=(RED,),
        footer=("DMV.CA.GOV", "", "Lake Tahoe"),
        fonts=_US_FONTS,
    ),
    "US-AZ": PlateStyle(
        backgrounds=((200, 225, 240), WHITE),
        gradient_to=((60, 120, 220),),
        inks=(MAROON, BLACK, GREEN),
        header=("ARIZONA",),
        footer=("Grand Canyon State",),
        fonts=_US_FONTS,
    ),
    "US-NM": PlateStyle(
        backgrounds=((40, 200, 240), WHITE),
        inks=(RED, BLACK, NAVY),
        header=("NEW MEXICO", "New Mexico"),
        header_inks=(RED, BLACK),
        footer=("Land of Enchantment", "USA"),
        fonts=_US_FONTS,
    ),
    "US-TX": PlateStyle(
        backgrounds=(WHITE,),
        gradient_to=((150, 150, 150), WHITE),
        inks=(BLACK, NAVY),
        header=("TEXAS",),
        header_inks=(BLACK, NAVY),
        footer=("The Lone Star State", ""),
        fonts=_US_FONTS,
        emblem_colours=(BLACK, NAVY),
    ),
    "US-NV": PlateStyle(
        backgrounds=((235, 210, 170), WHITE),
        inks=(NAVY, BLACK),
        header=("NEVADA",),
        footer=("Home Means Nevada",),
        fonts=_US_FONTS,
    ),
    "US-NJ": PlateStyle(
        backgrounds=((170, 225, 240),),
        inks=(BLACK,),
        header=("NEW JERSEY",),
        header_inks=(BLACK,),
        footer=("Garden State",),
        fonts=_US_FONTS,
        stacked_chance=0.5,
    ),
    "US-FL": PlateStyle(
        inks=(GREEN, BLACK),
        header=("FLORIDA", "MYFLORIDA.COM"),
        header_inks=(GREEN, NAVY),
        footer=("Sunshine State", "MIAMI-DADE"),
        fonts=_US_FONTS,
        emblem_colours=((0, 140, 255), GREEN),
    ),
    "US-NY": PlateStyle(
        backgrounds=(WHITE, (150, 220, 240)),
        inks=(NAVY, BLACK),
        header=("NEW YORK",),
        footer=("EXCELSIOR", "Empire State"),
        fonts=_US_FONTS,
    ),
    "US-PA": PlateStyle(
        inks=(NAVY,),
        header=("PENNSYLVANIA", "visitPA.com"),
        header_inks=(NAVY,),
        fonts=_US_FONTS,
        emblem_colours=(NAVY, YELLOW),
    ),
    "US-IL": PlateStyle(
        inks=(MAROON, NAVY),
        header=("Illinois",),
        header_inks=(RED,),
        footer=("Land of Lincoln",),
        fonts=_US_FONTS,
    ),
    "US-WA": PlateStyle(inks=(NAVY,), header=("Washington",), header_inks=(NAVY,), fonts=_US_FONTS),
}
"""Jurisdictions with a style of their own; every other one uses its family's."""

FAMILY_STYLES: dict[str, PlateStyle] = {
    "US": PlateStyle(
        backgrounds=(WHITE, (225, 235, 245), (200, 230, 240), (180, 180, 180)),
        gradient_to=((200, 140, 90), (120, 190, 230)),
        inks=(NAVY, BLACK, MAROON, GREEN, RED),
        header=("", "USA"),
        footer=("", "COUNTY"),
        fonts=_US_FONTS,
        stacked_chance=0.08,
    ),
    "MX": PlateStyle(
        backgrounds=(WHITE, (230, 240, 245)),
        inks=(BLACK, (60, 40, 30)),
        header=("MÉXICO", "MEXICO"),
        header_inks=(BLACK, RED, GREEN),
        footer=("DELANTERA", "TRASERA", "FRONTERIZO", "FRONTERIZA"),
        fonts=("roboto_condensed_bold", "dejavu_condensed_bold", "osp_din"),
        emblem_colours=(GREEN, RED, NAVY),
    ),
    "CA": PlateStyle(
        backgrounds=(WHITE, (150, 220, 240)),
        inks=(NAVY, BLACK),
        header=("ONTARIO", "QUÉBEC", "BRITISH COLUMBIA", "ALBERTA", "MANITOBA"),
        header_inks=(NAVY, RED, BLACK),
        footer=("YOURS TO DISCOVER", "Je me souviens", "Beautiful", "Wild Rose Country"),
        fonts=_US_FONTS,
    ),
    "EU": PlateStyle(
        backgrounds=(WHITE, (235, 240, 245), (40, 200, 240)),
        inks=(BLACK,),
        aspect=4.7,
        serial_height=0.7,
        fonts=_EU_FONTS,
        eu_band="EU",
    ),
    # Brazil: the Mercosur plate (white, BRASIL in the top band) and the older grey plate
    # with its state and city above the serial; 400 x 130 mm. Drawn for the evaluation lane
    # set only (training/plate_render.FAMILY_WEIGHTS does not draw this family).
    "SA": PlateStyle(
        backgrounds=(WHITE, (190, 190, 190)),
        inks=(BLACK, (30, 30, 30)),
        header=("BRASIL", "SP - SÃO PAULO", "RJ - RIO DE JANEIRO", "PR - CURITIBA"),
        header_inks=(EU_BLUE, BLACK),
        aspect=3.1,
        serial_height=0.6,
        fonts=_EU_FONTS,
    ),
}

MX_HEADERS: dict[str, str] = {
    "MX-BCN": "BAJA CALIFORNIA",
    "MX-SON": "SONORA",
    "MX-CHH": "CHIHUAHUA",
    "MX-COA": "COAHUILA",
    "MX-NLE": "NUEVO LEÓN",
    "MX-TAM": "TAMAULIPAS",
    "MX-CMX": "CIUDAD DE MÉXICO",
    "MX-FED": "SERVICIO PÚBLICO FEDERAL",
}
CA_HEADERS: dict[str, str] = {
    "CA-ON": "ONTARIO",
    "CA-QC": "QUÉBEC",
    "CA-BC": "BRITISH COLUMBIA",
    "CA-AB": "ALBERTA",
    "CA-MB": "MANITOBA",
    "CA-SK": "SASKATCHEWAN",
    "CA-NB": "NEW BRUNSWICK",
    "CA-NS": "NOVA SCOTIA",
}
EU_BANDS: dict[str, str] = {
    "EU-DE": "D",
    "EU-FR": "F",
    "EU-IT": "I",
    "EU-ES": "E",
    "EU-NL": "NL",
    "EU-PL": "PL",
    "EU-SK": "SK",
    "EU-CZ": "CZ",
    "EU-GB": "UK",
}


def style_for(code: str, family: str) -> PlateStyle:
    """The style of jurisdiction ``code`` (its own, or its family's with its name on it)."""
    if code in STYLES:
        return STYLES[code]
    base = FAMILY_STYLES[family]
    if family == "MX":
        return _replace(base, header=(MX_HEADERS.get(code, "MÉXICO"),))
    if family == "CA":
        return _replace(base, header=(CA_HEADERS.get(code, ""),))
    if family == "EU":
        backgrounds = base.backgrounds if code in ("EU-NL", "EU-GB") else base.backgrounds[:2]
        return _replace(base, eu_band=EU_BANDS.get(code, "EU"), backgrounds=backgrounds)
    return base


def _replace(style: PlateStyle, **changes: object) -> PlateStyle:
    import dataclasses

    return dataclasses.replace(style, **changes)  # type: ignore[arg-type]
