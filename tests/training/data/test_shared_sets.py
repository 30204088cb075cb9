"""The real sets of ../shared/data: unpacked once, read with leak-free groups, split by stage."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA
from training.cli import main
from training.data.shared_sets import ensure_unpacked, read_gtsdb_real_world, read_shared_set
from training.data.yolo import read_yolo_dataset
from training.exceptions import DatasetError

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is absent")
CACHE = REPO_ROOT / ".cache" / "data"


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_is_unpacked_once_and_again_when_it_changes(tmp_path: Path) -> None:
    shared, cache = tmp_path / "shared", tmp_path / "cache"
    shared.mkdir()
    _archive(shared / "demo.tar.gz", {"demo/a.txt": b"one"})
    root = ensure_unpacked(shared, "demo", cache)
    assert (root / "a.txt").read_text() == "one"
    (root / "a.txt").write_text("edited")
    assert (ensure_unpacked(shared, "demo", cache) / "a.txt").read_text() == "edited"  # reused
    _archive(shared / "demo.tar.gz", {"demo/a.txt": b"two, longer"})
    assert (ensure_unpacked(shared, "demo", cache) / "a.txt").read_text() == "two, longer"


def test_unsafe_or_missing_archives_are_refused(tmp_path: Path) -> None:
    _archive(tmp_path / "evil.tar.gz", {"../escape.txt": b"x"})
    with pytest.raises(DatasetError, match="cannot unpack"):
        ensure_unpacked(tmp_path, "evil", tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()
    _archive(tmp_path / "odd.tar.gz", {"other/a.txt": b"x"})
    with pytest.raises(DatasetError, match="did not unpack into a folder named odd"):
        ensure_unpacked(tmp_path, "odd", tmp_path / "cache")
    with pytest.raises(DatasetError, match="does not exist"):
        ensure_unpacked(tmp_path, "absent", tmp_path / "cache")
    with pytest.raises(DatasetError, match="unknown shared set"):
        read_shared_set("absent", tmp_path)


@needs_shared
def test_tt100k_groups_are_street_views_and_speeds_are_read() -> None:
    records = read_shared_set("tt100k_train", ensure_unpacked(SHARED_DATA, "tt100k_train", CACHE))
    assert len(records) == 17127
    backgrounds = [r for r in records if not r.boxes]
    assert len(backgrounds) == 600
    pl40 = [r for r in records if r.boxes and r.boxes[0].label == "pl40"]
    assert all(r.boxes[0].speed_value == 40 and r.boxes[0].speed_unit == "km/h" for r in pl40)
    assert pl40[0].group == f"tt100k:{pl40[0].path.stem.split('_')[0]}"
    assert len({r.group for r in records}) < len(records)  # views with several signs


@needs_shared
def test_native_gtsrb_speed_crops_share_groups_with_the_32px_copies() -> None:
    speed = read_shared_set(
        "gtsrb_train_speed", ensure_unpacked(SHARED_DATA, "gtsrb_train_speed", CACHE)
    )
    small = read_shared_set("gtsrb_train32", ensure_unpacked(SHARED_DATA, "gtsrb_train32", CACHE))
    assert {r.group for r in speed} <= {r.group for r in small}
    assert {r.boxes[0].speed_value for r in speed} == {30, 50, 60, 70, 80, 100, 120}
    photos = read_gtsdb_real_world(ensure_unpacked(SHARED_DATA, "gtsdb_speed", CACHE))
    assert len(photos) == 17


@needs_shared
@pytest.mark.slow
def test_data_stage_splits_without_leaks_and_renders_scenes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__OUT_DIR", str(tmp_path))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__CACHE_DIR", str(CACHE))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__SHARED_DATA_DIR", str(SHARED_DATA))
    config = str(REPO_ROOT / "training" / "configs" / "smoke.yaml")
    assert main(["data", "--config", config]) == 0
    summary = __import__("json").loads(capsys.readouterr().out)
    assert summary["dropped_groups"] == ["gtsrb-track:14:00023"]
    assert summary["images"]["gtsrb_test/test"] == 12630
    manifests = sorted(p.name for p in (tmp_path / "smoke" / "manifests").iterdir())
    assert "tt100k.test.json" in manifests
    assert "gtsrb.val.json" in manifests
    splits = read_yolo_dataset(Path(summary["data_yaml"]))
    assert (len(splits["train"]), len(splits["val"])) == (32, 16)
    first = splits["train"][0].path.stat().st_mtime_ns
    assert main(["data", "--config", config]) == 0
    assert splits["train"][0].path.stat().st_mtime_ns == first  # nothing re-rendered


@needs_shared
def test_stage_parts_never_share_a_group() -> None:
    from training.config import DataConfig
    from training.data.build import split_real_sets

    parts, dropped = split_real_sets(
        DataConfig(shared_data_dir=SHARED_DATA, cache_dir=CACHE, seed=0)
    )
    groups = {key: {r.group for r in records} for key, records in parts.items()}
    for family in ("gtsrb", "tt100k", "us"):
        keys = [k for k in groups if k.startswith(f"{family}/")]
        for i, a in enumerate(keys):
            for b in keys[i + 1 :]:
                assert not groups[a] & groups[b], (a, b)
    assert not any(g in groups["gtsrb/train"] for g in dropped)
    speed_test = [
        r
        for r in parts["tt100k/test"]
        if r.boxes and r.boxes[0].speed_value and r.boxes[0].height >= 30
    ]
    assert len(speed_test) > 300


def test_stage_failure_exits_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__SHARED_DATA_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("ROADSIGN_TRAIN__DATA__CACHE_DIR", str(tmp_path / "cache"))
    config = str(REPO_ROOT / "training" / "configs" / "smoke.yaml")
    assert main(["data", "--config", config]) == 1
    assert "does not exist: is ../shared/data present?" in capsys.readouterr().err
