"""The smoke detector stage on real data: tracked run, four artifacts registered with lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.bundle import file_sha256, load_metadata
from tests.conftest import REPO_ROOT, SHARED_DATA
from training.cli import main
from training.registry import CANDIDATE, get_version


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_smoke_detector_stage_registers_exactly_the_exported_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for key, value in {
        "DATA__OUT_DIR": str(tmp_path / "datasets"),
        "DATA__CACHE_DIR": str(REPO_ROOT / ".cache" / "data"),
        "DATA__SHARED_DATA_DIR": str(SHARED_DATA),
        "MLFLOW__EXPERIMENT": "detector-stage-test",
    }.items():
        monkeypatch.setenv(f"ROADSIGN_TRAIN__{key}", value)
    config = str(REPO_ROOT / "training" / "configs" / "smoke.yaml")
    assert main(["detector", "--config", config, "--tracking-uri", store]) == 0
    summary = json.loads(capsys.readouterr().out)

    client = mlflow.MlflowClient(store)
    run = client.get_run(summary["run_id"])
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
    for model_format, artifact in summary["artifacts"].items():
        name, version = summary["registered"][model_format].split("/")
        registered = get_version(store, name, CANDIDATE)
        assert registered.version == version
        metadata = load_metadata(Path(artifact))
        assert registered.tags["sha256"] == file_sha256(Path(artifact)) == metadata.sha256
        assert registered.tags["run_id"] == run.info.run_id
        assert registered.tags["format"] == model_format
        for companion, digest in metadata.companions.items():
            assert registered.tags[f"sha256.{companion}"] == digest
        logged = {f.path for f in client.list_artifacts(run.info.run_id, f"models/{model_format}")}
        assert f"models/{model_format}/{Path(artifact).name}" in logged

    # Resuming a finished run trains nothing more and registers new versions of the same model.
    assert main(["detector", "--config", config, "--tracking-uri", store, "--resume"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["best_weights"] == summary["best_weights"]
