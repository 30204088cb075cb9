"""Importer of Pascal VOC: ``Annotations/*.xml`` describing images in ``JPEGImages/``."""

from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from training.data.records import Box, LabeledImage
from training.exceptions import DatasetError


def _text(node: Element, tag: str, where: Path) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{where}: <{tag}> missing in <{node.tag}>")
    return child.text.strip()


def _number(node: Element, tag: str, where: Path) -> float:
    text = _text(node, tag, where)
    try:
        return float(text)
    except ValueError as e:
        raise DatasetError(f"{where}: <{tag}> is not a number: {text!r}") from e


def read_voc_annotation(xml_path: Path, image_dir: Path, *, source: str = "voc") -> LabeledImage:
    """One VOC annotation file as a record; VOC's 1-based inclusive boxes become 0-based pixels."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (OSError, ElementTree.ParseError, DefusedXmlException) as e:
        raise DatasetError(f"{xml_path}: not a readable VOC annotation: {e}") from e
    if root is None:
        raise DatasetError(f"{xml_path}: empty VOC annotation")
    filename = _text(root, "filename", xml_path)
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{xml_path}: <size> missing")
    width, height = int(_number(size, "width", xml_path)), int(_number(size, "height", xml_path))
    boxes = []
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{xml_path}: <object> without <bndbox>")
        x1 = _number(bndbox, "xmin", xml_path) - 1
        y1 = _number(bndbox, "ymin", xml_path) - 1
        x2, y2 = _number(bndbox, "xmax", xml_path), _number(bndbox, "ymax", xml_path)
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise DatasetError(f"{xml_path}: box ({x1},{y1},{x2},{y2}) outside {width}x{height}")
        boxes.append(Box(x1, y1, x2, y2, _text(obj, "name", xml_path)))
    image = image_dir / filename
    if not image.is_file():
        raise DatasetError(f"{xml_path}: image {image} does not exist")
    return LabeledImage(
        image, width, height, tuple(boxes), f"{source}:{Path(filename).stem}", source
    )


def read_voc_dataset(root: Path, *, source: str = "voc") -> list[LabeledImage]:
    """Every annotation in ``root/Annotations`` with its image in ``root/JPEGImages``."""
    annotations = sorted((root / "Annotations").glob("*.xml"))
    if not annotations:
        raise DatasetError(f"{root}: no Annotations/*.xml")
    return [read_voc_annotation(a, root / "JPEGImages", source=source) for a in annotations]
