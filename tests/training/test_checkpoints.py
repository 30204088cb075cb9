"""Checkpoints are read weights-only: one whose pickle would run code is refused, never run."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from training.checkpoints import load_checkpoint
from training.classifier.dataset import rendered_crops
from training.classifier.train import train_classifier
from training.config import ClassifierTrainingConfig, DetectorTrainingConfig
from training.detector.offline import prepare_ultralytics
from training.detector.train import checkpoint_train_args, train_detector
from training.exceptions import CheckpointError

SHIPPED = REPO_ROOT / "models" / "default" / "training" / "detector.pt"


def _ran(marker: str) -> None:
    """What a malicious checkpoint would do on load; here it only leaves a mark."""
    Path(marker).write_text("ran")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return _ran, (str(self.marker),)


def _malicious(path: Path, payload: object) -> Path:
    """A checkpoint shaped like ours whose `model` entry is `payload`."""
    import torch

    torch.save({"epoch": -1, "train_args": {}, "model": payload}, path)
    return path


def _read_train_args(checkpoint: Path, tmp_path: Path) -> None:
    checkpoint_train_args(checkpoint)


def _export_again(checkpoint: Path, tmp_path: Path) -> None:
    config = DetectorTrainingConfig(epochs=0, init_weights=checkpoint)
    train_detector(tmp_path / "data.yaml", config, tmp_path / "run", seed=0)


def _resume_classifier(checkpoint: Path, tmp_path: Path) -> None:
    crops = rendered_crops(8, np.random.default_rng(0))
    (tmp_path / "classifier").mkdir()
    checkpoint.rename(tmp_path / "classifier" / "last.pt")
    config = ClassifierTrainingConfig(input_size=24, width=8, epochs=1, batch=8, threads=1)
    train_classifier(crops, crops, config, tmp_path / "classifier", seed=0, resume=True)


@pytest.mark.parametrize(
    "load", [_read_train_args, _export_again, _resume_classifier], ids=lambda f: f.__name__
)
def test_a_checkpoint_whose_pickle_would_run_code_is_refused_unrun(
    tmp_path: Path, load: Callable[[Path, Path], None]
) -> None:
    marker = tmp_path / "ran"
    checkpoint = _malicious(tmp_path / "evil.pt", _Payload(marker))
    with pytest.raises(CheckpointError, match=r"names tests\.training\.test_checkpoints\._ran"):
        load(checkpoint, tmp_path)
    assert not marker.exists()
    assert not (tmp_path / "run" / "train" / "weights" / "best.pt").exists()


def test_a_checkpoint_that_calls_a_network_class_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A class where network modules live, *called* with arguments as a payload would call a
    # constructor; a saved module is restored without a call.
    module = types.ModuleType("torch.nn.modules.roadsign_probe")

    class Probe:
        def __init__(self, marker: str) -> None:
            _ran(marker)

    Probe.__module__, Probe.__qualname__ = module.__name__, "Probe"
    module.Probe = Probe  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)

    class Calls:
        def __reduce__(self) -> tuple[type, tuple[str]]:
            return Probe, (str(tmp_path / "ran"),)

    checkpoint = _malicious(tmp_path / "evil.pt", Calls())
    with pytest.raises(CheckpointError, match="calls a network class"):
        load_checkpoint(checkpoint, networks=True)
    assert not (tmp_path / "ran").exists()


@pytest.mark.skipif(not SHIPPED.is_file(), reason="models/default has no training checkpoint")
def test_the_shipped_detector_checkpoint_reads_weights_only() -> None:
    state = load_checkpoint(SHIPPED, networks=True)
    assert state["epoch"] == -1  # a finished run, to continue with a fresh schedule
    assert checkpoint_train_args(SHIPPED)["epochs"] == state["train_args"]["epochs"] > 0
    with pytest.raises(CheckpointError, match=r"ultralytics\.nn\.tasks\.DetectionModel"):
        load_checkpoint(SHIPPED)  # its network is read only when asked for


def test_an_unfinished_detector_run_reads_weights_only_to_resume(tmp_path: Path) -> None:
    import torch

    prepare_ultralytics(tmp_path / ".ultralytics")
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import IterableSimpleNamespace

    # What ultralytics saves after each epoch of a run: the network keeps its settings.
    network = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    network.args = IterableSimpleNamespace(imgsz=64, epochs=3)
    optimiser = torch.optim.SGD(network.parameters(), lr=0.01)
    last = tmp_path / "last.pt"
    torch.save(
        {"epoch": 0, "ema": network, "optimizer": optimiser.state_dict(), "train_args": {}}, last
    )
    state = load_checkpoint(last, networks=True)
    assert state["epoch"] == 0
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.01
