"""The detector's categories: sign shapes and colours that look alike in every country.

The detector finds signs by category; the crop classifier and the OCR then say which sign and
which number. Categories follow shape and colour scheme rather than meaning, so a Chinese 40 km/h
or an Italian no-entry sign is found by what German signs taught the model. Each dataset's labels
map onto these here, and the scene synthesiser draws signs of each.
"""

from __future__ import annotations

from enum import StrEnum

from fleet_protocol.taxonomy import GTSRB_CLASSES, SignType
from training.data.records import Box, LabeledImage


class Shape(StrEnum):
    """Outline of a sign face, used to cut real crops out of their background."""

    CIRCLE = "circle"
    TRIANGLE_UP = "triangle_up"
    TRIANGLE_DOWN = "triangle_down"
    OCTAGON = "octagon"
    DIAMOND = "diamond"
    RECTANGLE = "rectangle"


class Category(StrEnum):
    """Detector categories, in the order of the model's class indices."""

    PROHIBITORY = "prohibitory"
    """Round with a red ring or red disc: speed limits, no passing, no entry, weight limits."""
    END_OF_RESTRICTION = "end_of_restriction"
    """Round, white or grey with diagonal stripes: end of a limit."""
    WARNING = "warning"
    """Triangle pointing up with a red (or yellow) field: dangers."""
    YIELD = "yield"
    """Triangle pointing down."""
    STOP = "stop"
    """Red octagon."""
    PRIORITY = "priority"
    """Diamond: priority road."""
    MANDATORY = "mandatory"
    """Round blue: directions, minimum speeds."""
    INFO_SQUARE = "info_square"
    """Blue square: pedestrian crossing and similar informative signs."""
    SPEED_RECT = "speed_rect"
    """White upright rectangle: US-style SPEED LIMIT NN."""
    TEXT_PLATE = "text_plate"
    """White landscape plate of text under another sign."""


CATEGORIES: tuple[Category, ...] = tuple(Category)
SHAPES: dict[Category, Shape] = {
    Category.PROHIBITORY: Shape.CIRCLE,
    Category.END_OF_RESTRICTION: Shape.CIRCLE,
    Category.WARNING: Shape.TRIANGLE_UP,
    Category.YIELD: Shape.TRIANGLE_DOWN,
    Category.STOP: Shape.OCTAGON,
    Category.PRIORITY: Shape.DIAMOND,
    Category.MANDATORY: Shape.CIRCLE,
    Category.INFO_SQUARE: Shape.RECTANGLE,
    Category.SPEED_RECT: Shape.RECTANGLE,
    Category.TEXT_PLATE: Shape.RECTANGLE,
}

_BY_SIGN_TYPE: dict[SignType, Category] = {
    SignType.SPEED_LIMIT: Category.PROHIBITORY,
    SignType.NO_PASSING: Category.PROHIBITORY,
    SignType.PROHIBITORY: Category.PROHIBITORY,
    SignType.NO_ENTRY: Category.PROHIBITORY,
    SignType.END_OF_SPEED_LIMIT: Category.END_OF_RESTRICTION,
    SignType.END_OF_RESTRICTIONS: Category.END_OF_RESTRICTION,
    SignType.WARNING: Category.WARNING,
    SignType.RIGHT_OF_WAY: Category.WARNING,
    SignType.YIELD: Category.YIELD,
    SignType.STOP: Category.STOP,
    SignType.PRIORITY_ROAD: Category.PRIORITY,
    SignType.MANDATORY: Category.MANDATORY,
    SignType.PEDESTRIAN_CROSSING: Category.INFO_SQUARE,
    SignType.SUPPLEMENTARY_TEXT: Category.TEXT_PLATE,
}

GTSRB_CATEGORY: dict[int, Category] = {
    sign.gtsrb_id: _BY_SIGN_TYPE[sign.sign_type]
    for sign in GTSRB_CLASSES
    if sign.gtsrb_id is not None
}


def category_of_tt100k(code: str) -> Category | None:
    """The category of a TT100K code; None for codes of mixed shapes ("io") we leave out."""
    if code == "ps":
        return Category.STOP
    if code == "pg":
        return Category.YIELD
    if code.startswith("pr"):
        return Category.END_OF_RESTRICTION
    if code == "ip":
        return Category.INFO_SQUARE
    if code.startswith("p"):
        return Category.PROHIBITORY
    if code.startswith("w"):
        return Category.WARNING
    if code.startswith("i") and code != "io":
        return Category.MANDATORY
    return None


def category_of_record(image: LabeledImage, box: Box) -> Category | None:
    """The category of a box from any of our importers; None where no category fits."""
    if box.gtsrb_id is not None:
        return GTSRB_CATEGORY[box.gtsrb_id]
    if image.source == "tt100k":
        return category_of_tt100k(box.label)
    if box.speed_unit == "mph":
        return Category.SPEED_RECT
    try:
        return Category(box.label)
    except ValueError:
        return None
