"""The classifier stage end to end on the real sets (smoke size): tracked run, artifact, scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.bundle import file_sha256, load_metadata
from tests.conftest import REPO_ROOT, SHARED_DATA
from training.cli import main


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_smoke_classifier_stage_is_tracked_with_its_artifact_and_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__OUT_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__CACHE_DIR", str(REPO_ROOT / ".cache" / "data"))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__SHARED_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("ROADSIGN_TRAIN__MLFLOW__TRACKING_URI", store)
    monkeypatch.setenv("ROADSIGN_TRAIN__MLFLOW__EXPERIMENT", "stage-test")
    config = str(REPO_ROOT / "training" / "configs" / "smoke.yaml")
    assert main(["classifier", "--config", config]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("gtsrb_test32_top1", "gtsdb_speed_crops_exact", "tt100k_speed_crops_exact"):
        assert 0 <= summary[key] <= 1

    client = mlflow.MlflowClient(store)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["gtsrb_test32_top1"] == pytest.approx(summary["gtsrb_test32_top1"])
    assert "val_sign_top1" in run.data.metrics
    assert len(run.data.tags["git_sha"]) >= 40
    assert run.data.tags["manifest.gtsrb_test/test"]
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "classifier")}
    assert "classifier/classifier.onnx" in logged
    artifact = Path(summary["artifact"])
    assert load_metadata(artifact).sha256 == file_sha256(artifact)
    assert load_metadata(artifact).source_run_id == run.info.run_id
