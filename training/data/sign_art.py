"""Sign faces for the scene synthesiser: real crops cut to their outline, and procedural drawings.

Every face is an RGBA array whose alpha is the sign's outline, so it can be pasted onto any
background with an exact box. Real crops (GTSRB, TT100K, US signs) are cut with the outline of
their category; procedural faces cover what real sets lack: speed values GTSRB has not (5, 10,
25, 40, 90, 110 ...), US mph plates, blue-square crossings and supplementary text plates.
Drawings are made at 4x and scaled down, which anti-aliases their edges.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fleet_protocol.taxonomy import SpeedUnit
from training.data.categories import SHAPES, Category, Shape
from training.data.records import Box

ART = 256  # drawing size of a procedural face, pixels
RED = (200, 20, 30)
BLUE = (20, 70, 170)
YELLOW = (250, 190, 0)
WHITE = (245, 245, 240)
BLACK = (20, 20, 20)
_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSansNarrow-Bold.ttf",
)
PLATE_TEXTS = (
    "Zone",
    "7-19 h",
    "bei Nasse",
    "3,5 t",
    "2 km",
    "Schule",
    "SCHOOL",
    "ENDS",
    "MINIMUM",
    "NIGHT",
    "Mo-Fr",
    "200 m",
    "TRUCKS",
    "ZONE",
)
SPEED_VALUES_KMH = (5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130)
SPEED_VALUES_MPH = (15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80)


@dataclass(frozen=True, slots=True)
class SignFace:
    """A sign face ready to paste: RGBA pixels, its category and what it says."""

    rgba: np.ndarray
    category: Category
    label: str
    """Fine label: a GTSRB id, a TT100K code, or the procedural kind (``speed_round``...)."""
    speed_value: float | None = None
    speed_unit: SpeedUnit | None = None
    text: str | None = None


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A bold sans font of `size` px; the first of the candidates found, else Pillow's own."""
    for candidate in _FONT_CANDIDATES:
        if Path(candidate).is_file():
            return ImageFont.truetype(candidate, size)
    return ImageFont.load_default(size)


def outline(shape: Shape, width: float, height: float) -> list[tuple[float, float]]:
    """Polygon of `shape` filling a width x height box (circles as 64-gons)."""
    w, h = width, height
    if shape is Shape.CIRCLE:
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return [(w / 2 + w / 2 * np.cos(a), h / 2 + h / 2 * np.sin(a)) for a in t]
    if shape is Shape.TRIANGLE_UP:
        return [(w / 2, 0), (w, h), (0, h)]
    if shape is Shape.TRIANGLE_DOWN:
        return [(0, 0), (w, 0), (w / 2, h)]
    if shape is Shape.OCTAGON:
        a, b = 0.2929, 0.7071
        return [
            (a * w, 0),
            (b * w, 0),
            (w, a * h),
            (w, b * h),
            (b * w, h),
            (a * w, h),
            (0, b * h),
            (0, a * h),
        ]
    if shape is Shape.DIAMOND:
        return [(w / 2, 0), (w, h / 2), (w / 2, h), (0, h / 2)]
    return [(0, 0), (w, 0), (w, h), (0, h)]


def _scaled(points: list[tuple[float, float]], scale: float) -> list[tuple[float, float]]:
    """`points` shrunk by `scale` about their centroid (for borders drawn as nested shapes)."""
    cx = sum(p[0] for p in points) / len(points)
    cy = sum(p[1] for p in points) / len(points)
    return [(cx + (x - cx) * scale, cy + (y - cy) * scale) for x, y in points]


def shape_mask(shape: Shape, width: int, height: int) -> np.ndarray:
    """Anti-aliased 0-255 mask of `shape` filling width x height."""
    big = Image.new("L", (width * 4, height * 4), 0)
    ImageDraw.Draw(big).polygon(outline(shape, width * 4 - 1, height * 4 - 1), fill=255)
    return np.asarray(big.resize((width, height), Image.Resampling.BOX))


