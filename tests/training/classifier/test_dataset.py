"""Classifier crops: stored with a margin, viewed with jitter for training, exactly for scoring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.training.data.conftest import write_image
from training.classifier.dataset import (
    STORE,
    class_balance_weights,
    real_crops,
    rendered_crops,
    views,
)
from training.classifier.labels import OTHER_INDEX, SPEED_LABELS
from training.data.records import Box, LabeledImage


def test_real_crops_store_every_box_and_one_crop_per_background(tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png", 80, 60)
    background = write_image(tmp_path / "b.png", 64, 64, seed=2)
    records = [
        LabeledImage(
            image,
            80,
            60,
            (
                Box(10, 10, 30, 30, "1", gtsrb_id=1, speed_value=30),
                Box(40, 10, 70, 50, "pl40", speed_value=40),
            ),
            "g1",
            "s",
        ),
        LabeledImage(background, 64, 64, (), "g2", "bg"),
    ]
    crops = real_crops(records, np.random.default_rng(0))
    assert crops.images.shape == (3, STORE, STORE, 3)
    assert crops.sign.tolist() == [1, OTHER_INDEX, OTHER_INDEX]
    assert [SPEED_LABELS[i] for i in crops.speed] == ["30", "40", "none"]
    assert crops.source.tolist() == ["s", "s", "bg"]
    capped = real_crops(records, np.random.default_rng(0), max_images=1)
    # One image of the two, whole: either the sign image's two crops or the background's one.
    kept = ["s", "s"] if capped.source.tolist() == ["s", "s"] else ["bg"]
    assert capped.source.tolist() == kept
    if kept == ["s", "s"]:
        assert np.array_equal(capped.images, crops.images[:2])


def test_rendered_crops_carry_gtsrb_classes_where_the_design_is_german() -> None:
    crops = rendered_crops(300, np.random.default_rng(1))
    assert crops.images.shape == (300, STORE, STORE, 3)
    speeds = {SPEED_LABELS[i] for i in crops.speed}
    # Values GTSRB has no class for (5, 110 km/h) are rendered too, and signs without a number.
    assert {"5", "110", "none"} <= speeds
    # A rendered 30 km/h round sign is GTSRB class 1 in the German design, "other" in others.
    thirty = crops.sign[crops.speed == SPEED_LABELS.index("30")]
    assert set(thirty.tolist()) == {1, OTHER_INDEX}


def test_scoring_views_are_deterministic_and_training_views_vary() -> None:
    stored = rendered_crops(4, np.random.default_rng(2)).images
    a = views(stored, 32, np.random.default_rng(0), train=False)
    b = views(stored, 32, np.random.default_rng(9), train=False)
    assert a.shape == (4, 32, 32, 3)
    assert np.array_equal(a, b)
    c = views(stored, 32, np.random.default_rng(0), train=True)
    d = views(stored, 32, np.random.default_rng(1), train=True)
    assert not np.array_equal(c, d)


def test_rare_classes_get_more_weight_per_sample() -> None:
    weights = class_balance_weights(np.array([0] * 90 + [1] * 10))
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    # By the inverse square root of the class's count: 9 times rarer, 3 times the weight
    # (a fair share without letting a handful of samples dominate an epoch).
    assert weights[-1] == pytest.approx(3 * weights[0])
