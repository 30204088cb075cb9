"""The detector stage: train on rendered scenes, export four artifacts, score, gate, register.

One MLflow run holds it all. The INT8 gate runs before anything is registered: a quantised model
that lost too much is never offered as a candidate. Each registered version carries the lineage
(run, manifests, git sha, format, sha256) and its scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge_agent.bundle import ModelFormat, file_sha256, load_metadata, write_metadata
from training.config import TrainingConfig
from training.data.build import DatasetBuild
from training.data.gtsdb_scenes import refuse_evaluation_scenes
from training.data.yolo import read_yolo_dataset
from training.detector.evaluate import check_int8_gate, int8_drops, score_exports
from training.detector.export import export_all
from training.detector.metrics import DetectionMetrics
from training.detector.pr_plot import plot_pr_curves
from training.detector.train import train_detector
from training.exceptions import TrainingError
from training.registry import register_version, registered_name
from training.tracking import Run, git_sha, tracked_run


def _plot_pr_curves(scores: DetectionMetrics, path: Path) -> None:
    curves = {
        f"{label} AP50 {scores.per_class[label]['ap50']:.2f}": (list(recall), list(precision))
        for label, (recall, precision) in sorted(scores.pr_curves.items())
    }
    plot_pr_curves(curves, path, title=f"PR at IoU 0.5, mAP50 {scores.map50:.3f}")


def _report(
    scores: dict[ModelFormat, DetectionMetrics], drops: dict[str, float], path: Path
) -> None:
    report = {
        model_format: {"map50": s.map50, "map50_95": s.map50_95, "per_class": s.per_class}
        for model_format, s in scores.items()
    }
    path.write_text(json.dumps({**report, **drops}, indent=2) + "\n")


def _register(
    config: TrainingConfig,
    run: Run,
    build: DatasetBuild,
    artifacts: dict[ModelFormat, Path],
    scores: dict[ModelFormat, DetectionMetrics],
    drops: dict[str, float],
) -> dict[str, str]:
    lineage = {
        "run_id": run.run_id,
        "git_sha": git_sha(),
        **{f"manifest.{k}": m.manifest_sha256 for k, m in build.manifests.items()},
    }
    versions: dict[str, str] = {}
    for model_format, artifact in artifacts.items():
        metadata = load_metadata(artifact)
        family = model_format.split("_")[0]
        metrics = {"map50": scores[model_format].map50, "map50_95": scores[model_format].map50_95}
        if model_format.endswith("int8"):
            metrics["int8_map50_drop"] = drops[f"int8_map50_drop_{family}"]
        version = register_version(
            config.mlflow.tracking_uri,
            registered_name(config.mlflow.registered_model, model_format),
            run_id=run.run_id,
            artifact_path=f"models/{model_format}",
            lineage={
                **lineage,
                "format": model_format,
                "sha256": metadata.sha256,
                **{f"sha256.{k}": v for k, v in metadata.companions.items()},
            },
            metrics=metrics,
        )
        versions[model_format] = f"{version.name}/{version.version}"
    return versions


def run_detector_stage(
    config: TrainingConfig, build: DatasetBuild, *, resume: bool = False
) -> dict[str, object]:
    """Train, export, score, gate and register the detector; the summary the CLI prints."""
    if build.data_yaml is None:
        raise TrainingError("the detector stage needs the rendered scenes of the data stage")
    work = build.out_dir / "detector"
    splits = read_yolo_dataset(build.data_yaml)
    # Validation picks the best epoch, so it is a training step too: neither split may hold a
    # GTSDB evaluation scene, however the data.yaml came to list one.
    refuse_evaluation_scenes([*splits.get("train", []), *splits.get("val", [])])
    val = splits["val"][: config.export.eval_images]
    rng = np.random.default_rng(config.data.seed)
    train_images = [r.path for r in splits["train"]]
    picks = rng.choice(
        len(train_images), min(config.export.calibration_images, len(train_images)), replace=False
    )
    calibration = [train_images[i] for i in sorted(picks)]
    with tracked_run(
        config.mlflow.tracking_uri,
        config.mlflow.experiment,
        f"{config.name}-detector",
        {"stage": "detector"},
    ) as run:
        run.params({f"detector.{k}": v for k, v in config.detector.model_dump().items()})
        run.params({f"export.{k}": v for k, v in config.export.model_dump().items()})
        run.manifests(build.manifests)
        trained = train_detector(
            build.data_yaml,
            config.detector,
            work,
            seed=config.data.seed,
            resume=resume,
            log_metrics=lambda metrics, epoch: run.metrics(metrics, step=epoch),
        )
        version = f"{config.name}-{run.run_id[:8]}"
        artifacts = export_all(
            trained.best,
            work / "export",
            imgsz=config.detector.imgsz,
            calibration_images=calibration,
            version=version,
            run_id=run.run_id,
            work_dir=work,
        )
        scores = score_exports(artifacts, val, threads=config.export.threads)
        drops = int8_drops(scores)
        for model_format, artifact in artifacts.items():
            s = scores[model_format]
            # The sidecar export_all wrote, now with the artifact's scores.
            scored = {"map50": s.map50, "map50_95": s.map50_95}
            write_metadata(
                load_metadata(artifact).model_copy(update={"metrics": scored}), artifact.parent
            )
            run.metrics({f"{model_format}.map50": s.map50, f"{model_format}.map50_95": s.map50_95})
            run.artifact(artifact.parent, f"models/{model_format}")
        run.metrics(drops)
        report = work / "export" / "detector_metrics.json"
        _report(dict(scores), drops, report)
        _plot_pr_curves(scores["onnx_fp32"], work / "export" / "pr_curve_onnx_fp32.png")
        run.artifact(report, "evaluation")
        run.artifact(work / "export" / "pr_curve_onnx_fp32.png", "evaluation")
        check_int8_gate(drops, config.export.int8_max_map50_drop)
        versions = _register(config, run, build, dict(artifacts), dict(scores), drops)
        return {
            "run_id": run.run_id,
            "best_weights": str(trained.best),
            "artifacts": {k: str(v) for k, v in artifacts.items()},
            "sha256": {k: file_sha256(v) for k, v in artifacts.items()},
            "registered": versions,
            **{f"{k}.map50": s.map50 for k, s in scores.items()},
            **drops,
        }
