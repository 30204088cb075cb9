"""Bundles hold exactly the chosen artifacts, read back, and are documented with their numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_agent.bundle import ModelFormat, file_sha256, load_bundle, load_metadata, write_metadata
from tests.conftest import REPO_ROOT
from tests.edge_agent.conftest import SIGNS, SPEEDS, write_tiny_bundle
from tests.training.data.conftest import write_gtsdb_archive, write_image
from training.bundle import (
    SCENES_PR_CURVE,
    assemble_bundle,
    measure_scenes,
    real_world_correct,
    scene_metric_values,
    write_model_card,
)
from training.cli import main
from training.data.shared_sets import RealWorldPhoto, ensure_unpacked
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


# A 120x100 scene is read whole under a default profile's tiling (shorter than two 64 px tiles);
# the tiny bundle's constant detection on it is (15, 35, 45, 65): this sign, in the original
# 1360x800 pixels of a scene resized to 120x100, lies on it.
UNDER_THE_DETECTION = (170, 280, 510, 520, 2)


def test_the_bundle_is_scored_on_the_evaluation_scenes_and_the_card_and_metrics_show_it(
    bundle: Path, tmp_path: Path
) -> None:
    # Scene 0 is a training scene with a sign nothing finds: scoring it would lower recall.
    signs = {0: [(800, 100, 900, 200, 2)], 600: [UNDER_THE_DETECTION]}
    write_gtsdb_archive(tmp_path / "shared", signs, backgrounds=(601,), size=(120, 100))
    root = ensure_unpacked(tmp_path / "shared", "gtsdb_scenes", tmp_path / "cache")
    scenes = measure_scenes(bundle, root, threads=1)
    assert (scenes["backend"], scenes["scenes"], scenes["pr_curve_png"]) == (
        "onnxruntime",
        2,
        SCENES_PR_CURVE,
    )
    everything = scenes["all_signs"]
    assert isinstance(everything, dict)
    # Found on scene 600; the same constant box on the sign-free 601 is a false detection.
    assert (everything["recall"], everything["precision"]) == (1.0, 0.5)
    assert sum(row["signs"] for row in everything["recall_by_size"].values()) == 1
    per_category = scenes["per_category"]
    assert isinstance(per_category, dict)
    assert set(per_category) == {"prohibitory"}
    assert isinstance(scenes["tiling"], dict)
    assert (bundle / SCENES_PR_CURVE).read_bytes().startswith(b"\x89PNG")
    logged = scene_metric_values(scenes)
    assert logged["gtsdb_scenes.all_signs.recall"] == 1.0
    assert logged["gtsdb_scenes.all_signs.precision"] == 0.5
    assert all(key.startswith("gtsdb_scenes.") for key in logged)
    # A limit scores the first evaluation scenes only: 600 without the sign-free 601.
    first = measure_scenes(bundle, root, threads=1, limit=1)
    first_signs = first["all_signs"]
    assert isinstance(first_signs, dict)
    assert (first["scenes"], first_signs["precision"]) == (1, 1.0)

    metrics = {"gtsdb_realworld_readings": {}, "gtsdb_scenes": scenes}
    card = write_model_card(
        bundle, metrics, detector={}, command="roadsign-train bundle", runs={"detector": "r1"}
    )
    text = card.read_text()
    assert "## GTSDB evaluation scenes (00600-00899)" in text
    assert "| metric | onnxruntime |" in text
    assert "| all signs, recall | 1.000 |" in text
    assert "| all signs, precision | 0.500 |" in text
    assert json.loads((bundle / "metrics.json").read_text())["gtsdb_scenes"] == scenes


def test_a_new_bundle_drops_an_earlier_scene_pr_curve(bundle: Path, tmp_path: Path) -> None:
    (bundle / SCENES_PR_CURVE).write_bytes(b"an earlier detector's curve")
    index = load_bundle(bundle)
    assemble_bundle(
        bundle,
        name="roadsign-t",
        version="2",
        detector_exports={"onnx_int8": tmp_path / "exports" / index.detector["onnx_int8"]},
        classifier=tmp_path / "exports" / index.classifier,
        formats=["onnx_int8"],
    )
    assert not (bundle / SCENES_PR_CURVE).exists()


def test_a_shipped_bundle_is_scored_again_in_place_keeping_its_other_numbers(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_model_card(
        bundle,
        {"gtsrb_test32_top1": 0.98, "gtsdb_realworld_readings": {}},
        detector={},
        command="roadsign-train bundle",
        runs={"detector": "r1"},
    )
    write_gtsdb_archive(tmp_path / "shared", {600: [UNDER_THE_DETECTION]}, size=(120, 100))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__SHARED_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__CACHE_DIR", str(tmp_path / "cache"))
    config = str(REPO_ROOT / "training" / "configs" / "smoke.yaml")
    command = ["evaluate-scenes", "--config", config, "--bundle", str(bundle), "--into-bundle"]
    # Twice: the second run replaces the first one's section instead of adding another.
    for _ in range(2):
        assert main(command) == 0
        printed = json.loads(capsys.readouterr().out)
    recorded = json.loads((bundle / "metrics.json").read_text())
    assert recorded["gtsrb_test32_top1"] == 0.98
    assert recorded["runs"] == {"detector": "r1"}
    assert recorded["gtsdb_scenes"] == printed
    assert printed["all_signs"]["recall"] == 1.0
    card = (bundle / "model_card.md").read_text()
    assert card.count("## GTSDB evaluation scenes") == 1
    assert card.index("## GTSDB evaluation scenes") < card.index("## Data")
    assert "| all signs, recall | 1.000 |" in card
    assert "98.0%" in card
    assert main([*command, "--no-tiles"]) == 1
    assert "--into-bundle scores as the bundle stage does" in capsys.readouterr().err
