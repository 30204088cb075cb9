"""Pascal VOC importer: 1-based boxes become pixel boxes; hostile or broken XML is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.data.conftest import write_image
from training.data.voc import read_voc_dataset
from training.exceptions import DatasetError

ANNOTATION = """<annotation><filename>a.jpg</filename>
<size><width>80</width><height>60</height><depth>3</depth></size>
<object><name>stop</name><bndbox><xmin>11</xmin><ymin>6</ymin><xmax>40</xmax><ymax>30</ymax>
</bndbox></object>
<object><name>yield</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>80</xmax><ymax>60</ymax>
</bndbox></object></annotation>"""


def _voc(root: Path, xml: str) -> Path:
    write_image(root / "JPEGImages" / "a.jpg", 80, 60)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / "a.xml").write_text(xml)
    return root


def test_annotation_becomes_a_record_in_zero_based_pixels(tmp_path: Path) -> None:
    [record] = read_voc_dataset(_voc(tmp_path, ANNOTATION))
    assert (record.width, record.height) == (80, 60)
    stop, whole = record.boxes
    assert (stop.label, stop.x1, stop.y1, stop.x2, stop.y2) == ("stop", 10, 5, 40, 30)
    assert (whole.x1, whole.y1, whole.x2, whole.y2) == (0, 0, 80, 60)


@pytest.mark.parametrize(
    ("xml", "says"),
    [
        (ANNOTATION.replace("<xmax>40</xmax>", "<xmax>90</xmax>"), "outside 80x60"),
        (ANNOTATION.replace("<xmin>11</xmin>", "<xmin>eleven</xmin>"), "not a number"),
        (ANNOTATION.replace("<name>stop</name>", ""), "<name> missing"),
        (ANNOTATION.replace("a.jpg", "b.jpg"), "does not exist"),
        ("<annotation><filename>a.jpg", "not a readable VOC annotation"),
        (
            '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            "<annotation><filename>&x;</filename></annotation>",
            "not a readable VOC annotation",
        ),
    ],
)
def test_bad_annotation_is_refused(tmp_path: Path, xml: str, says: str) -> None:
    with pytest.raises(DatasetError, match=says):
        read_voc_dataset(_voc(tmp_path, xml))


def test_folder_without_annotations_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no Annotations"):
        read_voc_dataset(tmp_path)
