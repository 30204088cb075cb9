"""Scene scoring on hand-made boxes: misses, duplicates, wrong classes and speeds, sizes, PR."""

from __future__ import annotations

import pytest

from training.detector.scene_metrics import (
    PredictedSign,
    SceneResult,
    TrueSign,
    match,
    pr_curve,
    score_scenes,
)

SPEED_50 = 2  # GTSRB class ids
SPEED_80 = 5
NO_ENTRY = 17
WARNING = 18


def _box(x: float, y: float, side: float) -> tuple[float, float, float, float]:
    return (x, y, x + side, y + side)


def _truth(x: float, class_id: int, side: float = 30, category: str = "prohibitory") -> TrueSign:
    return TrueSign(_box(x, 100, side), class_id, category)


def _read(
    x: float,
    class_id: int | None,
    *,
    side: float = 30,
    category: str = "prohibitory",
    value: float | None = None,
    confidence: float = 0.9,
) -> PredictedSign:
    sign_type = "speed_limit" if value is not None else "prohibitory"
    unit = "km/h" if value is not None else None
    return PredictedSign(_box(x, 100, side), category, sign_type, class_id, value, unit, confidence)


def test_a_miss_and_a_duplicate_cost_recall_and_precision() -> None:
    scene = SceneResult(
        "00600",
        [_truth(0, NO_ENTRY), _truth(200, NO_ENTRY)],
        [_read(0, NO_ENTRY, confidence=0.9), _read(1, NO_ENTRY, confidence=0.8)],
    )
    everything = score_scenes([scene])["all_signs"]
    assert isinstance(everything, dict)
    assert (everything["signs"], everything["predictions"], everything["matched"]) == (2, 2, 1)
    assert (everything["recall"], everything["precision"]) == (0.5, 0.5)
    assert everything["class_top1"] == 1.0


def test_the_most_confident_prediction_takes_the_sign() -> None:
    truth = [_box(0, 0, 30)]
    assert match(truth, [(_box(2, 0, 30), 0.3), (_box(0, 0, 30), 0.9)], 0.4) == [None, 0]


def test_overlap_below_iou_04_is_a_miss() -> None:
    # Shifted by half a side: IoU 1/3.
    scene = SceneResult("00600", [_truth(0, NO_ENTRY)], [_read(15, NO_ENTRY)])
    assert score_scenes([scene])["all_signs"]["matched"] == 0  # type: ignore[index]
    assert score_scenes([scene], min_iou=0.3)["all_signs"]["matched"] == 1  # type: ignore[index]


def test_a_wrong_class_is_found_but_misses_class_top1_and_its_category() -> None:
    scene = SceneResult(
        "00600",
        [_truth(0, NO_ENTRY), _truth(100, WARNING, category="warning")],
        [_read(0, WARNING, category="warning"), _read(100, WARNING, category="warning")],
    )
    metrics = score_scenes([scene])
    everything, per_category = metrics["all_signs"], metrics["per_category"]
    assert isinstance(everything, dict)
    assert isinstance(per_category, dict)
    assert (everything["recall"], everything["precision"], everything["class_top1"]) == (
        1.0,
        1.0,
        0.5,
    )
    assert per_category["prohibitory"] == {
        "signs": 1,
        "predictions": 0,
        "matched": 0,
        "recall": 0.0,
        "precision": None,
    }
    assert (per_category["warning"]["recall"], per_category["warning"]["precision"]) == (1.0, 0.5)


def test_a_wrong_speed_value_is_a_found_speed_sign_but_not_an_exact_one() -> None:
    scene = SceneResult(
        "00600",
        [_truth(0, SPEED_50), _truth(100, SPEED_80)],
        [_read(0, SPEED_50, value=50), _read(100, SPEED_50, value=50)],
    )
    speed = score_scenes([scene])["speed_limit"]
    assert isinstance(speed, dict)
    assert (speed["recall"], speed["precision"], speed["value_exact"]) == (1.0, 1.0, 0.5)


def test_a_speed_sign_read_without_a_value_is_a_speed_miss_and_no_speed_is_a_false_one() -> None:
    scene = SceneResult(
        "00600",
        [_truth(0, SPEED_50), _truth(100, NO_ENTRY)],
        [_read(0, SPEED_50), _read(100, SPEED_80, value=80)],
    )
    metrics = score_scenes([scene])
    speed, everything = metrics["speed_limit"], metrics["all_signs"]
    assert isinstance(speed, dict)
    assert isinstance(everything, dict)
    assert (speed["signs"], speed["predictions"], speed["matched"]) == (1, 1, 0)
    assert (speed["recall"], speed["precision"], speed["value_exact"]) == (0.0, 0.0, None)
    assert everything["recall"] == 1.0  # both signs were found, just not read as speeds


def test_recall_by_size_puts_each_sign_in_the_bucket_of_its_larger_side() -> None:
    sides = [10, 19.9, 20, 39, 40, 79, 80, 150]
    truth = [_truth(200 * i, NO_ENTRY, side) for i, side in enumerate(sides)]
    found = [_read(200 * i, NO_ENTRY, side=side) for i, side in enumerate(sides) if i % 2 == 0]
    everything = score_scenes([SceneResult("00600", truth, found)])["all_signs"]
    assert isinstance(everything, dict)
    assert everything["recall_by_size"] == {
        "<20": {"signs": 2, "found": 1, "recall": 0.5},
        "20-40": {"signs": 2, "found": 1, "recall": 0.5},
        "40-80": {"signs": 2, "found": 1, "recall": 0.5},
        ">=80": {"signs": 2, "found": 1, "recall": 0.5},
    }
    wide = TrueSign((0, 0, 50, 10), NO_ENTRY, "prohibitory")
    assert wide.size == 50


def test_the_pr_curve_keeps_the_readings_at_or_above_each_confidence() -> None:
    scene = SceneResult(
        "00600",
        [_truth(0, NO_ENTRY), _truth(100, NO_ENTRY)],
        [
            _read(0, NO_ENTRY, confidence=0.9),
            _read(300, NO_ENTRY, confidence=0.6),  # nothing there
            _read(100, NO_ENTRY, confidence=0.3),
        ],
    )
    curve = pr_curve([scene], thresholds=[0.2, 0.5, 0.95])
    assert [(p["predictions"], p["recall"], p["precision"]) for p in curve] == [
        (3, 1.0, pytest.approx(0.6667)),
        (2, 0.5, 0.5),
        (0, 0.0, None),
    ]
    speed = pr_curve([scene], speed_limit=True, thresholds=[0.2])
    assert speed == [{"confidence": 0.2, "predictions": 0, "recall": None, "precision": None}]
