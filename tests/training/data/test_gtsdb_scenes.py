"""GTSDB scenes: read from an archive like the real one, the benchmark split kept, YOLO samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.training.data.conftest import write_gtsdb_archive
from training.config import DataConfig
from training.data.build import split_real_scenes
from training.data.gtsdb_scenes import (
    ARCHIVE,
    read_gtsdb_scenes,
    refuse_evaluation_scenes,
    scene_role,
    write_yolo_scenes,
)
from training.data.shared_sets import ensure_unpacked
from training.data.yolo import read_yolo_dataset, write_data_yaml
from training.exceptions import DatasetError, EvaluationSceneError

SPEED_30 = (680, 400, 720, 440, 1)  # original 1360x800 pixels, last pixel inside
NO_ENTRY = (100, 200, 127, 227, 17)
WARNING = (900, 300, 960, 352, 18)


def _unpacked(tmp_path: Path, **kwargs: object) -> Path:
    signs = {0: [SPEED_30, NO_ENTRY, SPEED_30], 1: [WARNING], 600: [SPEED_30], 899: [WARNING]}
    write_gtsdb_archive(tmp_path / "shared", signs, backgrounds=(2, 3, 601), **kwargs)  # type: ignore[arg-type]
    return ensure_unpacked(tmp_path / "shared", "gtsdb_scenes", tmp_path / "cache")


def test_the_benchmark_split_trains_on_0_to_599_and_only_scores_600_to_899() -> None:
    assert [scene_role(n) for n in (0, 599, 600, 899)] == [
        "training",
        "training",
        "evaluation",
        "evaluation",
    ]
    for outside in (-1, 900):
        with pytest.raises(DatasetError, match="scenes 0-899"):
            scene_role(outside)


def test_scenes_are_read_with_scaled_boxes_classes_speeds_and_backgrounds(tmp_path: Path) -> None:
    scenes = read_gtsdb_scenes(_unpacked(tmp_path))
    assert [r.path.name for r in scenes["training"]] == [
        "00000.jpg",
        "00001.jpg",
        "00002.jpg",
        "00003.jpg",
    ]
    assert [r.path.name for r in scenes["evaluation"]] == ["00600.jpg", "00601.jpg", "00899.jpg"]
    first = scenes["training"][0]
    assert (first.width, first.height, first.group, first.source) == (
        960,
        565,
        "gtsdb_scenes:00000",
        "gtsdb_scenes",
    )
    speed, no_entry = first.boxes  # the sign listed twice is one box
    # The original box, its last pixel included, in 960x565 pixels.
    assert (speed.x1, speed.y1, speed.x2, speed.y2) == pytest.approx(
        (680 * 960 / 1360, 400 * 565 / 800, 721 * 960 / 1360, 441 * 565 / 800)
    )
    assert (speed.label, speed.gtsrb_id, speed.speed_value, speed.speed_unit) == (
        "1",
        1,
        30.0,
        "km/h",
    )
    assert (no_entry.gtsrb_id, no_entry.speed_value) == (17, None)
    assert scenes["training"][2].boxes == ()  # a sign-free scene is a background


def test_a_csv_without_the_original_columns_is_read_in_its_own_pixels(tmp_path: Path) -> None:
    scenes = read_gtsdb_scenes(_unpacked(tmp_path, original_columns=False))
    box = scenes["training"][0].boxes[0]
    assert (box.x1, box.y1, box.x2, box.y2) == (480, 282, 508, 311)


def test_a_label_for_a_missing_scene_or_class_names_its_line(tmp_path: Path) -> None:
    root = _unpacked(tmp_path)
    labels = root / "labels.csv"
    good = labels.read_text()
    labels.write_text(good + "00777.jpg,1,1,20,20,1,1,1,28,28\n")
    with pytest.raises(DatasetError, match=r"labels.csv:\d+: image 00777.jpg does not exist"):
        read_gtsdb_scenes(root)
    labels.write_text(good + "00001.jpg,1,1,20,20,43,1,1,28,28\n")
    with pytest.raises(DatasetError, match=r"labels.csv:8: bad sign .*no GTSRB class 43"):
        read_gtsdb_scenes(root)


def test_evaluation_scenes_are_refused_by_training_steps_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    scenes = read_gtsdb_scenes(_unpacked(tmp_path))
    assert refuse_evaluation_scenes(scenes["training"]) == scenes["training"]
    mixed = [*scenes["training"], scenes["evaluation"][0], scenes["evaluation"][2]]
    with pytest.raises(
        EvaluationSceneError, match=r"2 GTSDB evaluation scene\(s\) \(00600, 00899\)"
    ):
        refuse_evaluation_scenes(mixed)
    out = tmp_path / "yolo"
    with pytest.raises(EvaluationSceneError, match="only ever scored"):
        write_yolo_scenes(out, {"train": scenes["training"], "val": scenes["evaluation"][:1]})
    assert not out.exists()


def test_training_scenes_become_yolo_samples_labelled_by_category(tmp_path: Path) -> None:
    scenes = read_gtsdb_scenes(_unpacked(tmp_path))
    out = tmp_path / "yolo"
    folders = write_yolo_scenes(
        out, {"train": scenes["training"][:3], "val": scenes["training"][3:]}
    )
    assert folders == {"train": out / "images" / "train", "val": out / "images" / "val"}
    assert (out / "labels" / "train" / "00002.txt").read_text() == ""  # background
    names = ["prohibitory", "end_of_restriction", "warning"]
    splits = read_yolo_dataset(write_data_yaml(out, names, ["train", "val"]))
    first, second, background = splits["train"]
    assert [b.label for b in first.boxes] == ["prohibitory", "prohibitory"]
    assert [b.label for b in second.boxes] == ["warning"]
    assert (first.boxes[0].x1, first.boxes[0].x2) == pytest.approx(
        (480.0, 721 * 960 / 1360), abs=0.01
    )
    assert background.boxes == ()
    assert [r.path.name for r in splits["val"]] == ["00003.jpg"]


def test_the_data_stage_adds_training_scenes_only_when_asked(tmp_path: Path) -> None:
    _unpacked(tmp_path)
    config = DataConfig(shared_data_dir=tmp_path / "shared", cache_dir=tmp_path / "cache")
    assert split_real_scenes(config) == {}
    parts = split_real_scenes(config.model_copy(update={"gtsdb_scenes": True, "val_fraction": 0.3}))
    assert set(parts) == {"gtsdb_scenes/train", "gtsdb_scenes/val"}
    names = sorted(r.path.name for records in parts.values() for r in records)
    assert names == ["00000.jpg", "00001.jpg", "00002.jpg", "00003.jpg"]
    assert parts["gtsdb_scenes/val"]  # a share of the training scenes validates


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
def test_the_real_archive_holds_the_benchmark_split() -> None:
    root = ensure_unpacked(SHARED_DATA, "gtsdb_scenes", REPO_ROOT / ".cache" / "data")
    scenes = read_gtsdb_scenes(root)
    boxes = {role: sum(len(r.boxes) for r in records) for role, records in scenes.items()}
    assert {role: len(records) for role, records in scenes.items()} == {
        "training": 600,
        "evaluation": 300,
    }
    assert boxes == {"training": 851, "evaluation": 361}  # 852 rows: one sign is listed twice
    assert sum(not r.boxes for records in scenes.values() for r in records) == 159


def test_an_evaluation_scene_is_refused_by_its_layout_whatever_source_reads_it(
    tmp_path: Path,
) -> None:
    # A data.yaml edited by hand to list an evaluation scene: read back, its records say "yolo".
    root = _unpacked(tmp_path)
    yolo = tmp_path / "handmade" / ARCHIVE
    for split, scene in (("train", "00001"), ("val", "00600")):
        (yolo / "images" / split).mkdir(parents=True)
        shutil.copy(root / "images" / f"{scene}.jpg", yolo / "images" / split)
    splits = read_yolo_dataset(write_data_yaml(yolo, ["prohibitory"], ["train", "val"]))
    assert {r.source for records in splits.values() for r in records} == {"yolo"}
    assert refuse_evaluation_scenes(splits["train"]) == splits["train"]
    with pytest.raises(EvaluationSceneError, match=r"\(00600\)"):
        refuse_evaluation_scenes(splits["val"])
