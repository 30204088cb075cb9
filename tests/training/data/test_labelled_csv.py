"""CSV-labelled crop sets: each row becomes a record; bad rows name the CSV line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.data.conftest import write_image
from training.data.labelled_csv import CropLabel, CsvCropSpec, Row, read_csv_crops
from training.exceptions import DatasetError


def _label(row: Row) -> CropLabel:
    if row["kind"] == "bg":
        return CropLabel(None)
    roi = tuple(float(v) for v in row["roi"].split()) if row["roi"] else None
    return CropLabel(row["kind"], None, float(row["speed"]), "km/h", roi)  # type: ignore[arg-type]


SPEC = CsvCropSpec("test", "labels.csv", "path", _label, lambda row, path: f"g:{path.stem[0]}")


def _set(root: Path, rows: list[str]) -> Path:
    write_image(root / "img" / "a1.png", 40, 30)
    write_image(root / "img" / "a2.png", 40, 30)
    (root / "labels.csv").write_text("path,kind,speed,roi\n" + "\n".join(rows) + "\n")
    return root


def test_rows_become_records_with_rois_backgrounds_and_groups(tmp_path: Path) -> None:
    root = _set(tmp_path, ["img/a1.png,pl40,40,", "img/a2.png,bg,,", "img/a1.png,pl5,5,2 3 40 31"])
    whole, background, roi = read_csv_crops(root, SPEC)
    assert (whole.boxes[0].x2, whole.boxes[0].y2, whole.boxes[0].speed_value) == (40, 30, 40)
    assert background.boxes == ()
    # A ROI one past the edge (last pixel + 1 conventions) is clipped to the crop.
    assert (roi.boxes[0].x1, roi.boxes[0].y1, roi.boxes[0].x2, roi.boxes[0].y2) == (2, 3, 40, 30)
    assert whole.group == background.group == "g:a"


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("img/none.png,pl40,40,", "labels.csv:3: image .* does not exist"),
        ("img/a1.png,pl40,forty,", "labels.csv:3: cannot read the label"),
        ("img/a1.png,pl40,40,5 5 60 20", "labels.csv:3: box .* outside 40x30"),
    ],
)
def test_bad_row_is_refused_naming_its_line(tmp_path: Path, row: str, says: str) -> None:
    with pytest.raises(DatasetError, match=says):
        read_csv_crops(_set(tmp_path, ["img/a1.png,pl40,40,", row]), SPEC)


def test_missing_csv_column_or_rows_are_refused(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,kind\n")
    with pytest.raises(DatasetError, match="no 'path' column"):
        read_csv_crops(tmp_path, SPEC)
    (tmp_path / "labels.csv").write_text("path,kind,speed,roi\n")
    with pytest.raises(DatasetError, match="lists no images"):
        read_csv_crops(tmp_path, SPEC)
    with pytest.raises(DatasetError, match="cannot read"):
        read_csv_crops(tmp_path / "nowhere", SPEC)
