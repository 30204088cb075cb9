"""Reading and writing the YOLO dataset format (what ultralytics trains on).

A ``data.yaml`` names the class list and, per split, image folders (or list files); each image
``.../images/.../x.jpg`` has its labels in ``.../labels/.../x.txt``, one ``class cx cy w h`` line
per object, normalised to 0-1 (polygon lines are reduced to their bounding box). An image with no
label file is a background image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from training.data.images import image_size, is_image
from training.data.records import Box, LabeledImage
from training.exceptions import DatasetError

SPLITS = ("train", "val", "test")


def _class_names(raw: object, where: Path) -> list[str]:
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        return list(raw)
    if isinstance(raw, dict) and all(isinstance(k, int) for k in raw):
        if sorted(raw) != list(range(len(raw))):
            raise DatasetError(f"{where}: names must be numbered 0..{len(raw) - 1}")
        return [str(raw[i]) for i in range(len(raw))]
    raise DatasetError(f"{where}: 'names' must be a list or a {{id: name}} mapping")


def _label_path(image: Path) -> Path:
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    raise DatasetError(f"{image}: YOLO images must lie below a folder named 'images'")


def _images_of(entry: str, base: Path, where: Path) -> list[Path]:
    target = (base / entry).resolve()
    if target.is_dir():
        return sorted(p for p in target.rglob("*") if p.is_file() and is_image(p))
    if target.is_file() and target.suffix == ".txt":
        lines = target.read_text(encoding="utf-8").splitlines()
        return [(target.parent / line.strip()).resolve() for line in lines if line.strip()]
    raise DatasetError(f"{where}: split entry {entry!r} is neither a folder nor a .txt list")


def _read_labels(label_path: Path, width: int, height: int, names: Sequence[str]) -> list[Box]:
    boxes = []
    for number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{label_path}:{number}"
        try:
            class_index, *coords = line.split()
            index = int(class_index)
            values = [float(v) for v in coords]
        except ValueError as e:
            raise DatasetError(f"{where}: not 'class cx cy w h': {line!r}") from e
        if not 0 <= index < len(names):
            raise DatasetError(f"{where}: class {index} is not in names (0-{len(names) - 1})")
        if len(values) == 4:
            cx, cy, w, h = values
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        elif len(values) >= 6 and len(values) % 2 == 0:
            xs, ys = values[0::2], values[1::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise DatasetError(f"{where}: expected 4 box values or a polygon, got {len(values)}")
        tolerance = 1e-3
        if not (-tolerance <= x1 < x2 <= 1 + tolerance and -tolerance <= y1 < y2 <= 1 + tolerance):
            raise DatasetError(f"{where}: box is not inside the image in 0-1 coordinates")
        boxes.append(
            Box(
                max(x1, 0.0) * width,
                max(y1, 0.0) * height,
                min(x2, 1.0) * width,
                min(y2, 1.0) * height,
                names[index],
            )
        )
    return boxes


def read_yolo_dataset(data_yaml: Path, *, source: str = "yolo") -> dict[str, list[LabeledImage]]:
    """The splits a ``data.yaml`` names, each a list of records (boxes in pixels)."""
    try:
        config = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise DatasetError(f"cannot read {data_yaml}: {e}") from e
    if not isinstance(config, dict):
        raise DatasetError(f"{data_yaml}: not a mapping")
    names = _class_names(config.get("names"), data_yaml)
    base = data_yaml.parent / str(config.get("path") or ".")
    splits: dict[str, list[LabeledImage]] = {}
    for split in SPLITS:
        entries = config.get(split)
        if entries is None:
            continue
        records = []
        for entry in [entries] if isinstance(entries, str) else list(entries):
            for image in _images_of(str(entry), base, data_yaml):
                width, height = image_size(image)
                label_path = _label_path(image)
                boxes = (
                    _read_labels(label_path, width, height, names) if label_path.exists() else []
                )
                records.append(
                    LabeledImage(
                        image, width, height, tuple(boxes), f"{source}:{image.stem}", source
                    )
                )
        splits[split] = records
    if not splits:
        raise DatasetError(f"{data_yaml}: names none of the splits {SPLITS}")
    return splits


def yolo_label_lines(image: LabeledImage, class_index: Mapping[str, int]) -> list[str]:
    """The label file lines of `image`, boxes clipped to the image, six decimals."""
    lines = []
    for box in image.boxes:
        x1, x2 = max(box.x1, 0.0), min(box.x2, float(image.width))
        y1, y2 = max(box.y1, 0.0), min(box.y2, float(image.height))
        cx, cy = (x1 + x2) / 2 / image.width, (y1 + y2) / 2 / image.height
        w, h = (x2 - x1) / image.width, (y2 - y1) / image.height
        lines.append(f"{class_index[box.label]} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def write_data_yaml(
    root: Path,
    names: Sequence[str],
    splits: Sequence[str],
    more_folders: Mapping[str, Sequence[Path]] | None = None,
) -> Path:
    """Write ``root/data.yaml`` for image folders ``root/images/<split>``.

    `more_folders` adds image folders (each with its ``labels`` twin) to a split, which then
    lists all of its folders.
    """
    entries: dict[str, str | list[str]] = {}
    for split in splits:
        extra = [str(p.resolve()) for p in (more_folders or {}).get(split, [])]
        entries[split] = [f"images/{split}", *extra] if extra else f"images/{split}"
    config = {"path": str(root.resolve()), **entries, "names": dict(enumerate(names))}
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
