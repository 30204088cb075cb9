"""Sign faces: every category can be drawn, and real crops are cut to their category's outline."""

from __future__ import annotations

import numpy as np
import pytest

from training.data.categories import CATEGORIES, SHAPES, Category, Shape
from training.data.records import Box
from training.data.sign_art import cut_real_face, draw_random_face, draw_speed_round, shape_mask


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_category_has_a_drawn_face_with_an_outline(category: Category) -> None:
    face = draw_random_face(category, np.random.default_rng(0))
    assert face.category is category
    assert face.rgba.dtype == np.uint8
    assert face.rgba.shape[2] == 4
    alpha = face.rgba[..., 3]
    assert alpha.max() == 255
    if SHAPES[category] is not Shape.RECTANGLE:
        assert alpha.min() == 0  # the outline leaves the corners transparent


def test_speed_faces_carry_their_value_and_unit() -> None:
    face = draw_speed_round(110)
    assert (face.speed_value, face.speed_unit, face.text) == (110, "km/h", "110")
    end = draw_speed_round(80, end=True)
    assert end.category is Category.END_OF_RESTRICTION


@pytest.mark.parametrize(
    ("shape", "area"),
    [
        (Shape.CIRCLE, np.pi / 4),
        (Shape.TRIANGLE_UP, 0.5),
        (Shape.DIAMOND, 0.5),
        (Shape.OCTAGON, 0.828),
        (Shape.RECTANGLE, 1.0),
    ],
)
def test_masks_cover_their_shape_area(shape: Shape, area: float) -> None:
    mask = shape_mask(shape, 100, 100)
    assert mask.mean() / 255 == pytest.approx(area, abs=0.03)


def test_real_crop_is_cut_to_its_box_and_outline() -> None:
    rgb = np.full((50, 60, 3), 200, np.uint8)
    face = cut_real_face(rgb, Box(10, 5, 50, 45, "14", gtsrb_id=14), Category.STOP)
    assert face.rgba.shape == (40, 40, 4)
    assert face.rgba[0, 0, 3] == 0
    assert face.rgba[20, 20, 3] == 255
    assert face.label == "14"
