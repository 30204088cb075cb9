"""The taxonomy maps all 43 GTSRB classes, named as in the official list, onto sign types."""

from __future__ import annotations

import csv

import pytest

from fleet_protocol.taxonomy import (
    EXTRA_CLASSES,
    GTSRB_CLASS_COUNT,
    GTSRB_CLASSES,
    SIGN_CLASSES,
    SIGN_TYPE_DESCRIPTIONS,
    SignType,
    gtsrb_class,
    sign_type_of_gtsrb,
    takes_numeric_value,
)
from tests.conftest import SHARED_DATA

GTSRB_CSV = SHARED_DATA / "gtsrb_classes.csv"


def test_every_gtsrb_id_is_mapped_once_in_order() -> None:
    assert [c.gtsrb_id for c in GTSRB_CLASSES] == list(range(GTSRB_CLASS_COUNT))
    assert all(isinstance(sign_type_of_gtsrb(i), SignType) for i in range(GTSRB_CLASS_COUNT))


@pytest.mark.skipif(not GTSRB_CSV.exists(), reason=f"{GTSRB_CSV} is not present")
def test_names_equal_the_official_gtsrb_class_list() -> None:
    with GTSRB_CSV.open(newline="", encoding="utf-8") as f:
        official = {int(row["class_id"]): row["name"] for row in csv.DictReader(f)}
    assert official == {c.gtsrb_id: c.name for c in GTSRB_CLASSES}


def test_unknown_gtsrb_id_is_a_key_error_naming_the_range() -> None:
    with pytest.raises(KeyError, match="ids are 0-42"):
        gtsrb_class(43)


@pytest.mark.parametrize(
    ("class_id", "sign_type", "speed"),
    [
        (0, SignType.SPEED_LIMIT, 20),
        (7, SignType.SPEED_LIMIT, 100),  # one source calls it 110 km/h; it is 100
        (8, SignType.SPEED_LIMIT, 120),
        (6, SignType.END_OF_SPEED_LIMIT, 80),
        (14, SignType.STOP, None),
        (13, SignType.YIELD, None),
        (17, SignType.NO_ENTRY, None),
        (12, SignType.PRIORITY_ROAD, None),
        (25, SignType.WARNING, None),
        (40, SignType.MANDATORY, None),
        (16, SignType.PROHIBITORY, None),
        (32, SignType.END_OF_RESTRICTIONS, None),
    ],
)
def test_known_classes_map_to_their_meaning_and_speed(
    class_id: int, sign_type: SignType, speed: int | None
) -> None:
    sign = gtsrb_class(class_id)
    assert sign.sign_type is sign_type
    assert sign.speed_value == speed
    assert sign.speed_unit == ("km/h" if speed is not None else None)


def test_every_speed_class_names_its_value_in_km_h() -> None:
    for sign in GTSRB_CLASSES:
        if sign.sign_type is SignType.SPEED_LIMIT:
            assert sign.name == f"Speed limit ({sign.speed_value}km/h)"


def test_types_gtsrb_lacks_are_covered() -> None:
    types = {sign.sign_type for sign in EXTRA_CLASSES}
    assert {SignType.PEDESTRIAN_CROSSING, SignType.SUPPLEMENTARY_TEXT} <= types
    us = SIGN_CLASSES["us_speed_limit"]
    assert (us.sign_type, us.speed_unit, us.speed_value) == (SignType.SPEED_LIMIT, "mph", None)


def test_keys_are_unique_and_every_type_is_described() -> None:
    assert len(SIGN_CLASSES) == len(GTSRB_CLASSES) + len(EXTRA_CLASSES)
    assert set(SIGN_TYPE_DESCRIPTIONS) == set(SignType)


def test_only_speed_types_take_a_number() -> None:
    numeric = {t for t in SignType if takes_numeric_value(t)}
    assert numeric == {SignType.SPEED_LIMIT, SignType.END_OF_SPEED_LIMIT}
