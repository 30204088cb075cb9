"""Bundles hold exactly the chosen artifacts, read back, and are documented with their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_agent.bundle import ModelFormat, file_sha256, load_bundle, load_metadata, write_metadata
from tests.edge_agent.conftest import SIGNS, SPEEDS, write_tiny_bundle
from tests.training.data.conftest import write_image
from training.bundle import assemble_bundle, real_world_correct, write_model_card
from training.data.shared_sets import RealWorldPhoto
from training.exceptions import TrainingError


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    source = write_tiny_bundle(tmp_path / "exports")
    exports: dict[ModelFormat, Path] = {
        "onnx_int8": source / "detector" / "onnx_int8" / "model.onnx"
    }
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"checkpoint bytes")
    return assemble_bundle(
        tmp_path / "bundle",
        name="roadsign-t",
        version="1",
        detector_exports=exports,
        classifier=source / "classifier" / "classifier.onnx",
        formats=["onnx_int8"],
        training_weights=weights,
    )


def test_bundle_copies_artifacts_and_indexes_them(bundle: Path, tmp_path: Path) -> None:
    index = load_bundle(bundle)
    assert index.detector == {"onnx_int8": "detector/onnx_int8/model.onnx"}
    load_metadata(bundle / index.detector["onnx_int8"])  # checksum holds after the copy
    load_metadata(bundle / index.classifier)
    assert (bundle / "training" / "detector.pt").read_bytes() == b"checkpoint bytes"
    with pytest.raises(TrainingError, match="no openvino_int8 detector export"):
        assemble_bundle(
            tmp_path / "b2",
            name="x",
            version="1",
            detector_exports={},
            classifier=bundle / index.classifier,
        )


def _reads_30_km_h(bundle: Path) -> None:
    """Make the bundle's classifier say "30 km/h, GTSRB class 1" for any photo not all black.

    The tiny classifier is a per-channel mean (never negative) times a weight matrix: weights
    only in those two columns make them win.
    """
    artifact = bundle / load_bundle(bundle).classifier
    model = onnx.load(artifact)
    for weights in model.graph.initializer:
        labels = SIGNS if weights.name == "w_sign" else SPEEDS
        chosen = np.zeros((3, len(labels)), np.float32)
        chosen[:, labels.index("1" if weights.name == "w_sign" else "30")] = 10.0
        weights.CopyFrom(numpy_helper.from_array(chosen, weights.name))
    onnx.save(model, artifact)
    metadata = load_metadata(artifact, verify=False)
    write_metadata(metadata.model_copy(update={"sha256": file_sha256(artifact)}), artifact.parent)


def test_real_world_check_counts_the_photos_read_right_and_the_model_card_shows_them(
    bundle: Path, tmp_path: Path
) -> None:
    _reads_30_km_h(bundle)
    photos = [
        RealWorldPhoto(write_image(tmp_path / "p" / f"{name}.jpg", 100, 80, seed), speed)
        for seed, (name, speed) in enumerate([("30-a", 30), ("50-b", 50), ("30-c", 30)])
    ]
    correct, details = real_world_correct(bundle, photos, backend="onnxruntime", threads=1)
    assert correct == 2  # both 30s; the 50 is read as 30 too
    assert details == [
        {"photo": "30-a.jpg", "speed": 30, "read": 30},
        {"photo": "50-b.jpg", "speed": 50, "read": 30},
        {"photo": "30-c.jpg", "speed": 30, "read": 30},
    ]
    metrics = {
        "gtsrb_test32_top1": 0.98,
        "gtsdb_realworld_correct": correct,
        "gtsdb_realworld_total": 3,
        "gtsdb_realworld_readings": {"onnxruntime": details},
    }
    card = write_model_card(
        bundle,
        metrics,
        detector={"int8_map50_drop_onnx": 0.4},
        command="roadsign-train pipeline",
        runs={"detector": "r1"},
    )
    text = card.read_text()
    assert "98.0%" in text
    assert "| 30-a.jpg | 30 | 30.0 |" in text
    assert "| 50-b.jpg | 50 | 30.0 |" in text
    assert "| 2 of 3 |" in text
    assert "roadsign-train pipeline" in text
    recorded = json.loads((bundle / "metrics.json").read_text())
    assert recorded["gtsrb_test32_top1"] == 0.98
    assert recorded["int8_map50_drop_onnx"] == 0.4
    assert "gtsdb_realworld_readings" not in recorded
