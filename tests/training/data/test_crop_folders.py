"""Crop folders: the folder names the class, the whole crop is the box, groups by pattern."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.data.conftest import write_image
from training.data.crop_folders import read_crop_folders
from training.exceptions import DatasetError


def test_each_crop_is_labelled_by_its_folder(tmp_path: Path) -> None:
    write_image(tmp_path / "stop" / "1_0.png", 20, 24)
    write_image(tmp_path / "stop" / "1_1.png", 30, 30)
    write_image(tmp_path / "yield" / "2_0.jpg", 10, 12)
    (tmp_path / "yield" / "notes.txt").write_text("not an image")
    records = read_crop_folders(tmp_path, source="mine", group_pattern=r"^(\d+)_")
    assert [(r.boxes[0].label, r.width, r.height) for r in records] == [
        ("stop", 20, 24),
        ("stop", 30, 30),
        ("yield", 10, 12),
    ]
    assert records[0].group == records[1].group == "mine:1"
    box = records[0].boxes[0]
    assert (box.x1, box.y1, box.x2, box.y2) == (0, 0, 20, 24)


def test_without_pattern_each_crop_is_its_own_group(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "x.png", 8, 8)
    write_image(tmp_path / "b" / "x.png", 8, 8)
    assert len({r.group for r in read_crop_folders(tmp_path)}) == 2


def test_unmatched_name_empty_and_missing_folders_are_refused(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "x.png", 8, 8)
    with pytest.raises(DatasetError, match="does not match group pattern"):
        read_crop_folders(tmp_path, group_pattern=r"^(\d+)_")
    (tmp_path / "empty" / "c").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        read_crop_folders(tmp_path / "empty")
    with pytest.raises(DatasetError, match="not a folder"):
        read_crop_folders(tmp_path / "missing")
