"""``roadsign-train evaluate-scenes``: a bundle read on the GTSDB evaluation scenes, as by a user.

The scenes 00600-00899 go through `edge_agent.predict.predict_files`, the code of
``roadsign-agent predict``: the same bundle verification, image decoding, runtime, letterbox,
NMS, classifier and interpretation a device applies to a still photo. The headline numbers come
from a run at `predict`'s own detection threshold; the precision-recall curve from a second run
at a low threshold, swept over the confidence each reading reports (`scene_metrics`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from edge_agent.exceptions import AgentError
from edge_agent.inference import resolve_backend_name
from edge_agent.predict import predict_files
from edge_agent.reading.tiling import TilingPolicy
from training.data.categories import category_of_record
from training.data.gtsdb_scenes import read_gtsdb_scenes
from training.data.records import LabeledImage
from training.detector.pr_plot import plot_pr_curves
from training.detector.scene_metrics import (
    PredictedSign,
    SceneResult,
    TrueSign,
    pr_curve,
    score_scenes,
)
from training.exceptions import TrainingError

PREDICT_CONFIDENCE = 0.25
"""``roadsign-agent predict``'s default detection threshold: what a user gets."""
SWEEP_CONFIDENCE = 0.01
"""Detection threshold of the run the precision-recall curve is swept over."""


def true_signs(image: LabeledImage) -> list[TrueSign]:
    """The labelled signs of a scene record, with their detector categories."""
    signs = []
    for box in image.boxes:
        category = category_of_record(image, box)
        if box.gtsrb_id is None or category is None:
            raise TrainingError(f"{image.path}: sign {box.label!r} has no GTSRB class/category")
        signs.append(TrueSign((box.x1, box.y1, box.x2, box.y2), box.gtsrb_id, category.value))
    return signs


def predicted_sign(fields: Mapping[str, object]) -> PredictedSign:
    """One reading of ``predict``'s JSON output as a `PredictedSign`."""
    bbox, confidence = fields.get("bbox"), fields.get("confidence")
    if not (isinstance(bbox, list) and len(bbox) == 4 and isinstance(confidence, int | float)):
        raise TrainingError(f"not a reading of roadsign-agent predict: {dict(fields)}")
    x1, y1, x2, y2 = (float(v) for v in bbox)
    class_id, value, unit = fields.get("gtsrb_class_id"), fields.get("value"), fields.get("unit")
    return PredictedSign(
        (x1, y1, x2, y2),
        str(fields["category"]),
        str(fields["sign_type"]),
        class_id if isinstance(class_id, int) else None,
        float(value) if isinstance(value, int | float) else None,
        unit if isinstance(unit, str) else None,
        float(confidence),
    )


def read_scenes(
    bundle: Path,
    scenes: Sequence[LabeledImage],
    *,
    backend: str,
    threads: int,
    confidence: float,
    tiling: TilingPolicy | None = None,
) -> list[SceneResult]:
    """Every scene read by ``predict``'s code with `bundle`, paired with its labels (`tiling`:
    as `predict_files`; None: a default profile's)."""
    try:
        outputs = list(
            predict_files(
                [s.path for s in scenes],
                model_dir=bundle,
                backend=backend,
                threads=threads,
                confidence=confidence,
                tiling=tiling,
            )
        )
    except AgentError as e:
        raise TrainingError(f"cannot read the scenes with bundle {bundle}: {e}") from e
    results = []
    for scene, output in zip(scenes, outputs, strict=True):
        if "error" in output:
            raise TrainingError(f"{scene.path}: {output['error']}")
        readings = output["readings"]
        assert isinstance(readings, list)
        results.append(
            SceneResult(scene.path.stem, true_signs(scene), [predicted_sign(r) for r in readings])
        )
    return results


def evaluate_scenes(
    bundle: Path,
    scenes_root: Path,
    *,
    backend: str = "auto",
    threads: int = 2,
    confidence: float = PREDICT_CONFIDENCE,
    sweep_confidence: float | None = SWEEP_CONFIDENCE,
    tiling: TilingPolicy | None = None,
    limit: int | None = None,
) -> dict[str, object]:
    """The scene metrics of `bundle` on the evaluation scenes of the unpacked archive, each
    scene looked at under `tiling` (None: as a default profile's agent looks).

    `limit`: only the first that many evaluation scenes, in scene order (smoke runs).
    `sweep_confidence` None: no second run and no ``pr_curve`` (half the time).
    """
    scenes = read_gtsdb_scenes(scenes_root)["evaluation"][:limit]
    if not scenes:
        raise TrainingError(f"{scenes_root}: no evaluation scenes (00600-00899)")
    started = time.perf_counter()
    results = read_scenes(
        bundle, scenes, backend=backend, threads=threads, confidence=confidence, tiling=tiling
    )
    predict_s = time.perf_counter() - started
    metrics: dict[str, object] = {
        "bundle": str(bundle),
        "backend": resolve_backend_name(backend),
        "threads": threads,
        "detection_confidence": confidence,
        "tiling": tiling.as_json() if tiling is not None else "default profile",
        **score_scenes(results),
    }
    if sweep_confidence is not None:
        swept = read_scenes(
            bundle,
            scenes,
            backend=backend,
            threads=threads,
            confidence=sweep_confidence,
            tiling=tiling,
        )
        metrics["pr_curve"] = {
            "detection_confidence": sweep_confidence,
            "swept": "reading confidence",
            "all_signs": pr_curve(swept),
            "speed_limit": pr_curve(swept, speed_limit=True),
        }
    metrics["seconds"] = {
        "predict": round(predict_s, 1),
        "total": round(time.perf_counter() - started, 1),
    }
    return metrics


def write_pr_plot(metrics: Mapping[str, object], path: Path) -> Path:
    """Draw the precision-recall curves of `evaluate_scenes`'s result into a PNG at `path`."""
    sweep = metrics["pr_curve"]
    assert isinstance(sweep, dict)
    curves = {}
    for name in ("all_signs", "speed_limit"):
        points = [p for p in sweep[name] if p["precision"] is not None]
        curves[name.replace("_", " ")] = (
            [p["recall"] for p in points],
            [p["precision"] for p in points],
        )
    title = f"GTSDB 00600-00899, IoU >= {metrics['min_iou']}, reading confidence swept"
    return plot_pr_curves(curves, path, title=title, marker=".")


def write_metrics(metrics: Mapping[str, object], path: Path) -> Path:
    """Write the metrics as JSON to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")
    return path
