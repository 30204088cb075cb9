"""GTSDB street scenes (``gtsdb_scenes.tar.gz``): real boxed signs for the detector, and the split
that keeps the benchmark's evaluation scenes out of every training step.

The archive unpacks to ``gtsdb_scenes/images/00000.jpg .. 00899.jpg`` (960x565, resized from the
original 1360x800) and ``labels.csv``, one row per sign with its GTSRB class id. Scenes without a
row hold no sign: they are real background images. Boxes are taken from the original-pixel columns
(``orig_*``, GTSDB's last-pixel-inside convention) scaled to the image, which keeps the sub-pixel
edges the rounded 960x565 columns lose (most signs are 11-40 px, where a pixel is a few percent of
IoU); a CSV without them falls back to the 960x565 columns.

`scene_role` alone owns the split: scenes 00000-00599 train, 00600-00899 are only ever scored.
Everything that feeds training (`write_yolo_scenes`, the data stage's scene renderer, the
detector stage's train and val splits) passes its records through `refuse_evaluation_scenes`,
which knows a scene by its source or by its layout on disk: an evaluation scene in a training
path is an error, never a silently better score.
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Literal

from fleet_protocol.taxonomy import gtsrb_class
from training.data.categories import CATEGORIES, category_of_record
from training.data.images import image_size
from training.data.records import Box, LabeledImage
from training.data.yolo import yolo_label_lines
from training.exceptions import DatasetError, EvaluationSceneError

ARCHIVE = "gtsdb_scenes"
SOURCE = "gtsdb_scenes"
SCENE_COUNT = 900
FIRST_EVALUATION_SCENE = 600
ORIGINAL_SIZE = (1360, 800)
"""GTSDB's own frame size, in which the ``orig_*`` columns are given."""

SceneRole = Literal["training", "evaluation"]


def scene_role(scene: int) -> SceneRole:
    """Whether GTSDB scene `scene` may be trained on (00000-00599) or only scored (00600-00899).

    This is the benchmark's own split and the one place it is decided.
    """
    if not 0 <= scene < SCENE_COUNT:
        raise DatasetError(f"GTSDB has scenes 0-{SCENE_COUNT - 1}, not {scene}")
    return "training" if scene < FIRST_EVALUATION_SCENE else "evaluation"


def scene_number(image: LabeledImage | Path) -> int:
    """The scene number of a GTSDB record or image path (``.../00612.jpg`` is 612)."""
    path = image.path if isinstance(image, LabeledImage) else image
    try:
        return int(path.stem)
    except ValueError as e:
        raise DatasetError(f"{path}: not a GTSDB scene name (expected NNNNN.jpg)") from e


def _gtsdb_scene(record: LabeledImage) -> int | None:
    """The GTSDB scene a record shows, or None for any other image.

    A record of this importer, or any image laid out as a GTSDB scene (``gtsdb_scenes/images/
    [<split>/]NNNNN.jpg``: the unpacked archive, or the YOLO copies), say through a data.yaml
    read back with another source name.
    """
    if record.source == SOURCE:
        return scene_number(record)
    parts = record.path.parts
    laid_out = any(a == ARCHIVE and b == "images" for a, b in pairwise(parts))
    stem = record.path.stem
    return int(stem) if laid_out and len(stem) == 5 and stem.isdigit() else None


def refuse_evaluation_scenes(records: Iterable[LabeledImage]) -> list[LabeledImage]:
    """`records` as a list, or `EvaluationSceneError` naming every GTSDB evaluation scene in it.

    Images of other sets pass untouched: only GTSDB scenes have a benchmark split to keep.
    """
    kept = list(records)
    scenes = (_gtsdb_scene(r) for r in kept)
    leaked = sorted(n for n in scenes if n is not None and scene_role(n) == "evaluation")
    if leaked:
        shown = ", ".join(f"{n:05d}" for n in leaked[:10]) + (" ..." if len(leaked) > 10 else "")
        raise EvaluationSceneError(
            f"{len(leaked)} GTSDB evaluation scene(s) ({shown}) reached a training step: scenes "
            f"{FIRST_EVALUATION_SCENE:05d}-{SCENE_COUNT - 1:05d} are only ever scored"
        )
    return kept


def _box(row: Mapping[str, str], width: int, height: int) -> tuple[float, float, float, float]:
    if row.get("orig_x1"):
        sx, sy = width / ORIGINAL_SIZE[0], height / ORIGINAL_SIZE[1]
        return (
            float(row["orig_x1"]) * sx,
            float(row["orig_y1"]) * sy,
            (float(row["orig_x2"]) + 1) * sx,
            (float(row["orig_y2"]) + 1) * sy,
        )
    return float(row["x1"]), float(row["y1"]), float(row["x2"]), float(row["y2"])


