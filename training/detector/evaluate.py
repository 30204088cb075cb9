"""Scoring exported detectors with the edge agent's own `Detector`, and the INT8 quality gate.

Each artifact runs through the same letterbox, runtime and NMS code a device runs, on validation
scenes no training step saw, at a low score threshold (0.001) for mAP and at the deployed one for
precision, recall and F1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_agent.bundle import ModelFormat
from edge_agent.detection import Detector
from training.data.records import LabeledImage
from training.data.sign_art import load_rgb
from training.detector.metrics import DetectionMetrics, ImageResult, evaluate_detections
from training.exceptions import TrainingError

MAP_SCORE_THRESHOLD = 0.001
BACKENDS: dict[str, str] = {"onnx": "onnxruntime", "openvino": "openvino"}


class Int8GateError(TrainingError):
    """An INT8 artifact lost more mAP50 than the export config allows."""


def score_detector(
    artifact: Path,
    images: Sequence[LabeledImage],
    *,
    backend: str,
    threads: int,
    deployed_threshold: float = 0.25,
) -> DetectionMetrics:
    """mAP50, mAP50-95 and per-class P/R/F1 of `artifact` on labelled `images`."""
    detector = Detector.load(artifact, backend=backend, threads=threads)
    results = []
    for image in images:
        detections = detector.detect(load_rgb(image.path), confidence=MAP_SCORE_THRESHOLD)
        results.append(
            ImageResult(
                [((b.x1, b.y1, b.x2, b.y2), b.label) for b in image.boxes],
                [(d.box, d.category, d.score) for d in detections],
            )
        )
    return evaluate_detections(results, detector.categories, deployed_threshold)


def score_exports(
    artifacts: Mapping[ModelFormat, Path], images: Sequence[LabeledImage], *, threads: int
) -> dict[ModelFormat, DetectionMetrics]:
    """Scores of every artifact, each on the runtime its format is for."""
    return {
        model_format: score_detector(
            artifact, images, backend=BACKENDS[model_format.split("_")[0]], threads=threads
        )
        for model_format, artifact in artifacts.items()
    }


def int8_drops(scores: Mapping[ModelFormat, DetectionMetrics]) -> dict[str, float]:
    """mAP50 lost by each INT8 artifact against its FP32 twin, in points (0-100)."""
    drops = {}
    for family in ("onnx", "openvino"):
        fp32, int8 = scores.get(f"{family}_fp32"), scores.get(f"{family}_int8")  # type: ignore[call-overload]
        if fp32 is not None and int8 is not None:
            drops[f"int8_map50_drop_{family}"] = 100 * (fp32.map50 - int8.map50)
    return drops


def check_int8_gate(drops: Mapping[str, float], limit: float) -> None:
    """Raise `Int8GateError` naming every INT8 artifact that lost more than `limit` points."""
    failed = {name: drop for name, drop in drops.items() if drop > limit}
    if failed:
        detail = ", ".join(f"{name} = {drop:.2f} points" for name, drop in sorted(failed.items()))
        raise Int8GateError(
            f"INT8 gate: mAP50 dropped more than {limit} points against FP32 ({detail}); "
            "the INT8 artifacts are not registered"
        )