def _canvas(width: int = ART, height: int = ART) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGBA", (width * 4, height * 4), (0, 0, 0, 0))
    return image, ImageDraw.Draw(image)


def _finish(image: Image.Image) -> np.ndarray:
    return np.asarray(image.resize((image.width // 4, image.height // 4), Image.Resampling.BOX))


def _text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    size: int,
    fill: tuple[int, int, int],
    max_width: float,
) -> None:
    """Draw `text` centred on `xy`, shrunk until it fits `max_width`."""
    while True:
        face = font(size)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
        if right - left <= max_width or size <= 8:
            break
        size = int(size * 0.9)
    draw.text((xy[0] - (left + right) / 2, xy[1] - (top + bottom) / 2), text, font=face, fill=fill)


def _polygon(
    draw: ImageDraw.ImageDraw, shape: Shape, box: float, scale: float, fill: tuple[int, int, int]
) -> None:
    points = _scaled(outline(shape, box, box), scale)
    draw.polygon(points, fill=(*fill, 255))


def draw_speed_round(value: int, *, end: bool = False) -> SignFace:
    """A round speed-limit sign (red ring, black digits), or its end-of-limit twin."""
    image, draw = _canvas()
    s = ART * 4
    _polygon(draw, Shape.CIRCLE, s, 1.0, WHITE if end else RED)
    _polygon(draw, Shape.CIRCLE, s, 0.96 if end else 0.76, WHITE)
    digits_fill = (110, 110, 110) if end else BLACK
    _text(draw, (s / 2, s / 2), str(value), int(s * 0.42), digits_fill, s * 0.62)
    if end:
        for offset in (-0.06, 0.0, 0.06):
            d = offset * s
            draw.line(
                [(s * 0.18 + d, s * 0.82 + d), (s * 0.82 + d, s * 0.18 + d)],
                fill=(60, 60, 60, 255),
                width=int(s * 0.025),
            )
    category = Category.END_OF_RESTRICTION if end else Category.PROHIBITORY
    kind = "end_speed_round" if end else "speed_round"
    return SignFace(_finish(image), category, kind, float(value), "km/h", str(value))


def draw_us_speed(value: int) -> SignFace:
    """A US-style white SPEED LIMIT plate in mph."""
    width, height = int(ART * 0.8), ART
    image, draw = _canvas(width, height)
    w, h = width * 4, height * 4
    draw.rounded_rectangle([0, 0, w - 1, h - 1], radius=w * 0.06, fill=(*BLACK, 255))
    draw.rounded_rectangle(
        [w * 0.04, w * 0.04, w * 0.96 - 1, h - w * 0.04 - 1], radius=w * 0.05, fill=(*WHITE, 255)
    )
    _text(draw, (w / 2, h * 0.17), "SPEED", int(h * 0.15), BLACK, w * 0.8)
    _text(draw, (w / 2, h * 0.34), "LIMIT", int(h * 0.15), BLACK, w * 0.8)
    _text(draw, (w / 2, h * 0.67), str(value), int(h * 0.42), BLACK, w * 0.85)
    return SignFace(
        _finish(image), Category.SPEED_RECT, "us_speed", float(value), "mph", f"SPEED LIMIT {value}"
    )


def draw_no_entry() -> SignFace:
    """Red disc with a white bar."""
    image, draw = _canvas()
    s = ART * 4
    _polygon(draw, Shape.CIRCLE, s, 1.0, RED)
    draw.rectangle([s * 0.18, s * 0.42, s * 0.82, s * 0.58], fill=(*WHITE, 255))
    return SignFace(_finish(image), Category.PROHIBITORY, "no_entry")


def draw_stop(text: str = "STOP") -> SignFace:
    """Red octagon with a white border and a word."""
    image, draw = _canvas()
    s = ART * 4
    _polygon(draw, Shape.OCTAGON, s, 1.0, WHITE)
    _polygon(draw, Shape.OCTAGON, s, 0.92, RED)
    _text(draw, (s / 2, s / 2), text, int(s * 0.3), WHITE, s * 0.78)
    return SignFace(_finish(image), Category.STOP, "stop", text=text)


def _bordered(
    shape: Shape,
    border: tuple[int, int, int],
    field: tuple[int, int, int],
    category: Category,
    label: str,
) -> SignFace:
    """A plain sign: `shape` in `border` colour around a `field` of the same shape."""
    image, draw = _canvas()
    _polygon(draw, shape, ART * 4, 1.0, border)
    _polygon(draw, shape, ART * 4, 0.62, field)
    return SignFace(_finish(image), category, label)


def draw_yield() -> SignFace:
    """Inverted white triangle with a red border."""
    return _bordered(Shape.TRIANGLE_DOWN, RED, WHITE, Category.YIELD, "yield")


def draw_priority() -> SignFace:
    """White diamond with a yellow centre."""
    return _bordered(Shape.DIAMOND, WHITE, YELLOW, Category.PRIORITY, "priority")


def draw_warning(rng: np.random.Generator) -> SignFace:
    """Warning triangle (white or yellow field, red border) with a simple black glyph."""
    image, draw = _canvas()
    s = ART * 4
    field = YELLOW if rng.random() < 0.25 else WHITE
    _polygon(draw, Shape.TRIANGLE_UP, s, 1.0, RED if field == WHITE else BLACK)
    _polygon(draw, Shape.TRIANGLE_UP, s, 0.7, field)
    glyph = int(rng.integers(3))
    if glyph == 0:  # exclamation mark
        draw.rectangle([s * 0.47, s * 0.42, s * 0.53, s * 0.68], fill=(*BLACK, 255))
        draw.ellipse([s * 0.46, s * 0.72, s * 0.54, s * 0.8], fill=(*BLACK, 255))
    elif glyph == 1:  # curve arrow
        draw.arc(
            [s * 0.36, s * 0.45, s * 0.64, s * 0.9],
            180,
            300,
            fill=(*BLACK, 255),
            width=int(s * 0.05),
        )
    else:  # figure
        draw.ellipse([s * 0.46, s * 0.4, s * 0.54, s * 0.48], fill=(*BLACK, 255))
        draw.line(
            [(s * 0.5, s * 0.48), (s * 0.47, s * 0.66), (s * 0.42, s * 0.8)],
            fill=(*BLACK, 255),
            width=int(s * 0.035),
        )
        draw.line(
            [(s * 0.47, s * 0.66), (s * 0.57, s * 0.8)], fill=(*BLACK, 255), width=int(s * 0.035)
        )
    return SignFace(_finish(image), Category.WARNING, "warning")


def draw_mandatory(rng: np.random.Generator) -> SignFace:
    """Blue disc with a white arrow."""
    image, draw = _canvas()
    s = ART * 4
    _polygon(draw, Shape.CIRCLE, s, 1.0, BLUE)
    angle = float(rng.choice([0, 90, 180, 270, 45, 315]))
    arrow = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    ad = ImageDraw.Draw(arrow)
    ad.rectangle([s * 0.45, s * 0.38, s * 0.55, s * 0.78], fill=(*WHITE, 255))
    ad.polygon([(s * 0.5, s * 0.2), (s * 0.68, s * 0.42), (s * 0.32, s * 0.42)], fill=(*WHITE, 255))
    image.alpha_composite(arrow.rotate(angle, center=(s / 2, s / 2)))
    mask = Image.new("L", (s, s), 0)
    ImageDraw.Draw(mask).polygon(outline(Shape.CIRCLE, s - 1, s - 1), fill=255)
    image.putalpha(mask)
    return SignFace(_finish(image), Category.MANDATORY, "mandatory")


def draw_info_square() -> SignFace:
    """Blue square with a white triangle and a walking figure: pedestrian crossing."""
    image, draw = _canvas()
    s = ART * 4
    draw.rounded_rectangle([0, 0, s - 1, s - 1], radius=s * 0.06, fill=(*WHITE, 255))
    draw.rounded_rectangle(
        [s * 0.04, s * 0.04, s * 0.96, s * 0.96], radius=s * 0.05, fill=(*BLUE, 255)
    )
    draw.polygon(
        [(s * 0.5, s * 0.12), (s * 0.88, s * 0.84), (s * 0.12, s * 0.84)], fill=(*WHITE, 255)
    )
    draw.ellipse([s * 0.47, s * 0.34, s * 0.55, s * 0.42], fill=(*BLACK, 255))
    width = int(s * 0.035)
    draw.line(
        [(s * 0.5, s * 0.42), (s * 0.48, s * 0.6), (s * 0.42, s * 0.76)],
        fill=(*BLACK, 255),
        width=width,
    )
    draw.line([(s * 0.48, s * 0.6), (s * 0.57, s * 0.76)], fill=(*BLACK, 255), width=width)
    for i in range(4):
        x = s * (0.28 + 0.12 * i)
        draw.rectangle([x, s * 0.78, x + s * 0.07, s * 0.82], fill=(*BLACK, 255))
    return SignFace(_finish(image), Category.INFO_SQUARE, "pedestrian_crossing_square")


def draw_text_plate(text: str) -> SignFace:
    """White landscape plate with a black border and a short text."""
    width, height = ART, int(ART * 0.45)
    image, draw = _canvas(width, height)
    w, h = width * 4, height * 4
    draw.rectangle([0, 0, w - 1, h - 1], fill=(*BLACK, 255))
    draw.rectangle([h * 0.06, h * 0.06, w - h * 0.06, h - h * 0.06], fill=(*WHITE, 255))
    _text(draw, (w / 2, h / 2), text, int(h * 0.55), BLACK, w * 0.85)
    return SignFace(_finish(image), Category.TEXT_PLATE, "supplementary_text_plate", text=text)


def draw_random_face(category: Category, rng: np.random.Generator) -> SignFace:
    """A procedural face of `category` with random content."""
    makers: dict[Category, Callable[[], SignFace]] = {
        Category.PROHIBITORY: lambda: (
            draw_no_entry()
            if rng.random() < 0.15
            else draw_speed_round(int(rng.choice(SPEED_VALUES_KMH)))
        ),
        Category.END_OF_RESTRICTION: lambda: draw_speed_round(
            int(rng.choice(SPEED_VALUES_KMH)), end=True
        ),
        Category.WARNING: lambda: draw_warning(rng),
        Category.YIELD: draw_yield,
        Category.STOP: draw_stop,
        Category.PRIORITY: draw_priority,
        Category.MANDATORY: lambda: draw_mandatory(rng),
        Category.INFO_SQUARE: draw_info_square,
        Category.SPEED_RECT: lambda: draw_us_speed(int(rng.choice(SPEED_VALUES_MPH))),
        Category.TEXT_PLATE: lambda: draw_text_plate(str(rng.choice(PLATE_TEXTS))),
    }
    return makers[category]()


def cut_real_face(rgb: np.ndarray, box: Box, category: Category) -> SignFace:
    """Cut a real sign out of its image: crop to the box, alpha from the category's outline."""
    height, width = rgb.shape[:2]
    x1, y1 = max(round(box.x1), 0), max(round(box.y1), 0)
    x2, y2 = min(round(box.x2), width), min(round(box.y2), height)
    crop = rgb[y1:y2, x1:x2]
    alpha = shape_mask(SHAPES[category], crop.shape[1], crop.shape[0])
    rgba = np.dstack([crop, alpha])
    return SignFace(
        np.ascontiguousarray(rgba), category, box.label, box.speed_value, box.speed_unit
    )


def load_rgb(path: Path) -> np.ndarray:
    """An image file as an RGB uint8 array."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"{path}: OpenCV cannot read it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
