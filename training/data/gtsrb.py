"""Importer of the official GTSRB layout.

Training set: one folder per class (``00000`` ... ``00042``), each with its ``GT-000CC.csv`` and
images named ``000TT_FFFFF`` (track TT, frame FFFFF). Test set: ``GT-final_test.csv`` beside an
image folder. The CSVs give each image's ROI in the ORIGINAL image's pixels; where the files were
resized (the 32x32 copies), the ROI is scaled to the file's real size.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import partial
from pathlib import Path

from fleet_protocol.taxonomy import GTSRB_CLASS_COUNT, gtsrb_class
from training.data.images import image_size
from training.data.records import Box, LabeledImage
from training.exceptions import DatasetError

_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId")


def _read_ground_truth(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=";")
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{csv_path}:1: missing columns {missing}")
            return [(reader.line_num, row) for row in reader]
    except OSError as e:
        raise DatasetError(f"cannot read {csv_path}: {e}") from e


def _edge(last_pixel: int, size: int) -> int:
    """Exclusive edge after `last_pixel`; a ROI reaching the image's last pixel ends at `size`."""
    return size if last_pixel == size else last_pixel + 1


def _record(
    image_path: Path,
    row: dict[str, str],
    where: str,
    source: str,
    group_of: Callable[[int], str],
) -> LabeledImage:
    try:
        class_id = int(row["ClassId"])
        orig_w, orig_h = int(row["Width"]), int(row["Height"])
        x1, y1 = int(row["Roi.X1"]), int(row["Roi.Y1"])
        # GTSRB's Roi.X2/Y2 are the last pixel inside the sign; our boxes use exclusive edges.
        x2, y2 = _edge(int(row["Roi.X2"]), orig_w), _edge(int(row["Roi.Y2"]), orig_h)
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{where}: bad number in {row}: {e}") from e
    if not 0 <= class_id < GTSRB_CLASS_COUNT:
        raise DatasetError(f"{where}: ClassId {class_id} is not a GTSRB class (0-42)")
    if not (0 <= x1 < x2 <= orig_w and 0 <= y1 < y2 <= orig_h):
        raise DatasetError(f"{where}: ROI ({x1},{y1},{x2},{y2}) outside {orig_w}x{orig_h}")
    if not image_path.is_file():
        raise DatasetError(f"{where}: image {image_path} does not exist")
    width, height = image_size(image_path)
    sx, sy = width / orig_w, height / orig_h
    sign = gtsrb_class(class_id)
    box = Box(
        x1=x1 * sx,
        y1=y1 * sy,
        x2=x2 * sx,
        y2=y2 * sy,
        label=str(class_id),
        gtsrb_id=class_id,
        speed_value=sign.speed_value,
        speed_unit=sign.speed_unit,
    )
    return LabeledImage(image_path, width, height, (box,), group_of(class_id), source)


def track_group(class_id: int, track: int) -> str:
    """The split group of a GTSRB training track, the same whatever copy of GTSRB it comes from."""
    return f"gtsrb-track:{class_id:02d}:{track:05d}"


def _test_group(name: str, class_id: int) -> str:
    # The official test set names no tracks: each image is its own group.
    return f"gtsrb-test:{name}"


def _locate(root: Path, marker: str) -> Path:
    if any(root.glob(marker)):
        return root
    found = sorted(root.rglob(marker))
    if not found:
        raise DatasetError(f"{root}: no {marker} below it: not a GTSRB folder")
    return found[0].parents[len(Path(marker).parts) - 1]


def read_gtsrb_training(root: Path, *, source: str = "gtsrb_train") -> list[LabeledImage]:
    """All images of a GTSRB training set found at or below `root`, grouped by track."""
    base = _locate(root, "000*/GT-000*.csv")
    images: list[LabeledImage] = []
    for csv_path in sorted(base.glob("000*/GT-000*.csv")):
        class_dir = csv_path.parent
        for line, row in _read_ground_truth(csv_path):
            where = f"{csv_path}:{line}"
            track_text = row["Filename"].split("_", 1)[0]
            if not track_text.isdigit():
                raise DatasetError(f"{where}: {row['Filename']!r} is not named 000TT_FFFFF")
            track = int(track_text)
            images.append(
                _record(
                    class_dir / row["Filename"],
                    row,
                    where,
                    source,
                    partial(track_group, track=track),
                )
            )
    if not images:
        raise DatasetError(f"{base}: no images listed in its GT-*.csv files")
    return images


def read_gtsrb_test(root: Path, *, source: str = "gtsrb_test") -> list[LabeledImage]:
    """All images of the official GTSRB test set at or below `root` (GT-final_test.csv)."""
    csv_path = _locate(root, "GT-final_test.csv") / "GT-final_test.csv"
    image_dir = csv_path.parent / "Images"
    if not image_dir.is_dir():
        image_dir = csv_path.parent
    images = []
    for line, row in _read_ground_truth(csv_path):
        name = row["Filename"]
        images.append(
            _record(
                image_dir / name,
                row,
                f"{csv_path}:{line}",
                source,
                partial(_test_group, name),
            )
        )
    return images
