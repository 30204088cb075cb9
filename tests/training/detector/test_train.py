"""Detector training: a run started from a checkpoint really starts from its weights."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from training.config import DetectorTrainingConfig
from training.detector.train import checkpoint_train_args, train_detector

SIZE = 64


def _dataset(root: Path) -> Path:
    """Four scenes with one red ring each, in YOLO layout."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(4):
            image = np.full((SIZE, SIZE, 3), 90 + 20 * i, np.uint8)
            cv2.circle(image, (20 + 6 * i, 30), 12, (30, 30, 220), 4)
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), image)
            label = f"0 {(20 + 6 * i) / SIZE:.4f} {30 / SIZE:.4f} {26 / SIZE:.4f} {26 / SIZE:.4f}\n"
            (root / "labels" / split / f"{i}.txt").write_text(label)
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: ring\n")
    return data


def _conv_weights(model: object) -> np.ndarray:
    # Convolution kernels only: BatchNorm scales start at 1 and the DFL kernel is a fixed ramp,
    # both alike in any two models.
    named = model.named_parameters()  # type: ignore[attr-defined]
    return np.concatenate(
        [p.detach().float().numpy().ravel() for n, p in named if p.ndim == 4 and "dfl" not in n]
    )


def _weights(checkpoint: Path) -> np.ndarray:
    import torch

    return _conv_weights(torch.load(checkpoint, map_location="cpu", weights_only=False)["model"])


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.slow
def test_init_weights_start_training_from_the_checkpoint_not_from_scratch(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    settings = {
        "architecture": "yolov8n.yaml",
        "imgsz": SIZE,
        "epochs": 1,
        "batch": 4,
        "device": "cpu",
        "workers": 0,
        "threads": 1,
    }
    first = train_detector(data, DetectorTrainingConfig(**settings), tmp_path / "a", seed=0)
    continued = train_detector(
        data,
        DetectorTrainingConfig(**settings, init_weights=first.best, warmup_epochs=0),
        tmp_path / "c",
        seed=1,
    )
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(1)
    fresh = _conv_weights(DetectionModel("yolov8n.yaml", nc=1, verbose=False))
    start = _weights(first.best)
    # A fresh model shares nothing with the trained one; a continued run stays next to it.
    assert _similarity(start, fresh) < 0.5
    assert _similarity(start, _weights(continued.best)) > 0.95
    # No epochs: the checkpoint itself is the result, to be exported again.
    again = train_detector(
        data,
        DetectorTrainingConfig(**{**settings, "epochs": 0}, init_weights=first.best),
        tmp_path / "e",
        seed=0,
    )
    assert again.best.read_bytes() == first.best.read_bytes()
    # What the bundle's model card tells of a re-exported checkpoint: how it was trained.
    trained_with = checkpoint_train_args(continued.best)
    assert trained_with["pretrained"] == str(first.best)
    assert (trained_with["epochs"], trained_with["warmup_epochs"]) == (1, 0)
    assert checkpoint_train_args(first.best)["pretrained"] is False


def test_no_epochs_without_a_checkpoint_is_refused() -> None:
    with pytest.raises(ValueError, match="epochs 0 exports init_weights"):
        DetectorTrainingConfig(epochs=0)
