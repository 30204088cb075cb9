"""The crop classifier turns model outputs into sign and speed readings with confidences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_agent.bundle import ModelMetadata
from edge_agent.exceptions import ModelError
from edge_agent.reading.classifier import CropClassifier
from edge_agent.reading.crops import to_batch
from tests.edge_agent.conftest import SIGNS, SPEEDS, tiny_classifier_bundle


class FixedModel:
    """A stand-in for a loaded model that returns preset logits (our own interface)."""

    def __init__(self, sign: np.ndarray, speed: np.ndarray) -> None:
        self.sign, self.speed = sign, speed
        self.batches: list[tuple[int, ...]] = []

    @property
    def output_names(self) -> list[str]:
        return ["sign", "speed"]

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.batches.append(batch.shape)
        n = len(batch)
        return {"sign": self.sign[:n], "speed": self.speed[:n]}


def _metadata(**changes: object) -> ModelMetadata:
    fields = {
        "name": "m",
        "version": "1",
        "task": "classifier",
        "format": "onnx_fp32",
        "artifact": "m.onnx",
        "sha256": "0" * 64,
        "input_size": 8,
        "outputs": {"sign": SIGNS, "speed": SPEEDS},
    }
    return ModelMetadata.model_validate({**fields, **changes})


def test_logits_become_labels_values_and_confidences() -> None:
    sign = np.full((2, len(SIGNS)), -10.0)
    sign[0, 14], sign[1, 43] = 10.0, 10.0
    speed = np.full((2, len(SPEEDS)), -10.0)
    speed[0, 0], speed[1, 2] = 10.0, 3.0
    classifier = CropClassifier(FixedModel(sign, speed), _metadata())
    stop, other = classifier.classify([np.zeros((8, 8, 3), np.uint8)] * 2)
    assert (stop.sign_label, stop.gtsrb_id, stop.speed_value) == ("14", 14, None)
    assert stop.sign_confidence == pytest.approx(1.0)
    assert (other.sign_label, other.gtsrb_id, other.speed_value) == ("other", None, 50)
    assert 0.9 < other.speed_confidence < 1.0


def test_crops_are_sent_in_batches() -> None:
    model = FixedModel(np.zeros((4, len(SIGNS))), np.zeros((4, len(SPEEDS))))
    readings = CropClassifier(model, _metadata()).classify(
        [np.zeros((8, 8, 3), np.uint8)] * 7, batch_size=4
    )
    assert len(readings) == 7
    assert model.batches == [(4, 3, 8, 8), (3, 3, 8, 8)]


def test_a_detector_or_a_model_without_both_heads_is_refused() -> None:
    model = FixedModel(np.zeros((1, 44)), np.zeros((1, 3)))
    with pytest.raises(ModelError, match="is a detector"):
        CropClassifier(model, _metadata(task="detector"))
    with pytest.raises(ModelError, match="lacks the outputs"):
        CropClassifier(model, _metadata(outputs={"sign": SIGNS}))


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_real_artifact_loads_verified_and_reads_crops(tmp_path: Path, backend: str) -> None:
    artifact = tiny_classifier_bundle(tmp_path)
    classifier = CropClassifier.load(artifact, backend=backend)
    frame = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    crop = classifier.crop(frame, (10, 10, 40, 50))
    assert crop.shape == (8, 8, 3)
    [reading] = classifier.classify([crop])
    # The tiny model is a mean per channel times a weight matrix: work its answer out here.
    weights = {w.name: numpy_helper.to_array(w) for w in onnx.load(artifact).graph.initializer}
    logits = to_batch([crop], classifier.metadata.scale).mean(axis=(2, 3)) @ weights["w_sign"]
    chances = np.exp(logits[0] - logits[0].max()) / np.exp(logits[0] - logits[0].max()).sum()
    assert reading.sign_label == SIGNS[int(chances.argmax())]
    assert reading.sign_confidence == pytest.approx(float(chances.max()), rel=1e-4)
