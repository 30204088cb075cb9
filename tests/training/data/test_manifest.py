"""Manifests count what a dataset holds and their hashes change with any file or label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.data.conftest import write_image
from training.data.manifest import build_manifest
from training.data.records import Box, LabeledImage
from training.exceptions import DatasetError


def _records(root: Path) -> list[LabeledImage]:
    a = write_image(root / "a.png", 20, 10, seed=1)
    b = write_image(root / "b.png", 30, 40, seed=2)
    c = write_image(root / "c.png", 30, 40, seed=3)
    return [
        LabeledImage(a, 20, 10, (Box(0, 0, 10, 5, "stop"),), "g1", "s1"),
        LabeledImage(b, 30, 40, (Box(0, 0, 10, 20, "stop"), Box(5, 5, 9, 9, "yield")), "g1", "s1"),
        LabeledImage(c, 30, 40, (), "g2", "s2"),
    ]


def test_manifest_counts_classes_sizes_groups_and_sources(tmp_path: Path) -> None:
    manifest = build_manifest("mini", tmp_path, _records(tmp_path))
    assert (manifest.images, manifest.boxes, manifest.background_images, manifest.groups) == (
        3,
        3,
        1,
        2,
    )
    assert manifest.class_counts == {"stop": 2, "yield": 1}
    assert manifest.sources == {"s1": 2, "s2": 1}
    assert manifest.image_width == {"min": 20, "median": 30, "max": 30}
    assert manifest.box_height == {"min": 4, "median": 5, "max": 20}
    written = json.loads(manifest.write(tmp_path / "m" / "mini.json").read_text())
    assert written["manifest_sha256"] == manifest.manifest_sha256


def test_hashes_are_stable_and_order_free(tmp_path: Path) -> None:
    records = _records(tmp_path)
    one = build_manifest("mini", tmp_path, records)
    two = build_manifest("mini", tmp_path, list(reversed(records)))
    assert one == two


def test_a_changed_byte_changes_the_file_hash_only(tmp_path: Path) -> None:
    records = _records(tmp_path)
    before = build_manifest("mini", tmp_path, records)
    data = bytearray(records[2].path.read_bytes())
    data[-1] ^= 0xFF
    records[2].path.write_bytes(bytes(data))
    after = build_manifest("mini", tmp_path, records)
    assert after.files_sha256 != before.files_sha256
    assert after.labels_sha256 == before.labels_sha256
    assert after.manifest_sha256 != before.manifest_sha256


def test_a_changed_label_changes_the_label_hash(tmp_path: Path) -> None:
    records = _records(tmp_path)
    before = build_manifest("mini", tmp_path, records)
    relabelled = [
        *records[:2],
        LabeledImage(records[2].path, 30, 40, (Box(1, 1, 2, 2, "x"),), "g2"),
    ]
    after = build_manifest("mini", tmp_path, relabelled)
    assert after.labels_sha256 != before.labels_sha256
    assert after.files_sha256 == before.files_sha256


def test_empty_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="is empty"):
        build_manifest("none", tmp_path, [])
