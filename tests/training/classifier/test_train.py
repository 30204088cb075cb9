"""Classifier training learns, checkpoints, resumes, exports, and the agent's runtime scores it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import load_metadata
from tests.training.data.conftest import write_gtsrb_training, write_image
from training.classifier.dataset import CropSet, rendered_crops
from training.classifier.evaluate import evaluate_classifier
from training.classifier.export import export_onnx
from training.classifier.train import evaluate_crops, load_trained, train_classifier
from training.config import ClassifierTrainingConfig
from training.data.gtsrb import read_gtsrb_training
from training.data.records import Box, LabeledImage
from training.exceptions import TrainingError

TINY = ClassifierTrainingConfig(input_size=24, width=8, epochs=2, batch=32, threads=1)


@pytest.fixture(scope="module")
def crops() -> tuple[CropSet, CropSet]:
    return rendered_crops(400, np.random.default_rng(0)), rendered_crops(
        100, np.random.default_rng(1)
    )


def test_training_learns_and_keeps_the_best_epoch(
    tmp_path: Path, crops: tuple[CropSet, CropSet]
) -> None:
    train, val = crops
    logged: list[tuple[int, dict[str, float]]] = []
    result = train_classifier(
        train, val, TINY, tmp_path, seed=0, log_metrics=lambda m, e: logged.append((e, m))
    )
    assert result.best.is_file()
    assert result.last.is_file()
    assert [e for e, _ in logged] == [0, 1]
    assert logged[1][1]["train_loss"] < logged[0][1]["train_loss"]
    model = load_trained(result.best, TINY)
    scores = evaluate_crops(model, val, TINY.input_size, np.random.default_rng(0))
    assert scores["sign_top1"] == pytest.approx(result.metrics["val_sign_top1"])


def test_resume_continues_after_the_last_finished_epoch(
    tmp_path: Path, crops: tuple[CropSet, CropSet]
) -> None:
    train, val = crops
    one = TINY.model_copy(update={"epochs": 1})
    train_classifier(train, val, one, tmp_path, seed=0)
    epochs: list[int] = []
    # Same total (1 epoch) and resumed: nothing left to run, the first run's best is kept.
    done = train_classifier(
        train, val, one, tmp_path, seed=0, resume=True, log_metrics=lambda m, e: epochs.append(e)
    )
    assert epochs == []
    assert done.best_epoch == 0


def test_empty_data_is_refused(tmp_path: Path, crops: tuple[CropSet, CropSet]) -> None:
    empty = CropSet(
        np.zeros((0, 64, 64, 3), np.uint8), np.zeros(0, int), np.zeros(0, int), np.zeros(0, str)
    )
    with pytest.raises(TrainingError, match="needs training and validation crops"):
        train_classifier(empty, crops[1], TINY, tmp_path, seed=0)


def test_exported_model_is_scored_by_the_edge_runtime(
    tmp_path: Path, crops: tuple[CropSet, CropSet]
) -> None:
    result = train_classifier(
        crops[0], crops[1], TINY.model_copy(update={"epochs": 1}), tmp_path / "w", seed=0
    )
    artifact = export_onnx(
        load_trained(result.best, TINY),
        tmp_path / "export",
        input_size=24,
        crop_margin=0.1,
        version="t-1",
        run_id="abc",
    )
    metadata = load_metadata(artifact)
    assert (metadata.task, metadata.input_size, metadata.source_run_id) == ("classifier", 24, "abc")
    test = read_gtsrb_training(write_gtsrb_training(tmp_path / "g", {1: 2, 14: 1}))
    crop = write_image(tmp_path / "tt" / "1_0.png", 40, 40)
    speed = [LabeledImage(crop, 40, 40, (Box(0, 0, 40, 40, "pl40", speed_value=40),), "t")]
    by_class = Counter(image.boxes[0].gtsrb_id for image in test)
    assert by_class == {1: 6, 14: 3}  # two tracks of three frames, and one
    scored = {
        backend: evaluate_classifier(
            artifact,
            {"gtsrb_test/test": test, "gtsdb/test": speed, "tt100k/test": speed},
            backend=backend,
            threads=1,
        )
        for backend in ("onnxruntime", "openvino")
    }
    for scores in scored.values():
        # Each test crop counted once, in its true class's row; top-1 is the diagonal's share.
        assert {c: int(scores.confusion[c].sum()) for c in by_class} == by_class
        assert scores.confusion.sum() == len(test)
        correct = scores.confusion[1, 1] + scores.confusion[14, 14]
        assert scores.metrics["gtsrb_test32_top1"] == correct / len(test)
        assert np.isnan(scores.metrics["us_speed_crops_exact"])  # no US crops given
    # Both runtimes a device may carry run the same model: the same answers, crop for crop.
    onnx_scores, openvino_scores = scored["onnxruntime"], scored["openvino"]
    np.testing.assert_array_equal(onnx_scores.confusion, openvino_scores.confusion)
    assert onnx_scores.metrics.keys() == openvino_scores.metrics.keys()
    for name, value in onnx_scores.metrics.items():
        other = openvino_scores.metrics[name]
        assert value == other or (np.isnan(value) and np.isnan(other)), name
