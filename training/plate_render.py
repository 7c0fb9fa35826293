"""Synthetic licence plates and the line crops a lane camera's reader sees of them.

Three steps, each seeded by the ``random.Random`` it is given, so a seed names a data set:

1. :func:`sample_plate` picks a jurisdiction and a serial from the format table
   (:mod:`agent.lane.plate_formats`), or now and then a vanity text that fits no format;
2. :func:`render_plate` draws the flat plate (ground, legends, serial with its separators and
   emblems, stacked characters, a European country band) and says where the serial's line is;
3. :func:`line_crop` puts the plate in a scene, degrades it as a lane camera does (perspective,
   resolution, motion blur, defocus, infra-red at night, glare, dirt, a plate frame over the
   edge, noise, JPEG) and cuts out the serial's line the way the agent's reader does
   (``agent.vision.reader``: a rotated box around the line, lengthened at both ends, warped to
   48 px high).

The plate text a sample is labelled with is what a registry records: the serial's characters
without separators, emblems, legends, stacked characters or the country band.

Needs numpy, OpenCV and Pillow only (no torch), so the tests and the benchmarks can use it.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from agent.lane.plate_formats import JURISDICTIONS, SEPARATORS, JurisdictionFormats
from training.plate_styles import Colour, PlateStyle, style_for

Image = npt.NDArray[np.uint8]
FONTS_FILE = Path(__file__).with_name("fonts.toml")
LINE_HEIGHT = 48
"""The reader's input height."""
HERSHEY_FONTS = ("hershey_duplex", "hershey_simplex")
FAMILY_WEIGHTS = {"US": 0.45, "MX": 0.2, "CA": 0.1, "EU": 0.25}
"""Share of each family in the training data: US plates dominate a southern lane's traffic."""
VANITY_SHARE = 0.12


class FontError(Exception):
    """A font named in fonts.toml is missing or is not the file it names."""


@cache
def _font_table() -> dict[str, dict[str, str]]:
    return tomllib.loads(FONTS_FILE.read_text(encoding="utf-8"))["fonts"]  # type: ignore[no-any-return]


@cache
def _font_bytes(name: str) -> bytes:
    entry = _font_table()[name]
    path = Path(entry["path"])
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise FontError(
            f"font {name}: {path} unreadable ({exc}); install {entry['package']}"
        ) from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != entry["sha256"]:
        raise FontError(
            f"font {name}: {path} has sha256 {digest}, fonts.toml says {entry['sha256']}"
        )
    return blob


def check_fonts() -> list[str]:
    """Names of every font in fonts.toml, after checking each file (raises :class:`FontError`)."""
    names = list(_font_table())
    for name in names:
        _font_bytes(name)
    return names


@cache
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(io.BytesIO(_font_bytes(name)), size)


@dataclass(frozen=True, slots=True)
class PlateSpec:
    """What to draw: the jurisdiction, the serial as printed, and its text as registered."""

    code: str
    family: str
    printed: str
    """Serial with its separators (``-``, space, ``·`` for an emblem)."""
    text: str


def sample_plate(rng: random.Random, family: str | None = None) -> PlateSpec:
    """A jurisdiction (of ``family``, or weighted over all families) and a serial for it."""
    if family is None:
        families = list(FAMILY_WEIGHTS)
        family = rng.choices(families, weights=[FAMILY_WEIGHTS[f] for f in families])[0]
    entries = [entry for entry in JURISDICTIONS if entry.family == family]
    entry = rng.choice(entries)
    if rng.random() < VANITY_SHARE and family in ("US", "CA"):
        printed = _vanity(rng)
    else:
        printed = _serial(rng, entry, rng.choice(entry.templates))
    text = "".join(ch for ch in printed if ch not in SEPARATORS)
    return PlateSpec(entry.code, family, printed, text)


def _serial(rng: random.Random, entry: JurisdictionFormats, template: str) -> str:
    out = []
    for ch in template:
        if ch == "L":
            out.append(rng.choice(entry.letters))
        elif ch == "D":
            out.append(rng.choice("0123456789"))
        elif ch == "A":
            out.append(rng.choice(entry.letters + "0123456789"))
        else:
            out.append(ch)
    return "".join(out)


