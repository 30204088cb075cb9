"""Detection metrics: AP per class (COCO 101-point), mAP50, mAP50-95, precision, recall, F1.

Detections are matched greedily, best score first, to the unmatched ground-truth box of the same
class with the highest IoU at or above the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ImageResult:
    """Ground truth and detections of one image: (box, class) and (box, class, score)."""

    truth: Sequence[tuple[Box, str]]
    detections: Sequence[tuple[Box, str, float]]


@dataclass(frozen=True)
class DetectionMetrics:
    """Dataset-level detection quality."""

    map50: float
    map50_95: float
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per class: ap50, ap50_95, precision, recall, f1 (at the score threshold), instances."""
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Per class at IoU 0.5: recall and precision arrays, for plotting."""


def _iou(box: Box, boxes: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    iou: np.ndarray = inter / np.maximum(area + areas - inter, 1e-9)
    return iou


def _matches(
    results: Sequence[ImageResult], label: str, threshold: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores and true-positive flags of every `label` detection, and the number of truths."""
    scores, hits, total = [], [], 0
    for result in results:
        truth = np.array([b for b, c in result.truth if c == label], np.float64).reshape(-1, 4)
        total += len(truth)
        used = np.zeros(len(truth), bool)
        detections = sorted((d for d in result.detections if d[1] == label), key=lambda d: -d[2])
        for box, _, score in detections:
            scores.append(score)
            if len(truth) == 0:
                hits.append(False)
                continue
            ious = np.where(used, -1.0, _iou(box, truth))
            best = int(ious.argmax())
            hit = ious[best] >= threshold
            used[best] |= hit
            hits.append(bool(hit))
    order = np.argsort(-np.array(scores), kind="stable")
    return np.array(scores)[order], np.array(hits, bool)[order], total


def _average_precision(hits: np.ndarray, total: int) -> tuple[float, np.ndarray, np.ndarray]:
    if total == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    tp = np.cumsum(hits)
    recall = tp / total
    precision = tp / np.arange(1, len(hits) + 1)
    # Precision envelope, then sampled at 101 recall points (COCO).
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    sampled = np.array([envelope[i] if i < len(envelope) else 0.0 for i in idx])
    return float(sampled.mean()), recall, precision


def evaluate_detections(
    results: Sequence[ImageResult], classes: Sequence[str], score_threshold: float = 0.25
) -> DetectionMetrics:
    """Metrics over `results` for the classes that have ground truth."""
    per_class: dict[str, dict[str, float]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label in classes:
        aps = []
        for threshold in IOU_THRESHOLDS:
            scores, hits, total = _matches(results, label, float(threshold))
            ap, recall, precision = _average_precision(hits, total)
            aps.append(ap)
            if threshold == 0.5:
                curves[label] = (recall, precision)
                kept = hits[scores >= score_threshold]
                tp = int(kept.sum())
                p = tp / len(kept) if len(kept) else 0.0
                r = tp / total if total else 0.0
                per_class[label] = {
                    "precision": p,
                    "recall": r,
                    "f1": 2 * p * r / (p + r) if p + r else 0.0,
                    "instances": float(total),
                }
        if np.isnan(aps[0]):
            per_class.pop(label, None)
            curves.pop(label, None)
            continue
        per_class[label]["ap50"] = aps[0]
        per_class[label]["ap50_95"] = float(np.mean(aps))
    if not per_class:
        return DetectionMetrics(0.0, 0.0)
    return DetectionMetrics(
        float(np.mean([m["ap50"] for m in per_class.values()])),
        float(np.mean([m["ap50_95"] for m in per_class.values()])),
        per_class,
        curves,
    )
