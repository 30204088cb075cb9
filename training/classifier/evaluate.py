"""Scoring an exported classifier with the edge agent's own runtime on real, held-out crops.

Crops are cut from the original images by `CropClassifier.crop`, exactly as a device cuts them
from a frame, and run through the same backend code. Nothing here was seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.reading.classifier import CropClassifier, CropReading
from training.classifier.labels import SIGN_LABELS
from training.data.records import Box, LabeledImage
from training.data.shared_sets import TT100K_SPEED_LIMIT_PREFIX
from training.data.sign_art import load_rgb

MIN_SPEED_CROP_PX = 30


@dataclass(frozen=True)
class ClassifierScores:
    """Metrics (fractions 0-1) and the 43 x 44 GTSRB confusion matrix."""

    metrics: dict[str, float]
    confusion: np.ndarray


def _read(
    classifier: CropClassifier, items: Sequence[tuple[LabeledImage, Box]]
) -> list[CropReading]:
    crops = [classifier.crop(load_rgb(image.path), (b.x1, b.y1, b.x2, b.y2)) for image, b in items]
    return classifier.classify(crops) if crops else []


def _speed_exact(classifier: CropClassifier, items: list[tuple[LabeledImage, Box]]) -> float:
    readings = _read(classifier, items)
    hits = [r.speed_value == b.speed_value for r, (_, b) in zip(readings, items, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def evaluate_classifier(
    artifact: Path, parts: dict[str, list[LabeledImage]], *, backend: str, threads: int
) -> ClassifierScores:
    """GTSRB test top-1 and confusion; exact speed reading on GTSDB, TT100K and US test crops."""
    classifier = CropClassifier.load(artifact, backend=backend, threads=threads)
    gtsrb = [(image, image.boxes[0]) for image in parts["gtsrb_test/test"]]
    readings = _read(classifier, gtsrb)
    confusion = np.zeros((43, len(SIGN_LABELS)), np.int64)
    for reading, (_, box) in zip(readings, gtsrb, strict=True):
        assert box.gtsrb_id is not None
        confusion[box.gtsrb_id, SIGN_LABELS.index(reading.sign_label)] += 1

    def speed_items(key: str, *, prefix: str | None = None) -> list[tuple[LabeledImage, Box]]:
        return [
            (image, box)
            for image in parts.get(key, [])
            for box in image.boxes
            if box.speed_value is not None
            and box.height >= MIN_SPEED_CROP_PX
            and (prefix is None or box.label.startswith(prefix))
        ]

    metrics = {
        "gtsrb_test32_top1": float(np.trace(confusion) / confusion.sum()),
        "gtsdb_speed_crops_exact": _speed_exact(classifier, speed_items("gtsdb/test")),
        "tt100k_speed_crops_exact": _speed_exact(
            classifier, speed_items("tt100k/test", prefix=TT100K_SPEED_LIMIT_PREFIX)
        ),
        "us_speed_crops_exact": _speed_exact(classifier, speed_items("us/test")),
    }
    return ClassifierScores(metrics, confusion)
