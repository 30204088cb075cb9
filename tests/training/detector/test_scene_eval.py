"""``roadsign-train evaluate-scenes``: a bundle read on the evaluation scenes only, JSON and PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.edge_agent.conftest import write_tiny_bundle
from tests.training.data.conftest import write_gtsdb_archive
from training.cli import main

# The tiny bundle's constant detection on a 200x100 frame is (25, 25, 75, 75): this sign, in the
# original 1360x800 pixels of a scene resized to 200x100, lies on it.
UNDER_THE_DETECTION = (170, 200, 509, 599, 2)


def test_evaluation_scenes_are_read_as_predict_reads_them_and_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    # Scene 0 is a training scene with a sign nothing will find: scoring it would lower recall.
    signs = {0: [(800, 100, 900, 200, 2)], 600: [UNDER_THE_DETECTION]}
    write_gtsdb_archive(tmp_path / "shared", signs, backgrounds=(601,), size=(200, 100))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__SHARED_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "eval" / "metrics.json"
    config = REPO_ROOT / "training" / "configs" / "smoke.yaml"
    # Whole scenes: the constant detector would find its box in every tile.
    args = ["--bundle", str(bundle), "--backend", "onnxruntime", "--out", str(out), "--no-tiles"]
    assert main(["evaluate-scenes", "--config", str(config), *args]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert (printed["scenes"], printed["backend"], printed["detection_confidence"]) == (
        2,
        "onnxruntime",
        0.25,
    )
    everything = printed["all_signs"]
    # One sign found; the same constant box on the sign-free scene is a false detection.
    assert (everything["signs"], everything["predictions"], everything["matched"]) == (1, 2, 1)
    assert (everything["recall"], everything["precision"]) == (1.0, 0.5)
    assert everything["recall_by_size"]["40-80"] == {"signs": 1, "found": 1, "recall": 1.0}
    assert set(printed["per_category"]) == {"prohibitory"}
    assert printed["pr_curve"]["all_signs"][0]["predictions"] >= 2
    png = Path(printed["files"]["pr_curve"])
    assert png == out.with_suffix(".pr_curve.png")
    assert png.read_bytes().startswith(b"\x89PNG")


def test_a_missing_bundle_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_gtsdb_archive(tmp_path / "shared", {600: [UNDER_THE_DETECTION]}, size=(200, 100))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__SHARED_DATA_DIR", str(tmp_path / "shared"))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__CACHE_DIR", str(tmp_path / "cache"))
    config = REPO_ROOT / "training" / "configs" / "smoke.yaml"
    nowhere = tmp_path / "nowhere"
    assert main(["evaluate-scenes", "--config", str(config), "--bundle", str(nowhere)]) == 1
    assert f"cannot read the scenes with bundle {nowhere}" in capsys.readouterr().err