def _vanity(rng: random.Random) -> str:
    length = rng.randint(2, 7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ" * 2 + "0123456789"
    text = "".join(rng.choice(alphabet) for _ in range(length))
    if length >= 5 and rng.random() < 0.3:
        cut = rng.randint(2, length - 2)
        text = text[:cut] + rng.choice(" -") + text[cut:]
    return text


@dataclass(frozen=True, slots=True)
class RenderedPlate:
    image: Image
    """The flat plate, BGR."""
    line: tuple[float, float, float, float]
    """x0, y0, x1, y1 of the serial's characters in ``image`` pixels."""
    spec: PlateSpec


def render_plate(spec: PlateSpec, rng: random.Random, *, height: int = 120) -> RenderedPlate:
    """Draw ``spec`` flat, ``height`` pixels high, in its jurisdiction's style."""
    style = style_for(spec.code, spec.family)
    width = round(height * style.aspect * rng.uniform(0.95, 1.05))
    plate = _ground(style, rng, width, height)
    canvas = PILImage.fromarray(cv2.cvtColor(plate, cv2.COLOR_BGR2RGB))
    draw = ImageDraw.Draw(canvas)
    left = 0
    if style.eu_band:
        left = _eu_band(draw, style.eu_band, width, height, rng)
    else:
        _legends(draw, style, width, height, rng)
    serial_h = height * style.serial_height * rng.uniform(0.88, 1.08)
    serial_top = (height - serial_h) / 2 + (
        height * rng.uniform(0.0, 0.06) if not style.eu_band else 0
    )
    line = _serial_line(canvas, draw, spec, style, rng, left, width, serial_top, serial_h)
    if style.stacked_chance and rng.random() < style.stacked_chance:
        _stacked(draw, line, style, rng, width)
    image = cv2.cvtColor(np.asarray(canvas), cv2.COLOR_RGB2BGR)
    if rng.random() < 0.7:
        cv2.rectangle(
            image, (1, 1), (width - 2, height - 2), _dark(style, rng), max(1, height // 40)
        )
    return RenderedPlate(image=image, line=line, spec=spec)


def _ground(style: PlateStyle, rng: random.Random, width: int, height: int) -> Image:
    top = np.array(rng.choice(style.backgrounds), dtype=np.float32)
    if style.gradient_to and rng.random() < 0.5:
        bottom = np.array(rng.choice(style.gradient_to), dtype=np.float32)
        mix = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None] ** rng.uniform(
            0.7, 2.5
        )
        ground = top * (1 - mix) + bottom * mix
        ground = np.broadcast_to(ground, (height, width, 3)).copy()
    else:
        ground = np.broadcast_to(top, (height, width, 3)).copy()
    # Graphics behind the characters: soft blobs of colour (mountains, suns, seals).
    for _ in range(rng.randint(0, 3)):
        overlay = np.zeros((height, width), np.float32)
        centre = (rng.randint(0, width), rng.randint(0, height))
        axes = (rng.randint(width // 10, width // 3), rng.randint(height // 8, height // 2))
        cv2.ellipse(overlay, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        overlay = cv2.GaussianBlur(overlay, (0, 0), max(1.0, height / 15))[..., None]
        colour = np.array([rng.randint(60, 255) for _ in range(3)], np.float32)
        ground = ground * (1 - 0.35 * overlay) + colour * 0.35 * overlay
    return np.clip(ground, 0, 255).astype(np.uint8)


def _rgb(colour: Colour) -> tuple[int, int, int]:
    return colour[2], colour[1], colour[0]


def _dark(style: PlateStyle, rng: random.Random) -> Colour:
    return rng.choice(style.inks)


def _legends(
    draw: ImageDraw.ImageDraw, style: PlateStyle, width: int, height: int, rng: random.Random
) -> None:
    font_name = rng.choice(("dejavu_bold", "roboto_condensed_bold", "dejavu_condensed_bold"))
    header = rng.choice(style.header) if style.header else ""
    if header:
        size = int(height * rng.uniform(0.13, 0.2))
        font = _font(font_name, size)
        box = draw.textbbox((0, 0), header, font=font)
        x = (width - (box[2] - box[0])) / 2 + rng.uniform(-0.05, 0.05) * width
        draw.text(
            (x, height * rng.uniform(0.03, 0.08)),
            header,
            font=font,
            fill=_rgb(rng.choice(style.header_inks)),
        )
    footer = rng.choice(style.footer) if style.footer else ""
    if footer:
        size = int(height * rng.uniform(0.09, 0.14))
        font = _font(font_name, size)
        box = draw.textbbox((0, 0), footer, font=font)
        x = (width - (box[2] - box[0])) / 2
        draw.text(
            (x, height * rng.uniform(0.8, 0.86)),
            footer,
            font=font,
            fill=_rgb(rng.choice(style.header_inks)),
        )
    if rng.random() < 0.3:
        # Small registration stickers or a state number in a corner.
        corner_x = rng.choice((0.04, 0.8)) * width
        corner_y = rng.choice((0.05, 0.78)) * height
        text = rng.choice(("02", "26", "APR", "07", "MEX", "25"))
        font = _font("dejavu_condensed_bold", int(height * 0.11))
        draw.text((corner_x, corner_y), text, font=font, fill=_rgb(rng.choice(style.header_inks)))


def _eu_band(
    draw: ImageDraw.ImageDraw, code: str, width: int, height: int, rng: random.Random
) -> int:
    band_w = int(height * rng.uniform(0.36, 0.44))
    draw.rectangle((0, 0, band_w, height), fill=_rgb((150, 55, 0)))
    cx, cy, radius = band_w / 2, height * 0.3, height * 0.17
    for k in range(12):
        angle = 2 * math.pi * k / 12
        x, y = cx + radius * math.cos(angle), cy + radius * math.sin(angle)
        draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=(255, 204, 0))
    font = _font("osp_din", int(height * (0.34 if len(code) == 1 else 0.28)))
    box = draw.textbbox((0, 0), code, font=font)
    draw.text(
        ((band_w - (box[2] - box[0])) / 2, height * 0.55), code, font=font, fill=(255, 255, 255)
    )
    return band_w


def _glyph_sizes(text: str, font_name: str, size: int) -> list[tuple[float, float]]:
    font = _font(font_name, size)
    return [(font.getlength(ch), size) for ch in text]


def _serial_line(
    canvas: PILImage.Image,
    draw: ImageDraw.ImageDraw,
    spec: PlateSpec,
    style: PlateStyle,
    rng: random.Random,
    left: int,
    width: int,
    top: float,
    char_h: float,
) -> tuple[float, float, float, float]:
    """Draw the serial centred in the free width; return its characters' box."""
    ink = _rgb(rng.choice(style.inks))
    font_name = rng.choice(style.fonts + HERSHEY_FONTS if rng.random() < 0.15 else style.fonts)
    # Render the serial on its own layer at a natural size, then fit it to the box: that gives
    # condensed and wide dies from one font.
    layer, boxes = _serial_layer(spec.printed, font_name, style, rng)
    free_w = (width - left) * rng.uniform(0.78, 0.92)
    squeeze = rng.uniform(0.8, 1.15)
    target_w = min(free_w, layer.shape[1] * (char_h / layer.shape[0]) * squeeze)
    target_h = char_h
    scaled = cv2.resize(
        layer, (max(1, int(target_w)), max(1, int(target_h))), interpolation=cv2.INTER_AREA
    )
    x0 = left + ((width - left) - target_w) / 2 + rng.uniform(-0.03, 0.03) * width
    x0 = max(left + 2, min(width - target_w - 2, x0))
    y0 = top
    ink_layer = np.zeros((canvas.height, canvas.width), np.float32)
    ix, iy = round(x0), round(y0)
    h = min(scaled.shape[0], canvas.height - iy)
    w = min(scaled.shape[1], canvas.width - ix)
    ink_layer[iy : iy + h, ix : ix + w] = scaled[:h, :w]
    base = np.asarray(canvas).astype(np.float32)
    alpha = ink_layer[..., None]
    if rng.random() < 0.3:
        # Embossed dies throw a shadow down and to the right.
        shadow = np.roll(
            np.roll(alpha, max(1, int(char_h / 40)), axis=0), max(1, int(char_h / 40)), axis=1
        )
        base = base * (1 - 0.4 * shadow)
    out = base * (1 - alpha) + np.array(ink, np.float32) * alpha
    canvas.paste(PILImage.fromarray(np.clip(out, 0, 255).astype(np.uint8)))
    # Emblems between character groups.
    sx = target_w / layer.shape[1]
    for gap_x0, gap_x1 in boxes:
        cx = x0 + (gap_x0 + gap_x1) / 2 * sx
        radius = min((gap_x1 - gap_x0) * sx * 0.45, char_h * 0.4)
        cy = y0 + char_h / 2
        colour = _rgb(rng.choice(style.emblem_colours))
        if style.eu_band:
            draw.ellipse(
                (cx - radius, cy - radius * 1.9, cx + radius, cy - radius * 0.1),
                fill=(30, 140, 230),
            )
            draw.ellipse(
                (cx - radius, cy + radius * 0.1, cx + radius, cy + radius * 1.9), fill=(40, 60, 200)
            )
        elif rng.random() < 0.5:
            draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
        else:
            points = [
                (
                    cx + radius * math.cos(a) * rng.uniform(0.6, 1.0),
                    cy + radius * math.sin(a) * rng.uniform(0.6, 1.0),
                )
                for a in np.linspace(0, 2 * math.pi, 7)[:-1]
            ]
            draw.polygon(points, fill=colour)
    return (x0, y0, x0 + target_w, y0 + target_h)


def _serial_layer(
    printed: str, font_name: str, style: PlateStyle, rng: random.Random
) -> tuple[npt.NDArray[np.float32], list[tuple[float, float]]]:
    """The serial as an ink-coverage layer (1 = ink) cut to its characters' height, and the
    x ranges of its emblem gaps (``·``) in layer pixels."""
    size = 80
    gaps: list[tuple[float, float]] = []
    tracking = rng.uniform(0.02, 0.18) * size
    xs: list[tuple[str, float]] = []
    x = 0.0
    if font_name in HERSHEY_FONTS:
        face = (
            cv2.FONT_HERSHEY_DUPLEX if font_name == "hershey_duplex" else cv2.FONT_HERSHEY_SIMPLEX
        )
        scale = size / 22
        thickness = max(2, int(size / 9 * rng.uniform(0.8, 1.3)))
        widths = {ch: cv2.getTextSize(ch, face, scale, thickness)[0][0] for ch in set(printed)}
    else:
        font = _font(font_name, size)
        widths = {ch: font.getlength(ch) for ch in set(printed)}
    for ch in printed:
        if ch == "·":
            gaps.append((x, x + size * 0.55))
            x += size * 0.55 + tracking
        elif ch == " ":
            x += size * rng.uniform(0.25, 0.5)
        else:
            xs.append((ch, x))
            x += widths[ch] + tracking
    layer_w = int(x + size * 0.2)
    layer_h = int(size * 1.6)
    layer = np.zeros((layer_h, max(layer_w, 1)), np.uint8)
    if font_name in HERSHEY_FONTS:
        for ch, cx in xs:
            cv2.putText(
                layer, ch, (int(cx), int(size * 1.2)), face, scale, 255, thickness, cv2.LINE_AA
            )
    else:
        pil = PILImage.fromarray(layer)
        pdraw = ImageDraw.Draw(pil)
        for ch, cx in xs:
            if ch == "-":
                pdraw.text((cx, size * 0.2), ch, font=font, fill=255)
            else:
                pdraw.text((cx, size * 0.2), ch, font=font, fill=255)
        layer = np.asarray(pil).copy()
    rows = np.where(layer.max(axis=1) > 0)[0]
    cols = np.where(layer.max(axis=0) > 0)[0]
    if len(rows) == 0:
        return np.zeros((size, size), np.float32), gaps
    # The dash sits mid-height; the characters' extent sets the line.
    top, bottom = rows[0], rows[-1] + 1
    first, last = cols[0], cols[-1] + 1
    cut = layer[top:bottom, first:last].astype(np.float32) / 255.0
    return cut, [(g0 - first, g1 - first) for g0, g1 in gaps]


def _stacked(
    draw: ImageDraw.ImageDraw,
    line: tuple[float, float, float, float],
    style: PlateStyle,
    rng: random.Random,
    width: int,
) -> None:
    x0, y0, x1, y1 = line
    h = (y1 - y0) * rng.uniform(0.35, 0.45)
    font = _font(rng.choice(style.fonts), int(h * 1.2))
    chars = "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(2))
    right = rng.random() < 0.6
    x = x1 + h * 0.3 if right else x0 - h * 1.1
    if x < 0 or x + h > width:
        return
    ink = _rgb(rng.choice(style.inks))
    draw.text((x, y0 - h * 0.1), chars[0], font=font, fill=ink)
    draw.text((x, y0 + (y1 - y0) / 2), chars[1], font=font, fill=ink)


# --- the camera ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Camera:
    """How one shot degrades a plate: drawn per sample by :func:`sample_camera`."""

    char_px: float
    """Character height in the camera frame, pixels."""
    tilt: float
    """Perspective strength (share of the plate height the corners move)."""
    roll_deg: float
    motion_px: float
    motion_deg: float
    defocus: float
    noise: float
    jpeg: int
    infrared: bool
    glare: float
    dirt: float
    frame_cover: float
    """Share of the character height a plate frame hides at the bottom. Kept small: a frame
    that hides more than the bottom few percent turns E into F and W into V, and a label that
    still says E teaches the reader to read F as E (a first run that hid up to 22 % did)."""
    gamma: float
    contrast: float


def sample_camera(rng: random.Random) -> Camera:
    return Camera(
        char_px=math.exp(rng.uniform(math.log(11.0), math.log(60.0))),
        tilt=rng.uniform(0.0, 0.18) if rng.random() < 0.8 else rng.uniform(0.18, 0.3),
        roll_deg=rng.gauss(0.0, 3.0),
        motion_px=rng.uniform(0.0, 4.0) if rng.random() < 0.35 else 0.0,
        motion_deg=rng.gauss(0.0, 20.0),
        defocus=rng.uniform(0.0, 1.4) if rng.random() < 0.5 else 0.0,
        noise=rng.uniform(0.0, 9.0),
        jpeg=rng.randint(18, 95),
        infrared=rng.random() < 0.15,
        glare=rng.uniform(0.3, 0.9) if rng.random() < 0.12 else 0.0,
        dirt=rng.uniform(0.1, 0.5) if rng.random() < 0.2 else 0.0,
        frame_cover=rng.uniform(0.01, 0.07) if rng.random() < 0.15 else 0.0,
        gamma=math.exp(rng.gauss(0.0, 0.3)),
        contrast=rng.uniform(0.45, 1.0),
    )


def degrade_plate(plate: RenderedPlate, camera: Camera, rng: random.Random) -> Image:
    """Dirt, glare and a plate frame: what happens to the plate itself before the camera."""
    image = plate.image.astype(np.float32)
    height, width = image.shape[:2]
    _x0, y0, _x1, y1 = plate.line
    if camera.dirt:
        dirt = np.zeros((height, width), np.float32)
        for _ in range(rng.randint(3, 12)):
            centre = (rng.randint(0, width), rng.randint(0, height))
            axes = (rng.randint(2, max(3, width // 8)), rng.randint(2, max(3, height // 6)))
            cv2.ellipse(dirt, centre, axes, rng.uniform(0, 180), 0, 360, rng.uniform(0.3, 1.0), -1)
        dirt = cv2.GaussianBlur(dirt, (0, 0), 3)[..., None] * camera.dirt
        image = image * (1 - dirt) + np.array([40, 55, 70], np.float32) * dirt
    if camera.glare:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        spread = rng.uniform(0.15, 0.5) * width
        glow = np.exp(-(((xx - cx) / spread) ** 2 + ((yy - cy) / (spread * 0.6)) ** 2))[..., None]
        image = image + glow * camera.glare * 255
    if camera.frame_cover:
        cover = camera.frame_cover * (y1 - y0)
        frame_colour = rng.choice(((20, 20, 20), (170, 170, 175), (60, 60, 60)))
        band_top = int(y1 - cover)
        image[band_top:, :] = frame_colour
        if rng.random() < 0.5:
            image[: int(y0 - (y0 * rng.uniform(0.0, 0.6))), :] = frame_colour
        if rng.random() < 0.5 and height - band_top > 6:
            text = rng.choice(("TOYOTA OF EL PASO", "SAN DIEGO AUTO", "HONDA", "FORD DEALER"))
            scale = (height - band_top) / 40
            lettered = np.clip(image, 0, 255).astype(np.uint8)
            cv2.putText(
                lettered,
                text,
                (int(width * 0.2), height - 2),
                cv2.FONT_HERSHEY_SIMPLEX,
                max(scale, 0.2),
                (230, 230, 230),
                1,
                cv2.LINE_AA,
            )
            image = lettered.astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _scene(width: int, height: int, rng: random.Random) -> Image:
    """The car around the plate: a body colour with shading and texture."""
    colour = np.array([rng.randint(10, 230) for _ in range(3)], np.float32)
    shade = np.linspace(rng.uniform(0.6, 1.2), rng.uniform(0.6, 1.2), height, dtype=np.float32)
    scene = colour[None, None, :] * shade[:, None, None]
    scene = np.broadcast_to(scene, (height, width, 3)).copy()
    noise = np.random.default_rng(rng.getrandbits(32)).normal(
        0, 12, (height // 8 + 1, width // 8 + 1, 1)
    )
    scene += cv2.resize(noise.astype(np.float32), (width, height))[..., None]
    for _ in range(rng.randint(0, 4)):
        y = rng.randint(0, height - 1)
        cv2.line(
            scene,
            (0, y),
            (width, y + rng.randint(-10, 10)),
            [rng.randint(0, 255)] * 3,
            rng.randint(1, 4),
        )
    return np.clip(scene, 0, 255).astype(np.uint8)


def photograph(
    plate: RenderedPlate, camera: Camera, rng: random.Random
) -> tuple[Image, npt.NDArray[np.float32]]:
    """The plate on a car, as the camera frame shows it; and the serial line's corners in it."""
    flat = degrade_plate(plate, camera, rng)
    height, width = flat.shape[:2]
    x0, y0, x1, y1 = plate.line
    scale = camera.char_px / (y1 - y0)
    margin = int(height * 0.6)
    scene = _scene(width + 2 * margin, height + 2 * margin, rng)
    scene[margin : margin + height, margin : margin + width] = flat
    # Shrink first with area averaging (a camera integrates over pixels), then warp.
    small = cv2.resize(scene, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    corners = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    jitter = camera.tilt * scale * height
    moved = corners + np.array(
        [[rng.uniform(-jitter, jitter), rng.uniform(-jitter, jitter)] for _ in range(4)], np.float32
    )
    centre = moved.mean(axis=0)
    angle = math.radians(camera.roll_deg)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32
    )
    moved = (moved - centre) @ rotation.T + centre
    moved -= moved.min(axis=0)
    out_w, out_h = int(moved[:, 0].max()) + 1, int(moved[:, 1].max()) + 1
    transform = cv2.getPerspectiveTransform(corners, moved.astype(np.float32))
    frame = cv2.warpPerspective(
        small, transform, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    line = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32) + margin
    line_in_frame = cv2.perspectiveTransform((line * scale)[None], transform)[0]
    frame = _camera_effects(frame, camera, rng)
    return frame, line_in_frame


def _camera_effects(frame: Image, camera: Camera, rng: random.Random) -> Image:
    image = frame
    if camera.motion_px >= 1.0:
        length = round(camera.motion_px) * 2 + 1
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0
        rotation = cv2.getRotationMatrix2D(
            (length / 2 - 0.5, length / 2 - 0.5), camera.motion_deg, 1.0
        )
        kernel = cv2.warpAffine(kernel, rotation, (length, length))
        kernel /= max(kernel.sum(), 1e-6)
        image = cv2.filter2D(image, -1, kernel)
    if camera.defocus > 0.2:
        image = cv2.GaussianBlur(image, (0, 0), camera.defocus)
    pixels = image.astype(np.float32) / 255.0
    if camera.infrared:
        # Near infra-red: colour is gone, the retroreflective ground glows, most inks stay dark.
        grey = pixels @ np.array([0.2, 0.5, 0.3], np.float32)
        grey = np.clip((grey - 0.25) * rng.uniform(1.4, 2.2) + 0.3, 0, 1)
        pixels = np.repeat(grey[..., None], 3, axis=2)
    pixels = pixels**camera.gamma
    pixels = (pixels - 0.5) * camera.contrast + 0.5 + rng.uniform(-0.15, 0.15)
    pixels = pixels * 255 + np.random.default_rng(rng.getrandbits(32)).normal(
        0, camera.noise, pixels.shape
    )
    image = np.clip(pixels, 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg])
    if ok:
        image = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return image


def detector_quad(line: npt.NDArray[np.float32], rng: random.Random) -> npt.NDArray[np.float32]:
    """The box the agent's detector and reader would cut around ``line``: its rotated
    bounding rectangle, a little off, lengthened at each end and sometimes taller or shorter
    (the reader's second looks)."""
    (cx, cy), (w, h), angle = cv2.minAreaRect(line.astype(np.float32))
    if w < h:
        w, h, angle = h, w, angle - 90 if angle > 0 else angle + 90
    theta = math.radians(angle)
    along = np.array([math.cos(theta), math.sin(theta)], np.float32)
    across = np.array([-math.sin(theta), math.cos(theta)], np.float32)
    left_pad = h * rng.uniform(0.05, 0.55)
    right_pad = h * rng.uniform(0.05, 0.55)
    top_pad = h * rng.uniform(-0.05, 0.3)
    bottom_pad = h * rng.uniform(-0.05, 0.25)
    centre = np.array([cx, cy], np.float32) + across * rng.uniform(-0.06, 0.06) * h
    half_w, half_h = w / 2, h / 2
    tl = centre - along * (half_w + left_pad) - across * (half_h + top_pad)
    tr = centre + along * (half_w + right_pad) - across * (half_h + top_pad)
    br = centre + along * (half_w + right_pad) + across * (half_h + bottom_pad)
    bl = centre - along * (half_w + left_pad) + across * (half_h + bottom_pad)
    return np.array([tl, tr, br, bl], np.float32)


def cut_line(frame: Image, quad: npt.NDArray[np.float32], *, max_width: int = 480) -> Image:
    """``quad`` warped upright to the reader's height, as ``agent.vision.reader`` cuts lines."""
    width = float(np.linalg.norm(quad[1] - quad[0]))
    height = float(np.linalg.norm(quad[3] - quad[0]))
    out_w = int(min(max_width, max(16, round(LINE_HEIGHT * width / max(height, 1.0)))))
    target = np.array(
        [[0, 0], [out_w - 1, 0], [out_w - 1, LINE_HEIGHT - 1], [0, LINE_HEIGHT - 1]], np.float32
    )
    transform = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    return cv2.warpPerspective(
        frame,
        transform,
        (out_w, LINE_HEIGHT),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


@dataclass(frozen=True, slots=True)
class LineSample:
    image: Image
    """BGR, 48 px high, as the reader gets it."""
    text: str
    spec: PlateSpec


def line_sample(rng: random.Random, family: str | None = None) -> LineSample:
    """One training (or evaluation) sample: a degraded line crop and its plate text."""
    spec = sample_plate(rng, family)
    plate = render_plate(spec, rng, height=rng.choice((100, 120, 140)))
    frame, line = photograph(plate, sample_camera(rng), rng)
    crop = cut_line(frame, detector_quad(line, rng))
    return LineSample(crop, spec.text, spec)
