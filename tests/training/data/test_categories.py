"""Detector categories: every GTSRB class and the TT100K families land in a category."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.data.categories import (
    GTSRB_CATEGORY,
    SHAPES,
    Category,
    category_of_record,
    category_of_tt100k,
)
from training.data.records import Box, LabeledImage


def test_every_gtsrb_class_and_category_is_covered() -> None:
    assert sorted(GTSRB_CATEGORY) == list(range(43))
    assert set(SHAPES) == set(Category)
    assert GTSRB_CATEGORY[1] is Category.PROHIBITORY
    assert GTSRB_CATEGORY[14] is Category.STOP
    assert GTSRB_CATEGORY[32] is Category.END_OF_RESTRICTION


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("pl40", Category.PROHIBITORY),
        ("pne", Category.PROHIBITORY),
        ("pr40", Category.END_OF_RESTRICTION),
        ("ps", Category.STOP),
        ("pg", Category.YIELD),
        ("w57", Category.WARNING),
        ("il60", Category.MANDATORY),
        ("ip", Category.INFO_SQUARE),
        ("io", None),
    ],
)
def test_tt100k_codes_map_by_family(code: str, category: Category | None) -> None:
    assert category_of_tt100k(code) is category


def test_records_map_by_gtsrb_id_then_source_then_unit() -> None:
    def record(box: Box, source: str = "x") -> tuple[LabeledImage, Box]:
        return LabeledImage(Path("a.png"), 1, 1, (box,), "g", source), box

    assert category_of_record(*record(Box(0, 0, 1, 1, "pl50", gtsrb_id=2), "tt100k")) is (
        Category.PROHIBITORY
    )
    assert category_of_record(*record(Box(0, 0, 1, 1, "w13"), "tt100k")) is Category.WARNING
    assert category_of_record(*record(Box(0, 0, 1, 1, "us", speed_value=35, speed_unit="mph"))) is (
        Category.SPEED_RECT
    )
    assert category_of_record(*record(Box(0, 0, 1, 1, "stop"))) is Category.STOP
    assert category_of_record(*record(Box(0, 0, 1, 1, "lamp post"))) is None
