"""The smoke pipeline on the real sets: every stage, tracked and registered, then the bundle.

Checks what the project promises of a training run: the MLflow runs exist with their metrics
and manifests, each export is registered with the candidate alias and lineage, the registered
sha256 equal the exported bytes, the bundle is measured and documented, and promotion works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.bundle import file_sha256, load_bundle, load_metadata
from edge_agent.golden import check_golden
from edge_agent.reading.signs import load_reader
from tests.conftest import REPO_ROOT, SHARED_DATA
from training.cli import main
from training.registry import CANDIDATE, CHAMPION, get_version

SMOKE = str(REPO_ROOT / "training" / "configs" / "smoke.yaml")


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_smoke_pipeline_tracks_registers_and_bundles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for key, value in {
        "DATA__OUT_DIR": str(tmp_path / "datasets"),
        "DATA__CACHE_DIR": str(REPO_ROOT / ".cache" / "data"),
        "DATA__SHARED_DATA_DIR": str(SHARED_DATA),
        "MLFLOW__EXPERIMENT": "pipeline-test",
    }.items():
        monkeypatch.setenv(f"ROADSIGN_TRAIN__{key}", value)
    bundle = tmp_path / "bundle"
    args = ["--config", SMOKE, "--tracking-uri", store]
    assert main(["pipeline", *args, "--out", str(bundle)]) == 0
    summary = json.loads(capsys.readouterr().out)
    client = mlflow.MlflowClient(store)

    classifier_run = client.get_run(summary["classifier"]["run_id"])
    assert classifier_run.info.status == "FINISHED"
    assert {"val_sign_top1", "gtsrb_test32_top1"} <= set(classifier_run.data.metrics)
    assert len(classifier_run.data.tags["git_sha"]) >= 40

    detector = summary["detector"]
    run = client.get_run(detector["run_id"])
    assert run.info.status == "FINISHED"
    for key in (
        "train_box_loss",
        "val_mAP50",
        "onnx_fp32.map50",
        "int8_map50_drop_onnx",
        "int8_map50_drop_openvino",
    ):
        assert key in run.data.metrics, key
    assert run.data.tags["manifest.tt100k/test"]
    for model_format, artifact in detector["artifacts"].items():
        name, version = detector["registered"][model_format].split("/")
        registered = get_version(store, name, CANDIDATE)
        assert registered.version == version
        metadata = load_metadata(Path(artifact))
        assert registered.tags["sha256"] == file_sha256(Path(artifact)) == metadata.sha256
        assert (registered.tags["run_id"], registered.tags["format"]) == (
            run.info.run_id,
            model_format,
        )
        for companion, digest in metadata.companions.items():
            assert registered.tags[f"sha256.{companion}"] == digest
        logged = {f.path for f in client.list_artifacts(run.info.run_id, f"models/{model_format}")}
        assert f"models/{model_format}/{Path(artifact).name}" in logged

    index = load_bundle(bundle)
    assert set(index.detector) == {"openvino_int8", "onnx_int8"}
    metrics = json.loads((bundle / "metrics.json").read_text())
    for key in (
        "gtsrb_test32_top1",
        "gtsdb_speed_crops_exact",
        "tt100k_speed_crops_exact",
        "gtsdb_realworld_correct",
        "int8_map50_drop_onnx",
        "int8_map50_drop_openvino",
    ):
        assert key in metrics, key
    card = (bundle / "model_card.md").read_text()
    assert "roadsign-train pipeline" in card
    # The bundle is scored on the first GTSDB evaluation scenes (the smoke config's limit) with
    # both INT8 runtimes; the numbers and the PR curve go to the detector's run.
    scenes = metrics["gtsdb_scenes"]
    assert (scenes["scenes"], scenes["backend"]) == (2, "openvino")
    assert set(scenes["by_backend"]) == {"openvino", "onnxruntime"}
    for key in ("recall", "precision", "class_top1", "recall_by_size"):
        assert key in scenes["all_signs"], key
    for key in ("recall", "precision", "value_exact", "recall_by_size"):
        assert key in scenes["speed_limit"], key
    assert set(scenes["all_signs"]["recall_by_size"]) == {"<20", "20-40", "40-80", ">=80"}
    assert scenes["tiling"]["enabled"] is True
    assert "## GTSDB evaluation scenes (00600-00899)" in card
    assert (bundle / scenes["pr_curve_png"]).read_bytes().startswith(b"\x89PNG")
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "gtsdb_scenes")}
    assert f"gtsdb_scenes/{scenes['pr_curve_png']}" in logged
    detector_metrics = client.get_run(run.info.run_id).data.metrics
    assert detector_metrics["gtsdb_scenes.all_signs.recall"] == scenes["all_signs"]["recall"]
    assert "gtsdb_scenes.onnxruntime.all_signs.recall" in detector_metrics
    # The export records the bundle's golden set, and the bundle passes it on both runtimes.
    assert summary["bundle"]["golden_images"] == 6
    for backend in ("openvino", "onnxruntime"):
        golden = check_golden(load_reader(bundle, backend=backend), bundle)
        assert golden.passed, golden.detail

    assert main(["promote", *args, "--format", "onnx_int8", "--min", "map50=0"]) == 0
    promoted = json.loads(capsys.readouterr().out)["promoted"]
    name, version = promoted.split("/")
    assert get_version(store, name, CHAMPION).version == version
    assert main(["promote", *args, "--format", "onnx_int8", "--min", "map50=1.01"]) == 1
    assert "not promoted" in capsys.readouterr().err

    # Resuming finished stages trains nothing again.
    assert main(["detector", *args, "--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["best_weights"] == detector["best_weights"]
