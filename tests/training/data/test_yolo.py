"""YOLO format: what we write reads back to the same boxes; bad label lines name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.data.conftest import write_image
from training.data.records import Box, LabeledImage
from training.data.yolo import read_yolo_dataset, write_data_yaml, yolo_label_lines
from training.exceptions import DatasetError

NAMES = ["prohibitory", "warning"]


def _dataset(root: Path, labels: dict[str, str]) -> Path:
    for name, text in labels.items():
        write_image(root / "images" / "train" / f"{name}.jpg", 100, 50)
        if text is not None:
            (root / "labels" / "train").mkdir(parents=True, exist_ok=True)
            (root / "labels" / "train" / f"{name}.txt").write_text(text)
    return write_data_yaml(root, NAMES, ["train"])


def test_written_labels_read_back_to_the_same_pixel_boxes(tmp_path: Path) -> None:
    path = write_image(tmp_path / "images" / "train" / "a.jpg", 100, 50)
    boxes = (Box(10, 5, 30, 45, "warning"), Box(60.5, 0, 100, 20.25, "prohibitory"))
    record = LabeledImage(path, 100, 50, boxes, "a")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    lines = yolo_label_lines(record, {n: i for i, n in enumerate(NAMES)})
    (tmp_path / "labels" / "train" / "a.txt").write_text("\n".join(lines) + "\n")
    data_yaml = write_data_yaml(tmp_path, NAMES, ["train"])
    [read] = read_yolo_dataset(data_yaml)["train"]
    assert [b.label for b in read.boxes] == ["warning", "prohibitory"]
    for got, want in zip(read.boxes, boxes, strict=True):
        assert (got.x1, got.y1, got.x2, got.y2) == pytest.approx(
            (want.x1, want.y1, want.x2, want.y2), abs=1e-3
        )


def test_image_without_label_file_is_background_and_polygons_become_boxes(tmp_path: Path) -> None:
    data_yaml = _dataset(tmp_path, {"bg": None, "poly": "1 0.1 0.2 0.5 0.2 0.3 0.8\n\n"})  # type: ignore[dict-item]
    records = {r.path.stem: r for r in read_yolo_dataset(data_yaml)["train"]}
    assert records["bg"].boxes == ()
    [box] = records["poly"].boxes
    assert (box.label, box.x1, box.y1, box.x2, box.y2) == pytest.approx(("warning", 10, 10, 50, 40))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0 0.5 0.5 0.2\n", "expected 4 box values"),
        ("2 0.5 0.5 0.2 0.2\n", "class 2 is not in names"),
        ("0 0.5 0.5 0.2 0.2\nx 1 1 1 1\n", r"a\.txt:2: not 'class cx cy w h'"),
        ("0 0.95 0.5 0.2 0.2\n", "not inside the image"),
    ],
)
def test_bad_label_line_is_refused(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(DatasetError, match=says):
        read_yolo_dataset(_dataset(tmp_path, {"a": text}))


@pytest.mark.parametrize(
    ("yaml_text", "says"),
    [
        ("names: 5\ntrain: images\n", "'names' must be"),
        ("names: {0: a, 2: b}\ntrain: images\n", "numbered 0..1"),
        ("names: [a]\n", "names none of the splits"),
        ("names: [a]\ntrain: nowhere\n", "neither a folder nor a .txt list"),
        ("- a\n", "not a mapping"),
    ],
)
def test_bad_data_yaml_is_refused(tmp_path: Path, yaml_text: str, says: str) -> None:
    path = tmp_path / "data.yaml"
    path.write_text(yaml_text)
    with pytest.raises(DatasetError, match=says):
        read_yolo_dataset(path)


def test_split_may_be_a_list_file(tmp_path: Path) -> None:
    _dataset(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "train.txt").write_text("images/train/a.jpg\n")
    (tmp_path / "data.yaml").write_text("names: {0: p, 1: w}\ntrain: train.txt\n")
    [record] = read_yolo_dataset(tmp_path / "data.yaml")["train"]
    assert record.boxes[0].label == "p"
