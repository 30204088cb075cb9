"""The sign taxonomy: what a reading can say a sign is.

`SignType` is the coarse meaning every reading carries, the same across countries. The 43 GTSRB
classes (ids and names exactly as the official ``gtsrb_classes.csv``) map onto it, and so do the
classes GTSRB lacks but our devices meet: blue-square pedestrian crossings, supplementary text
plates under a sign, and US-style rectangular "SPEED LIMIT NN" signs in mph.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal


class SignType(StrEnum):
    """The meaning of a sign, independent of its national design."""

    SPEED_LIMIT = "speed_limit"
    END_OF_SPEED_LIMIT = "end_of_speed_limit"
    END_OF_RESTRICTIONS = "end_of_restrictions"
    NO_PASSING = "no_passing"
    STOP = "stop"
    YIELD = "yield"
    NO_ENTRY = "no_entry"
    PRIORITY_ROAD = "priority_road"
    RIGHT_OF_WAY = "right_of_way"
    WARNING = "warning"
    PROHIBITORY = "prohibitory"
    MANDATORY = "mandatory"
    PEDESTRIAN_CROSSING = "pedestrian_crossing"
    SUPPLEMENTARY_TEXT = "supplementary_text"
    OTHER = "other"


SpeedUnit = Literal["km/h", "mph"]

SIGN_TYPE_DESCRIPTIONS: MappingProxyType[SignType, str] = MappingProxyType(
    {
        SignType.SPEED_LIMIT: "Maximum speed; the reading's value and unit give the limit.",
        SignType.END_OF_SPEED_LIMIT: "End of a speed limit; value and unit name it where shown.",
        SignType.END_OF_RESTRICTIONS: "End of all speed and passing limits, or end of no passing.",
        SignType.NO_PASSING: "Overtaking prohibited (for all vehicles or for trucks).",
        SignType.STOP: "Stop and give way.",
        SignType.YIELD: "Give way.",
        SignType.NO_ENTRY: "No entry for any vehicle.",
        SignType.PRIORITY_ROAD: "Priority road (the yellow diamond).",
        SignType.RIGHT_OF_WAY: "Right of way at the next intersection only.",
        SignType.WARNING: "A danger warning (curve, slippery road, road works, animals...).",
        SignType.PROHIBITORY: "Other prohibitions (vehicle classes, weights...).",
        SignType.MANDATORY: "Mandatory direction or behaviour (blue round signs).",
        SignType.PEDESTRIAN_CROSSING: "Pedestrian crossing (blue square informative sign).",
        SignType.SUPPLEMENTARY_TEXT: "A text plate that qualifies the sign above it.",
        SignType.OTHER: "A sign the pipeline detected but cannot place in any type above.",
    }
)


@dataclass(frozen=True, slots=True)
class SignClass:
    """One fine-grained class a classifier can output.

    `key` is stable across datasets: ``gtsrb:<id>`` for GTSRB classes, a plain name otherwise.
    `speed_value` and `speed_unit` are set where the class itself fixes the number.
    """

    key: str
    name: str
    sign_type: SignType
    gtsrb_id: int | None = None
    speed_value: int | None = None
    speed_unit: SpeedUnit | None = None


def _gtsrb(
    class_id: int, name: str, sign_type: SignType, speed_kmh: int | None = None
) -> SignClass:
    return SignClass(
        key=f"gtsrb:{class_id}",
        name=name,
        sign_type=sign_type,
        gtsrb_id=class_id,
        speed_value=speed_kmh,
        speed_unit="km/h" if speed_kmh is not None else None,
    )


_S = SignType
GTSRB_CLASSES: tuple[SignClass, ...] = (
    _gtsrb(0, "Speed limit (20km/h)", _S.SPEED_LIMIT, 20),
    _gtsrb(1, "Speed limit (30km/h)", _S.SPEED_LIMIT, 30),
    _gtsrb(2, "Speed limit (50km/h)", _S.SPEED_LIMIT, 50),
    _gtsrb(3, "Speed limit (60km/h)", _S.SPEED_LIMIT, 60),
    _gtsrb(4, "Speed limit (70km/h)", _S.SPEED_LIMIT, 70),
    _gtsrb(5, "Speed limit (80km/h)", _S.SPEED_LIMIT, 80),
    _gtsrb(6, "End of speed limit (80km/h)", _S.END_OF_SPEED_LIMIT, 80),
    _gtsrb(7, "Speed limit (100km/h)", _S.SPEED_LIMIT, 100),
    _gtsrb(8, "Speed limit (120km/h)", _S.SPEED_LIMIT, 120),
    _gtsrb(9, "No passing", _S.NO_PASSING),
    _gtsrb(10, "No passing for vehicles over 3.5 metric tons", _S.NO_PASSING),
    _gtsrb(11, "Right-of-way at the next intersection", _S.RIGHT_OF_WAY),
    _gtsrb(12, "Priority road", _S.PRIORITY_ROAD),
    _gtsrb(13, "Yield", _S.YIELD),
    _gtsrb(14, "Stop", _S.STOP),
    _gtsrb(15, "No vehicles", _S.PROHIBITORY),
    _gtsrb(16, "Vehicles over 3.5 metric tons prohibited", _S.PROHIBITORY),
    _gtsrb(17, "No entry", _S.NO_ENTRY),
    _gtsrb(18, "General caution", _S.WARNING),
    _gtsrb(19, "Dangerous curve to the left", _S.WARNING),
    _gtsrb(20, "Dangerous curve to the right", _S.WARNING),
    _gtsrb(21, "Double curve", _S.WARNING),
    _gtsrb(22, "Bumpy road", _S.WARNING),
    _gtsrb(23, "Slippery road", _S.WARNING),
    _gtsrb(24, "Road narrows on the right", _S.WARNING),
    _gtsrb(25, "Road work", _S.WARNING),
    _gtsrb(26, "Traffic signals", _S.WARNING),
    _gtsrb(27, "Pedestrians", _S.WARNING),
    _gtsrb(28, "Children crossing", _S.WARNING),
    _gtsrb(29, "Bicycles crossing", _S.WARNING),
    _gtsrb(30, "Beware of ice/snow", _S.WARNING),
    _gtsrb(31, "Wild animals crossing", _S.WARNING),
    _gtsrb(32, "End of all speed and passing limits", _S.END_OF_RESTRICTIONS),
    _gtsrb(33, "Turn right ahead", _S.MANDATORY),
    _gtsrb(34, "Turn left ahead", _S.MANDATORY),
    _gtsrb(35, "Ahead only", _S.MANDATORY),
    _gtsrb(36, "Go straight or right", _S.MANDATORY),
    _gtsrb(37, "Go straight or left", _S.MANDATORY),
    _gtsrb(38, "Keep right", _S.MANDATORY),
    _gtsrb(39, "Keep left", _S.MANDATORY),
    _gtsrb(40, "Roundabout mandatory", _S.MANDATORY),
    _gtsrb(41, "End of no passing", _S.END_OF_RESTRICTIONS),
    _gtsrb(42, "End of no passing by vehicles over 3.5 metric tons", _S.END_OF_RESTRICTIONS),
)

EXTRA_CLASSES: tuple[SignClass, ...] = (
    SignClass(
        "pedestrian_crossing_square", "Pedestrian crossing (blue square)", _S.PEDESTRIAN_CROSSING
    ),
    SignClass("supplementary_text_plate", "Supplementary text plate", _S.SUPPLEMENTARY_TEXT),
    # The number varies (25, 35, 55 mph...): OCR reads it, so the class fixes only the unit.
    SignClass("us_speed_limit", "SPEED LIMIT (US, mph)", _S.SPEED_LIMIT, speed_unit="mph"),
    SignClass(
        "speed_limit_round", "Speed limit (red ring, any value)", _S.SPEED_LIMIT, speed_unit="km/h"
    ),
)

GTSRB_CLASS_COUNT = 43

SIGN_CLASSES: MappingProxyType[str, SignClass] = MappingProxyType(
    {sign.key: sign for sign in (*GTSRB_CLASSES, *EXTRA_CLASSES)}
)
_BY_GTSRB_ID: MappingProxyType[int, SignClass] = MappingProxyType(
    {sign.gtsrb_id: sign for sign in GTSRB_CLASSES if sign.gtsrb_id is not None}
)


def gtsrb_class(class_id: int) -> SignClass:
    """The taxonomy entry of a GTSRB class id (0-42); `KeyError` for any other id."""
    try:
        return _BY_GTSRB_ID[class_id]
    except KeyError:
        raise KeyError(f"no GTSRB class {class_id!r}; ids are 0-{GTSRB_CLASS_COUNT - 1}") from None


def sign_type_of_gtsrb(class_id: int) -> SignType:
    """The sign type a GTSRB class id maps onto."""
    return gtsrb_class(class_id).sign_type


def takes_numeric_value(sign_type: SignType) -> bool:
    """Whether readings of this type carry a number (the limit) with a unit."""
    return sign_type in (SignType.SPEED_LIMIT, SignType.END_OF_SPEED_LIMIT)
