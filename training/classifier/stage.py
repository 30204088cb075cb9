"""The classifier stage: crops from the data stage, training, ONNX export and evaluation, tracked.

One MLflow run holds it all: parameters, the dataset manifests, per-epoch metrics, the exported
artifact with its sidecar, and the held-out scores measured with the edge agent's runtime.
"""

from __future__ import annotations

import json

import numpy as np

from training.classifier.dataset import CropSet, real_crops, rendered_crops
from training.classifier.evaluate import evaluate_classifier
from training.classifier.export import export_onnx
from training.classifier.labels import SIGN_LABELS
from training.classifier.train import load_trained, train_classifier
from training.config import TrainingConfig
from training.data.build import DatasetBuild
from training.tracking import tracked_run

TRAIN_SETS = ("gtsrb/train", "tt100k/train", "us/train")
VAL_SETS = ("gtsrb/val", "tt100k/val", "us/val")


def _crops(
    build: DatasetBuild, keys: tuple[str, ...], cap: int | None, rng: np.random.Generator
) -> CropSet:
    return CropSet.concat([real_crops(build.parts[k], rng, max_images=cap) for k in keys])


def run_classifier_stage(
    config: TrainingConfig, build: DatasetBuild, *, resume: bool = False
) -> dict[str, object]:
    """Train, export and score the classifier; return the summary the CLI prints."""
    settings = config.classifier
    rng = np.random.default_rng(config.data.seed)
    backgrounds = [r.path for r in build.parts["tt100k/train"] if not r.boxes]
    train = CropSet.concat(
        [
            _crops(build, TRAIN_SETS, settings.max_train_images, rng),
            rendered_crops(settings.rendered_faces, rng, backgrounds),
        ]
    )
    val = _crops(build, VAL_SETS, settings.max_val_images, rng)
    work = build.out_dir / "classifier"
    with tracked_run(
        config.mlflow.tracking_uri,
        config.mlflow.experiment,
        f"{config.name}-classifier",
        {"stage": "classifier"},
    ) as run:
        run.params({f"classifier.{k}": v for k, v in settings.model_dump().items()})
        run.params(
            {"data.seed": config.data.seed, "train_crops": len(train), "val_crops": len(val)}
        )
        run.manifests(build.manifests)
        trained = train_classifier(
            train,
            val,
            settings,
            work / "weights",
            seed=config.data.seed,
            resume=resume,
            log_metrics=lambda metrics, epoch: run.metrics(metrics, step=epoch),
        )
        artifact = export_onnx(
            load_trained(trained.best, settings),
            work / "export",
            input_size=settings.input_size,
            crop_margin=settings.crop_margin,
            version=f"{config.name}-{run.run_id[:8]}",
            run_id=run.run_id,
        )
        scores = evaluate_classifier(
            artifact, build.parts, backend=settings.eval_backend, threads=settings.threads
        )
        run.metrics(scores.metrics)
        report = work / "export" / "classifier_metrics.json"
        report.write_text(
            json.dumps(
                {"best_epoch": trained.best_epoch, **trained.metrics, **scores.metrics}, indent=2
            )
            + "\n"
        )
        confusion = work / "export" / "confusion_gtsrb_test.csv"
        header = "true\\pred," + ",".join(SIGN_LABELS)
        rows = [f"{i}," + ",".join(str(v) for v in row) for i, row in enumerate(scores.confusion)]
        confusion.write_text("\n".join([header, *rows]) + "\n")
        for path in (artifact, artifact.with_suffix(".json"), report, confusion):
            run.artifact(path, "classifier")
        return {
            "run_id": run.run_id,
            "artifact": str(artifact),
            "best_epoch": trained.best_epoch,
            **scores.metrics,
        }
