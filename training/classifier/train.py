"""Training the crop classifier with torch on the CPU: resumable, with progress and metrics.

Each epoch draws class-balanced samples of the stored crops, makes a fresh augmented view of
each, and optimises both heads. After each epoch the model is scored on the validation crops
(seen at the deployed margin), the epoch is checkpointed (``last.pt``, resumable), and the best
epoch so far is kept (``best.pt``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from training.checkpoints import load_checkpoint
from training.classifier.dataset import CropSet, class_balance_weights, views
from training.classifier.labels import SIGN_LABELS, SPEED_LABELS
from training.classifier.model import SignClassifier
from training.config import ClassifierTrainingConfig
from training.exceptions import TrainingError

MetricsSink = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class TrainedClassifier:
    """Where the trained weights are and how good the best epoch was."""

    best: Path
    last: Path
    best_epoch: int
    metrics: dict[str, float]


def _to_tensor(batch: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255)


def evaluate_crops(
    model: SignClassifier, crops: CropSet, size: int, rng: np.random.Generator
) -> dict[str, float]:
    """Sign top-1, and speed exactness on crops that carry a speed, at the deployed margin."""
    model.eval()
    signs, speeds = [], []
    with torch.no_grad():
        for start in range(0, len(crops), 512):
            batch = views(crops.images[start : start + 512], size, rng, train=False)
            sign, speed = model(_to_tensor(batch))
            signs.append(sign.argmax(1).numpy())
            speeds.append(speed.argmax(1).numpy())
    sign_pred, speed_pred = np.concatenate(signs), np.concatenate(speeds)
    has_speed = crops.speed > 0
    return {
        "sign_top1": float((sign_pred == crops.sign).mean()),
        "speed_exact": float((speed_pred[has_speed] == crops.speed[has_speed]).mean())
        if has_speed.any()
        else 0.0,
        "speed_false_positive": float((speed_pred[~has_speed] > 0).mean())
        if (~has_speed).any()
        else 0.0,
    }


def train_classifier(
    train: CropSet,
    val: CropSet,
    config: ClassifierTrainingConfig,
    out_dir: Path,
    *,
    seed: int,
    resume: bool = False,
    log_metrics: MetricsSink | None = None,
) -> TrainedClassifier:
    """Train (or resume) into `out_dir`; return the best checkpoint by validation score."""
    if len(train) == 0 or len(val) == 0:
        raise TrainingError("the classifier needs training and validation crops")
    torch.set_num_threads(config.threads)
    torch.manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    model = SignClassifier(len(SIGN_LABELS), len(SPEED_LABELS), config.width)
    optimiser = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay)
    steps = (len(train) + config.batch - 1) // config.batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, config.lr, total_steps=config.epochs * steps
    )
    start, best_score, best_epoch, best_metrics = 0, -1.0, -1, {}
    if resume and last.is_file():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        schedule.load_state_dict(state["schedule"])
        start, best_score = state["epoch"] + 1, state["best_score"]
        best_epoch, best_metrics = state["best_epoch"], state["best_metrics"]
    weights = class_balance_weights(train.sign)
    for epoch in range(start, config.epochs):
        rng = np.random.default_rng([seed, epoch])
        model.train()
        began, total_loss = time.monotonic(), 0.0
        order = rng.choice(len(train), len(train), p=weights)
        for step in range(steps):
            index = order[step * config.batch : (step + 1) * config.batch]
            images = _to_tensor(views(train.images[index], config.input_size, rng, train=True))
            sign_logits, speed_logits = model(images)
            loss = F.cross_entropy(
                sign_logits,
                torch.from_numpy(train.sign[index]),
                label_smoothing=config.label_smoothing,
            ) + F.cross_entropy(
                speed_logits,
                torch.from_numpy(train.speed[index]),
                label_smoothing=config.label_smoothing,
            )
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            total_loss += float(loss.detach())
        metrics = {
            f"val_{k}": v
            for k, v in evaluate_crops(
                model, val, config.input_size, np.random.default_rng(0)
            ).items()
        }
        metrics["train_loss"] = total_loss / steps
        metrics["epoch_seconds"] = time.monotonic() - began
        score = metrics["val_sign_top1"] + metrics["val_speed_exact"]
        if score > best_score:
            best_score, best_epoch, best_metrics = score, epoch, metrics
            torch.save(model.state_dict(), best)
        torch.save(
            {
                "model": model.state_dict(),
                "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(),
                "epoch": epoch,
                "best_score": best_score,
                "best_epoch": best_epoch,
                "best_metrics": best_metrics,
            },
            last,
        )
        sys.stderr.write(
            f"classifier epoch {epoch + 1}/{config.epochs}: loss {metrics['train_loss']:.3f} "
            f"val sign {metrics['val_sign_top1']:.4f} speed {metrics['val_speed_exact']:.4f} "
            f"({metrics['epoch_seconds']:.0f}s)\n"
        )
        if log_metrics is not None:
            log_metrics(metrics, epoch)
    if best_epoch < 0:
        raise TrainingError(f"{last} holds a finished run with no best epoch; delete it to retrain")
    return TrainedClassifier(best, last, best_epoch, best_metrics)


def load_trained(weights: Path, config: ClassifierTrainingConfig) -> SignClassifier:
    """The network with the weights of a `best.pt`."""
    model = SignClassifier(len(SIGN_LABELS), len(SPEED_LABELS), config.width)
    model.load_state_dict(load_checkpoint(weights))
    return model.eval()