def _sign(row: Mapping[str, str], width: int, height: int) -> Box:
    class_id = int(row["gtsrb_class_id"])
    sign = gtsrb_class(class_id)
    x1, y1, x2, y2 = _box(row, width, height)
    x1, y1, x2, y2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    if not (x1 < x2 and y1 < y2):
        raise ValueError(f"empty box inside {width}x{height}")
    value = float(sign.speed_value) if sign.speed_value is not None else None
    return Box(x1, y1, x2, y2, str(class_id), class_id, value, sign.speed_unit)


def _read_rows(root: Path) -> dict[str, list[tuple[int, dict[str, str]]]]:
    csv_path = root / "labels.csv"
    rows: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"image", "gtsrb_class_id"} - set(reader.fieldnames or [])
            if missing:
                raise DatasetError(f"{csv_path}:1: no column(s) {', '.join(sorted(missing))}")
            for row in reader:
                rows[row["image"]].append((reader.line_num, row))
    except OSError as e:
        raise DatasetError(f"cannot read {csv_path}: {e}") from e
    return rows


def read_gtsdb_scenes(root: Path) -> dict[SceneRole, list[LabeledImage]]:
    """Every scene of the unpacked archive at `root`, by role, in scene order.

    Each scene is its own split group; a scene with no label row is a background record.
    """
    images_dir = root / "images"
    paths = sorted(images_dir.glob("*.jpg"))
    if not paths:
        raise DatasetError(f"{images_dir}: no scene images (is {root} an unpacked {ARCHIVE}?)")
    rows = _read_rows(root)
    known = {p.name for p in paths}
    strays = sorted(set(rows) - known)
    if strays:
        line = rows[strays[0]][0][0]
        raise DatasetError(f"{root / 'labels.csv'}:{line}: image {strays[0]} does not exist")
    scenes: dict[SceneRole, list[LabeledImage]] = {"training": [], "evaluation": []}
    for path in paths:
        width, height = image_size(path)
        boxes: list[Box] = []
        for line, row in rows.get(path.name, []):
            try:
                sign = _sign(row, width, height)
            except (KeyError, ValueError) as e:
                raise DatasetError(
                    f"{root / 'labels.csv'}:{line}: bad sign {dict(row)}: {e}"
                ) from e
            # The real labels.csv lists one sign (scene 00340's stop sign) twice: a sign is one
            # box to find, not two.
            if sign not in boxes:
                boxes.append(sign)
        number = scene_number(path)
        record = LabeledImage(path, width, height, tuple(boxes), f"{SOURCE}:{number:05d}", SOURCE)
        scenes[scene_role(number)].append(record)
    return scenes


def as_detector_record(image: LabeledImage) -> LabeledImage:
    """`image` with each box labelled by its detector category (what the YOLO labels hold)."""
    boxes = []
    for box in image.boxes:
        category = category_of_record(image, box)
        if category is None:
            raise DatasetError(f"{image.path}: no detector category for sign {box.label!r}")
        boxes.append(
            Box(
                box.x1,
                box.y1,
                box.x2,
                box.y2,
                category.value,
                box.gtsrb_id,
                box.speed_value,
                box.speed_unit,
            )
        )
    return LabeledImage(image.path, image.width, image.height, tuple(boxes), image.group, SOURCE)


def write_yolo_scenes(
    out_dir: Path, splits: Mapping[str, Sequence[LabeledImage]]
) -> dict[str, Path]:
    """Copy training scenes into ``out_dir/images/<split>`` with YOLO labels beside them.

    Returns each split's image folder (for a ``data.yaml`` entry). Sign-free scenes get an empty
    label file: ultralytics trains on them as background. Evaluation scenes are refused before
    anything is written.
    """
    checked = {split: refuse_evaluation_scenes(records) for split, records in splits.items()}
    class_index = {c.value: i for i, c in enumerate(CATEGORIES)}
    folders = {}
    for split, records in checked.items():
        images_dir, labels_dir = out_dir / "images" / split, out_dir / "labels" / split
        shutil.rmtree(images_dir, ignore_errors=True)
        shutil.rmtree(labels_dir, ignore_errors=True)
        images_dir.mkdir(parents=True)
        labels_dir.mkdir(parents=True)
        for record in records:
            # Copied, not linked: ultralytics finds labels by the image's own path, so a link
            # resolving into the unpacked archive would look for them there.
            shutil.copy2(record.path, images_dir / record.path.name)
            lines = yolo_label_lines(as_detector_record(record), class_index)
            (labels_dir / f"{record.path.stem}.txt").write_text("".join(f"{x}\n" for x in lines))
        folders[split] = images_dir
    return folders
