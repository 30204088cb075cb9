"""Training the YOLOv8 detector with ultralytics, offline, resumable, with per-epoch metrics.

The model is built from its YAML (``pretrained=False``: no weights are downloaded, ever), or
starts from `init_weights`, a checkpoint of ours, with a fresh schedule (continuing a finished
run, e.g. the shipped bundle's ``training/detector.pt``), or with no epochs is `init_weights`
unchanged (to export it again). Ultralytics' trainer keeps ``last.pt``
after every epoch; ``resume`` continues an interrupted run from it. Each
epoch's losses and validation metrics go to `log_metrics` (MLflow in the stage). Ultralytics
unpickles a checkpoint it starts from without restriction, so each one is first read here
weights-only (`training.checkpoints`): one that would run code is refused before ultralytics
sees it.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.checkpoints import load_checkpoint
from training.config import DetectorTrainingConfig
from training.detector.offline import disable_integrations, prepare_ultralytics
from training.exceptions import TrainingError

MetricsSink = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class TrainedDetector:
    """Weights of a finished training run."""

    best: Path
    last: Path
    run_dir: Path


def _metric_name(key: str) -> str:
    # "metrics/mAP50(B)" -> "val_mAP50"; "train/box_loss" -> "train_box_loss"
    key = re.sub(r"\(B\)$", "", key.replace("metrics/", "val_"))
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key.replace("/", "_"))


def _device(choice: str) -> str:
    if choice != "auto":
        return "0" if choice == "cuda" else "cpu"
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    """The dict ultralytics saved in a checkpoint, read weights-only (its network as stand-ins)."""
    return load_checkpoint(checkpoint, networks=True)


def _finished(checkpoint: Path) -> bool:
    """Whether ultralytics marked the run done (it strips the optimiser and sets epoch -1)."""
    return int(_checkpoint_state(checkpoint).get("epoch", -1)) == -1


def checkpoint_train_args(checkpoint: Path) -> dict[str, Any]:
    """The training arguments ultralytics stored in a checkpoint (epochs, pretrained...)."""
    return dict(_checkpoint_state(checkpoint).get("train_args") or {})


def train_detector(
    data_yaml: Path,
    config: DetectorTrainingConfig,
    out_dir: Path,
    *,
    seed: int,
    resume: bool = False,
    log_metrics: MetricsSink | None = None,
) -> TrainedDetector:
    """Train (or resume) into ``out_dir/train``; ultralytics' ``best.pt`` and ``last.pt``."""
    run_dir = out_dir / "train"
    last, best = run_dir / "weights" / "last.pt", run_dir / "weights" / "best.pt"
    resuming = resume and last.is_file()
    # Both reads refuse a checkpoint that would run code, before ultralytics loads it.
    if config.init_weights is not None:
        _checkpoint_state(config.init_weights)
    finished = resuming and _finished(last)
    if config.epochs == 0:
        if config.init_weights is None:
            raise TrainingError("detector.epochs 0 exports init_weights, and none is set")
        # Nothing to train: the checkpoint is the result, where a trained one would be.
        best.parent.mkdir(parents=True, exist_ok=True)
        for target in (best, last):
            shutil.copyfile(config.init_weights, target)
        return TrainedDetector(best, last, run_dir)
    prepare_ultralytics(out_dir / ".ultralytics")
    import torch
    from ultralytics import YOLO

    disable_integrations(out_dir)

    if finished and best.is_file():
        return TrainedDetector(best, last, run_dir)
    start = config.init_weights or config.architecture
    model = YOLO(str(last) if resuming else str(start), task="detect")

    def on_fit_epoch_end(trainer: Any) -> None:
        # Ultralytics pins torch to (cores - 1) threads on the CPU; keep the configured count.
        torch.set_num_threads(config.threads)
        values = {
            **trainer.label_loss_items(trainer.tloss, prefix="train"),
            **trainer.metrics,
        }
        metrics = {_metric_name(k): float(v) for k, v in values.items()}
        metrics["lr"] = float(trainer.optimizer.param_groups[0]["lr"])
        sys.stderr.write(
            f"detector epoch {trainer.epoch + 1}/{trainer.epochs}: "
            f"box {metrics.get('train_box_loss', 0):.3f} "
            f"cls {metrics.get('train_cls_loss', 0):.3f} "
            f"val mAP50 {metrics.get('val_mAP50', 0):.4f} mAP50-95 "
            f"{metrics.get('val_mAP50-95', 0):.4f}\n"
        )
        if log_metrics is not None:
            log_metrics(metrics, int(trainer.epoch))

    def on_train_start(trainer: Any) -> None:
        torch.set_num_threads(config.threads)

    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    model.add_callback("on_train_start", on_train_start)
    try:
        if resuming:
            model.train(resume=True)
        else:
            model.train(
                data=str(data_yaml),
                epochs=config.epochs,
                imgsz=config.imgsz,
                batch=config.batch,
                device=_device(config.device),
                workers=config.workers,
                patience=config.patience,
                project=str(out_dir.resolve()),
                name="train",
                exist_ok=True,
                # Ultralytics drops a loaded checkpoint's weights unless told to keep them.
                pretrained=str(config.init_weights) if config.init_weights else False,
                seed=seed,
                deterministic=True,
                plots=False,
                amp=False,
                cache=config.cache,
                close_mosaic=min(10, max(config.epochs // 5, 0)),
                warmup_epochs=config.warmup_epochs,
                verbose=False,
            )
    except (RuntimeError, ValueError, FileNotFoundError) as e:
        raise TrainingError(f"detector training failed: {e}") from e
    if not best.is_file():
        raise TrainingError(f"detector training left no {best}")
    return TrainedDetector(best, last, run_dir)
