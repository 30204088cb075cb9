"""Importer of crop datasets labelled by a CSV file: one row per image, a path column and labels.

The real sets in ``../shared/data`` (TT100K, GTSDB crops, GTSRB native-size speed crops, US speed
signs) are all of this form; `CsvCropSpec` says how one such CSV maps onto our records, and
`training.data.shared_sets` holds the specs of those sets.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fleet_protocol.taxonomy import SpeedUnit
from training.data.images import image_size
from training.data.records import Box, LabeledImage
from training.exceptions import DatasetError

Row = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class CropLabel:
    """What one CSV row says is on its crop; `label` None marks a background image (no box)."""

    label: str | None
    gtsrb_id: int | None = None
    speed_value: float | None = None
    speed_unit: SpeedUnit | None = None
    roi: tuple[float, float, float, float] | None = None
    """Box in file pixels (x1, y1, x2 exclusive, y2 exclusive); None: the whole crop."""


@dataclass(frozen=True, slots=True)
class CsvCropSpec:
    """How to read one CSV-labelled crop set."""

    source: str
    labels_csv: str
    path_column: str
    label_of: Callable[[Row], CropLabel]
    group_of: Callable[[Row, Path], str]
    """The split group: rows that show the same physical sign must share it."""


def read_csv_crops(root: Path, spec: CsvCropSpec) -> list[LabeledImage]:
    """Every crop the spec's CSV lists under `root`; errors name the CSV line."""
    csv_path = root / spec.labels_csv
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if spec.path_column not in (reader.fieldnames or []):
                raise DatasetError(f"{csv_path}:1: no {spec.path_column!r} column")
            rows = [(reader.line_num, row) for row in reader]
    except OSError as e:
        raise DatasetError(f"cannot read {csv_path}: {e}") from e
    images = []
    for line, row in rows:
        where = f"{csv_path}:{line}"
        path = root / row[spec.path_column]
        if not path.is_file():
            raise DatasetError(f"{where}: image {path} does not exist")
        try:
            crop = spec.label_of(row)
        except (KeyError, ValueError) as e:
            raise DatasetError(f"{where}: cannot read the label of {dict(row)}: {e}") from e
        width, height = image_size(path)
        boxes: tuple[Box, ...] = ()
        if crop.label is not None:
            x1, y1, x2, y2 = crop.roi or (0.0, 0.0, float(width), float(height))
            # ROIs given by last pixel + 1 may end one past the edge of a tight crop.
            x2 = width if width < x2 <= width + 1 else x2
            y2 = height if height < y2 <= height + 1 else y2
            if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
                raise DatasetError(f"{where}: box ({x1},{y1},{x2},{y2}) outside {width}x{height}")
            boxes = (
                Box(x1, y1, x2, y2, crop.label, crop.gtsrb_id, crop.speed_value, crop.speed_unit),
            )
        images.append(
            LabeledImage(path, width, height, boxes, spec.group_of(row, path), spec.source)
        )
    if not images:
        raise DatasetError(f"{csv_path}: lists no images")
    return images
