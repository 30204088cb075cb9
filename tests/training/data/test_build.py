"""The data stage's detector dataset: rendered scenes, and real GTSDB training scenes when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.training.data.conftest import write_gtsdb_archive, write_image
from training.config import DataConfig
from training.data import build
from training.data.records import Box, LabeledImage
from training.data.yolo import read_yolo_dataset


def _sign_crop(path: Path) -> LabeledImage:
    write_image(path, 32, 32)
    return LabeledImage(path, 32, 32, (Box(2, 2, 30, 30, "14", 14),), path.stem, "gtsrb_train32")


def test_gtsdb_training_scenes_join_the_rendered_ones_and_evaluation_scenes_never_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real sets are stood in for by one crop per split: only the scenes are under test.
    parts = {
        "gtsrb/train": [_sign_crop(tmp_path / "a.png")],
        "gtsrb/val": [_sign_crop(tmp_path / "b.png")],
    }
    monkeypatch.setattr(build, "split_real_sets", lambda config: (parts, set()))
    signs = {n: [(680, 400, 720, 440, 1)] for n in (0, 1, 2, 3, 600, 601)}
    write_gtsdb_archive(tmp_path / "shared", signs, backgrounds=(4, 602))
    config = DataConfig(
        shared_data_dir=tmp_path / "shared",
        cache_dir=tmp_path / "cache",
        synthetic_scenes=2,
        synthetic_val_scenes=1,
        scene_width=128,
        scene_height=96,
        max_sign_px=40,
        val_fraction=0.4,
    )
    rendered_only = build.build_datasets(config, tmp_path / "off")
    assert rendered_only.data_yaml is not None
    assert [len(v) for v in read_yolo_dataset(rendered_only.data_yaml).values()] == [2, 1]
    assert "gtsdb_scenes/train" not in rendered_only.manifests

    result = build.build_datasets(config.model_copy(update={"gtsdb_scenes": True}), tmp_path / "on")
    assert result.data_yaml is not None
    entries = yaml.safe_load(result.data_yaml.read_text())
    assert entries["train"][0] == "images/train"
    assert "gtsdb_scenes" in entries["train"][1]
    splits = read_yolo_dataset(result.data_yaml)
    real = sorted(r.path.name for records in splits.values() for r in records if r.width == 960)
    assert real == ["00000.jpg", "00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg"]
    train, val = result.real_scenes["gtsdb_scenes/train"], result.real_scenes["gtsdb_scenes/val"]
    assert (len(splits["train"]), len(splits["val"])) == (2 + len(train), 1 + len(val))
    assert train
    assert val
    assert {"gtsdb_scenes/train", "gtsdb_scenes/val"} <= set(result.manifests)
    assert result.summary()["images"] == {
        "gtsrb/train": 1,
        "gtsrb/val": 1,
        "gtsdb_scenes/train": len(train),
        "gtsdb_scenes/val": len(val),
    }
