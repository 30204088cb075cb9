"""Detection metrics: perfect, empty, partial and duplicate detections score as COCO does."""

from __future__ import annotations

import pytest

from training.detector.metrics import ImageResult, evaluate_detections

A = (10.0, 10.0, 50.0, 50.0)
B = (100.0, 100.0, 140.0, 150.0)


def test_perfect_detections_score_one() -> None:
    results = [ImageResult([(A, "stop"), (B, "yield")], [(A, "stop", 0.9), (B, "yield", 0.8)])]
    metrics = evaluate_detections(results, ["stop", "yield", "warning"])
    assert metrics.map50 == pytest.approx(1.0)
    assert metrics.map50_95 == pytest.approx(1.0)
    assert set(metrics.per_class) == {"stop", "yield"}  # no truth, no AP
    assert metrics.per_class["stop"]["f1"] == pytest.approx(1.0)


def test_missing_and_wrong_class_detections_score_zero() -> None:
    results = [ImageResult([(A, "stop")], [(A, "yield", 0.9)])]
    metrics = evaluate_detections(results, ["stop", "yield"])
    assert metrics.map50 == 0.0
    assert metrics.per_class["stop"]["recall"] == 0.0


def test_one_of_two_found_is_half_recall_and_duplicates_are_false_positives() -> None:
    results = [
        ImageResult([(A, "stop")], [(A, "stop", 0.9), (A, "stop", 0.8)]),
        ImageResult([(B, "stop")], []),
    ]
    metrics = evaluate_detections(results, ["stop"])
    stop = metrics.per_class["stop"]
    assert (stop["precision"], stop["recall"], stop["instances"]) == (0.5, 0.5, 2)
    assert metrics.map50 == pytest.approx(0.5, abs=0.01)


def test_loose_boxes_pass_at_iou_50_but_not_at_strict_thresholds() -> None:
    loose = (10.0, 10.0, 50.0, 75.0)  # IoU 40*40 / 40*65 = 0.62
    results = [ImageResult([(A, "stop")], [(loose, "stop", 0.9)])]
    metrics = evaluate_detections(results, ["stop"])
    assert metrics.map50 == pytest.approx(1.0)
    assert metrics.map50_95 == pytest.approx(0.3)  # 0.50, 0.55, 0.60 of ten thresholds


def test_no_truth_at_all_is_zero_not_an_error() -> None:
    assert evaluate_detections([ImageResult([], [(A, "stop", 0.9)])], ["stop"]).map50 == 0.0
