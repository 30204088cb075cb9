"""The detector stage refuses a dataset holding a GTSDB evaluation scene before it trains."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.training.data.conftest import write_gtsdb_archive
from training.config import TrainingConfig
from training.data.build import DatasetBuild
from training.data.shared_sets import ensure_unpacked
from training.data.yolo import write_data_yaml
from training.detector.stage import run_detector_stage
from training.exceptions import EvaluationSceneError


def test_a_data_yaml_listing_an_evaluation_scene_is_refused_before_any_training(
    tmp_path: Path,
) -> None:
    write_gtsdb_archive(tmp_path / "shared", {1: [(680, 400, 720, 440, 1)], 612: []})
    root = ensure_unpacked(tmp_path / "shared", "gtsdb_scenes", tmp_path / "cache")
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        shutil.copy(root / "images" / "00001.jpg", tmp_path / "images" / split)
    # Validation also reads the unpacked archive (training scene 00001, evaluation scene 00612).
    data_yaml = write_data_yaml(
        tmp_path, ["prohibitory"], ["train", "val"], {"val": [root / "images"]}
    )
    build = DatasetBuild(tmp_path / "run", data_yaml, {}, {}, frozenset())
    with pytest.raises(EvaluationSceneError, match=r"00612"):
        run_detector_stage(TrainingConfig(), build)
    assert not (tmp_path / "run" / "detector").exists()
