"""Bundles hold exactly the chosen artifacts, read back, and are documented with their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.bundle import ModelFormat, load_bundle, load_metadata
from tests.edge_agent.conftest import write_tiny_bundle
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


def test_real_world_check_and_model_card(bundle: Path, tmp_path: Path) -> None:
    photos = [RealWorldPhoto(write_image(tmp_path / "p" / "30-a.jpg", 100, 80), 30)]
    correct, details = real_world_correct(bundle, photos, backend="onnxruntime", threads=1)
    assert correct in (0, 1)
    assert details[0]["photo"] == "30-a.jpg"
    metrics = {
        "gtsrb_test32_top1": 0.98,
        "gtsdb_realworld_correct": correct,
        "gtsdb_realworld_total": 1,
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
    assert "| 30-a.jpg | 30 |" in text
    assert "roadsign-train pipeline" in text
    recorded = json.loads((bundle / "metrics.json").read_text())
    assert recorded["gtsrb_test32_top1"] == 0.98
    assert recorded["int8_map50_drop_onnx"] == 0.4
    assert "gtsdb_realworld_readings" not in recorded
