"""GTSRB importer: official layouts become records grouped by track, ROIs in file pixels."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.data.conftest import write_gtsrb_training, write_image
from training.data.gtsrb import read_gtsrb_test, read_gtsrb_training, track_group
from training.exceptions import DatasetError


def test_training_set_is_read_with_tracks_as_groups_and_scaled_rois(tmp_path: Path) -> None:
    write_gtsrb_training(tmp_path / "GTSRB" / "Final_Training" / "Images", {1: 2, 14: 1})
    records = read_gtsrb_training(tmp_path)  # found below the given root
    assert len(records) == 9
    assert {r.group for r in records} == {track_group(1, 0), track_group(1, 1), track_group(14, 0)}
    first = records[0]
    assert (first.width, first.height) == (32, 32)
    [box] = first.boxes
    # 64x64 original, ROI 8..55 inclusive, file 32x32: half of 8..56.
    assert (box.x1, box.y1, box.x2, box.y2) == (4.0, 4.0, 28.0, 28.0)
    assert (box.label, box.gtsrb_id, box.speed_value, box.speed_unit) == ("1", 1, 30, "km/h")
    stop = next(r for r in records if r.boxes[0].gtsrb_id == 14)
    assert stop.boxes[0].speed_value is None


def test_test_set_is_read_one_group_per_image(tmp_path: Path) -> None:
    images = tmp_path / "Final_Test" / "Images"
    write_image(images / "00000.ppm", 40, 30)
    write_image(images / "00001.ppm", 40, 30, seed=1)
    (tmp_path / "Final_Test" / "GT-final_test.csv").write_text(
        "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
        "00000.ppm;40;30;5;5;34;24;17\n00001.ppm;40;30;0;0;39;29;42\n"
    )
    records = read_gtsrb_test(tmp_path)
    assert [r.boxes[0].gtsrb_id for r in records] == [17, 42]
    assert records[1].boxes[0].x2 == 40  # the last pixel inclusive becomes the edge
    assert len({r.group for r in records}) == 2


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("00000_00000.ppm;64;64;8;8;55;55;43", "not a GTSRB class"),
        ("00000_00000.ppm;64;64;8;8;70;55;1", "outside 64x64"),
        ("00000_00000.ppm;64;64;x;8;55;55;1", "bad number"),
        ("missing_00000.ppm;64;64;8;8;55;55;1", "not named 000TT_FFFFF"),
        ("00009_00000.ppm;64;64;8;8;55;55;1", "does not exist"),
    ],
)
def test_bad_ground_truth_line_is_refused_naming_file_and_line(
    tmp_path: Path, line: str, says: str
) -> None:
    root = write_gtsrb_training(tmp_path, {1: 1}, frames=1)
    csv_path = root / "00001" / "GT-00001.csv"
    csv_path.write_text(csv_path.read_text() + line + "\n")
    with pytest.raises(DatasetError, match=f"GT-00001.csv:3: .*{says}"):
        read_gtsrb_training(root)


def test_missing_columns_and_missing_layout_are_refused(tmp_path: Path) -> None:
    root = write_gtsrb_training(tmp_path / "a", {2: 1}, frames=1)
    (root / "00002" / "GT-00002.csv").write_text("Filename;ClassId\nx;2\n")
    with pytest.raises(DatasetError, match="missing columns"):
        read_gtsrb_training(root)
    with pytest.raises(DatasetError, match="not a GTSRB folder"):
        read_gtsrb_training(tmp_path / "b")


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    root = write_gtsrb_training(tmp_path, {3: 1}, frames=1)
    (root / "00003" / "00000_00000.ppm").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=r"00000_00000\.ppm: not a readable image"):
        read_gtsrb_training(root)
