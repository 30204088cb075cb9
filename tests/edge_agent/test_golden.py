"""Golden sets: the shipped bundle reproduces its own, other models and edits fail by name, and
missing, oversized, tampered or malformed golden files are refused before anything is read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import load_bundle
from edge_agent.exceptions import ModelError
from edge_agent.golden import (
    GOLDEN_INDEX,
    MAX_IMAGE_BYTES,
    MAX_INDEX_BYTES,
    GoldenReading,
    GoldenTolerance,
    check_golden,
    compare_image,
    load_golden,
    record_golden,
)
from edge_agent.reading.signs import SignReading, load_reader
from fleet_protocol.taxonomy import SignType
from tests.conftest import REPO_ROOT
from tests.edge_agent.conftest import (
    constant_detector_onnx,
    detector_sidecar,
    png_declaring,
    write_tiny_bundle,
)

BUNDLE = REPO_ROOT / "models" / "default"


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_the_shipped_bundle_reproduces_every_golden_reading_on_each_runtime(
    backend: str,
) -> None:
    result = check_golden(load_reader(BUNDLE, backend=backend, threads=2), BUNDLE)
    assert result.passed, result.detail
    assert result.expected >= 6
    assert result.matched == result.expected
    assert all(c.extra == 0 for c in result.per_image)


def test_the_shipped_golden_set_is_small_read_on_most_images_and_packaged() -> None:
    golden = load_golden(BUNDLE)
    files = [BUNDLE / e.image for e in golden.entries]
    assert len(files) <= 8
    assert sum(f.stat().st_size for f in files) < 400_000
    assert sum(bool(e.readings) for e in golden.entries) >= len(golden.entries) - 1
    # Numbers are what a smoke test can get wrong: the set must hold speed values to compare.
    assert any(r.value is not None for e in golden.entries for r in e.readings)
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "shipped_bundle/golden/*" in package_data["package-data"]["edge_agent"]


def _golden_only(tmp_path: Path) -> Path:
    """A folder holding a copy of the shipped golden set, to edit; read with the shipped reader."""
    shutil.copytree(BUNDLE / "golden", tmp_path / "b" / "golden")
    return tmp_path / "b"


def test_a_bundle_whose_detector_is_swapped_fails_naming_the_image_and_what_it_read(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "swapped"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("training"))
    # Another (valid, checksummed) detector in the ONNX slot: always one box, top left.
    detector_dir = bundle / "detector" / "onnx_int8"
    shutil.rmtree(detector_dir)
    artifact = constant_detector_onnx(
        detector_dir / "model.onnx", 64, [(2, 2, 14, 14, 0)], dynamic=True
    )
    detector_sidecar(artifact, 64, "onnx_int8", stride=32)
    assert load_bundle(bundle).detector["onnx_int8"] == "detector/onnx_int8/model.onnx"
    result = check_golden(load_reader(bundle, backend="onnxruntime"), bundle)
    assert not result.passed
    assert result.matched == 0
    problems = [p for c in result.per_image for p in c.problems]
    assert any("nothing read there" in p for p in problems)
    assert any("extra reading" in p for p in problems)  # the swapped detector's own box
    # The detail fits an OtaStatus: the first problems, then how many more per_image holds.
    n = len(result.per_image)
    assert result.detail.startswith(
        f"golden check failed: 0 of {result.expected} golden readings on {n} images"
    )
    assert "golden/0001.jpg: expected" in result.detail
    assert len(result.detail) <= 1000
    shown = sum(p in result.detail for p in problems)
    assert 0 < shown < len(problems)
    assert result.detail.endswith(f" ... and {len(problems) - shown} more (see per_image)")


def test_a_golden_speed_edited_to_another_value_fails_naming_the_image_and_both_values(
    tmp_path: Path,
) -> None:
    bundle = _golden_only(tmp_path)
    index = bundle / GOLDEN_INDEX
    data = json.loads(index.read_text())
    entry_no, reading = next(
        (i, r)
        for i, e in enumerate(data["entries"])
        for r in e["readings"]
        if r["sign_type"] == "speed_limit" and r["unit"] == "km/h"
    )
    true_value = int(reading["value"])
    reading["value"] = 130.0 if true_value != 130 else 120.0
    index.write_text(json.dumps(data))
    result = check_golden(load_reader(BUNDLE, backend="openvino", threads=2), bundle)
    assert not result.passed
    assert result.matched == result.expected - 1
    image = data["entries"][entry_no]["image"]
    assert f"{image}: expected speed_limit {int(reading['value'])} km/h" in result.detail, (
        result.detail
    )
    assert f"read speed_limit {true_value} km/h instead" in result.detail
    assert [c.image for c in result.per_image if c.problems] == [image]


class NeverReads:
    """A reader that fails the test if the check ever gets as far as reading an image."""

    def read(self, image: np.ndarray, *, confidence: float = 0.25) -> list[SignReading]:
        raise AssertionError("the golden set should have been refused before any image was read")


def test_a_bundle_without_a_golden_set_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"has no golden set \(golden/golden.json is missing\)"):
        check_golden(NeverReads(), tmp_path)


def test_an_oversized_golden_json_is_refused_without_reading_it(tmp_path: Path) -> None:
    bundle = _golden_only(tmp_path)
    # Sparse: reading even part of 64 GiB would take minutes and the memory with it.
    os.truncate(bundle / GOLDEN_INDEX, 64 << 30)
    with pytest.raises(ModelError, match=f"over the {MAX_INDEX_BYTES}-byte limit; not read"):
        check_golden(NeverReads(), bundle)


def test_an_oversized_golden_image_is_refused_without_reading_it(tmp_path: Path) -> None:
    bundle = _golden_only(tmp_path)
    os.truncate(bundle / "golden" / "0002.jpg", 64 << 30)
    with pytest.raises(ModelError, match=rf"golden image golden/0002.jpg is {64 << 30} bytes, ov"):
        check_golden(NeverReads(), bundle)
    assert MAX_IMAGE_BYTES < 64 << 30


def test_a_tampered_golden_image_fails_its_sha256(tmp_path: Path) -> None:
    bundle = _golden_only(tmp_path)
    image = bundle / "golden" / "0003.jpg"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0xFF
    image.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"golden/0003.jpg has sha256 .* tampered or corrupt"):
        check_golden(NeverReads(), bundle)


def test_an_image_whose_header_claims_a_huge_frame_is_refused_undecoded(tmp_path: Path) -> None:
    bundle = _golden_only(tmp_path)
    bomb = png_declaring(20_000, 20_000, rows=2)
    (bundle / "golden" / "0001.png").write_bytes(bomb)
    data = json.loads((bundle / GOLDEN_INDEX).read_text())
    data["entries"][0].update(image="golden/0001.png", sha256=hashlib.sha256(bomb).hexdigest())
    (bundle / GOLDEN_INDEX).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"golden/0001.png is 20000x20000, over 4096 px"):
        check_golden(NeverReads(), bundle)


def test_a_golden_image_linked_from_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    bundle = _golden_only(tmp_path)
    outside = tmp_path / "elsewhere.jpg"
    shutil.move(bundle / "golden" / "0001.jpg", outside)
    (bundle / "golden" / "0001.jpg").symlink_to(outside)
    with pytest.raises(ModelError, match="lies outside"):
        check_golden(NeverReads(), bundle)


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(signed_by="me"), "signed_by"),
        (lambda d: d["entries"][0].update(image="golden/../bundle.json"), "image"),
        (lambda d: d["entries"][0].update(image="/etc/passwd"), "image"),
        (lambda d: d["entries"][0]["readings"][0].update(sign_type="unicorn"), "sign_type"),
        (lambda d: d["entries"][0]["readings"][0].update(confidence="0.9"), "confidence"),
        (lambda d: d["tolerance"].update(min_iou=0), "min_iou"),
        (lambda d: d.update(entries=[]), "entries"),
        (lambda d: d["entries"].append(d["entries"][0]), "listed twice"),
    ],
)
def test_a_malformed_golden_json_is_a_model_error_naming_the_fault(
    tmp_path: Path, edit: object, why: str
) -> None:
    bundle = _golden_only(tmp_path)
    data = json.loads((bundle / GOLDEN_INDEX).read_text())
    assert callable(edit)
    edit(data)
    (bundle / GOLDEN_INDEX).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=rf"invalid golden set (?s:.*){why}"):
        check_golden(NeverReads(), bundle)


def test_not_json_at_all_is_a_model_error(tmp_path: Path) -> None:
    bundle = _golden_only(tmp_path)
    (bundle / GOLDEN_INDEX).write_text("{not json")
    with pytest.raises(ModelError, match="invalid golden set"):
        check_golden(NeverReads(), bundle)


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    return [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(count)]


def test_record_then_check_round_trips_and_replaces_an_earlier_set(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "tiny")
    reader = load_reader(bundle, backend="onnxruntime")
    (bundle / "golden").mkdir()
    (bundle / "golden" / "0009.jpg").write_bytes(b"left from an earlier set")
    golden = record_golden(reader, bundle, _images(3), read_confidence=0.1)
    assert sorted(p.name for p in (bundle / "golden").iterdir()) == [
        "0001.jpg",
        "0002.jpg",
        "0003.jpg",
        "golden.json",
    ]
    assert load_golden(bundle) == golden
    for entry in golden.entries:
        assert hashlib.sha256((bundle / entry.image).read_bytes()).hexdigest() == entry.sha256
        [reading] = entry.readings  # the constant detector's one box, read by the classifier
        assert reading.confidence >= 0.1 + golden.tolerance.confidence_abs
    result = check_golden(reader, bundle)
    assert result.passed, result.detail
    assert (result.matched, result.expected) == (3, 3)
    assert result.detail == "3 of 3 golden readings on 3 images reproduced"


def test_readings_too_close_to_the_threshold_are_not_recorded(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "tiny")
    reader = load_reader(bundle, backend="onnxruntime")
    weak = [r.confidence for r in reader.read(_images(1)[0], confidence=0.1)]
    assert weak
    assert max(weak) < 0.25 + GoldenTolerance().confidence_abs  # the tiny classifier is unsure
    golden = record_golden(reader, bundle, _images(1))
    assert golden.entries[0].readings == []
    assert check_golden(reader, bundle).passed  # and not extra when read again either


def test_recording_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="at least one image"):
        record_golden(NeverReads(), tmp_path, [])


def _speed(value: float, box: Sequence[float], confidence: float) -> GoldenReading:
    return GoldenReading(
        sign_type=SignType.SPEED_LIMIT,
        value=value,
        unit="km/h",
        bbox=(box[0], box[1], box[2], box[3]),
        confidence=confidence,
    )


GOLD = _speed(50, (100, 100, 200, 200), 0.8)


@pytest.mark.parametrize(
    ("actual", "problem"),
    [
        ([_speed(50, (110, 95, 205, 210), 0.7)], None),
        ([_speed(50, (160, 160, 260, 260), 0.8)], "box overlap IoU 0.09 < 0.5"),
        ([_speed(50, (100, 100, 200, 200), 0.5)], "confidence 0.50 differs by more than 0.25"),
        ([_speed(80, (100, 100, 200, 200), 0.8)], "read speed_limit 80 km/h instead"),
        ([], "nothing read there"),
    ],
)
def test_a_golden_reading_matches_only_within_every_tolerance(
    actual: list[GoldenReading], problem: str | None
) -> None:
    check = compare_image("golden/x.jpg", [GOLD], actual, GoldenTolerance(), extra_floor=0.4)
    assert check.matched == (problem is None)
    if problem is not None:
        [line] = check.problems
        assert line.startswith("golden/x.jpg: expected speed_limit 50 km/h at [100, 100, 200")
        assert problem in line


def test_confident_extra_readings_count_and_weak_ones_do_not() -> None:
    extra = _speed(30, (300, 300, 360, 360), 0.9)
    weak = _speed(30, (400, 300, 460, 360), 0.3)
    strict = compare_image("i", [GOLD], [GOLD, extra, weak], GoldenTolerance(), extra_floor=0.4)
    assert strict.extra == 1
    assert strict.problems == (
        "i: 1 extra reading(s), 0 tolerated: speed_limit 30 km/h at [300, 300, 360, 360] "
        "(confidence 0.90)",
    )
    lenient = compare_image(
        "i", [GOLD], [GOLD, extra, weak], GoldenTolerance(max_extra=1), extra_floor=0.4
    )
    assert lenient.problems == ()


class Scripted:
    """A reader of our interface that says what it is told to, image after image."""

    def __init__(self, readings: list[list[SignReading]]) -> None:
        self.readings = readings
        self.calls = 0

    def read(self, image: np.ndarray, *, confidence: float = 0.25) -> list[SignReading]:
        self.calls += 1
        return self.readings[(self.calls - 1) % len(self.readings)]


def _sign(value: float, box: tuple[float, float, float, float]) -> SignReading:
    return SignReading(box, "prohibitory", SignType.SPEED_LIMIT, 1, value, "km/h", 0.9, False)


def test_min_recall_lets_a_set_pass_with_some_readings_missed(tmp_path: Path) -> None:
    two = [_sign(50, (10, 10, 50, 50)), _sign(70, (80, 10, 120, 50))]
    record_golden(Scripted([two]), tmp_path, _images(2), GoldenTolerance(min_recall=0.75))
    one = Scripted([two[:1]])
    result = check_golden(one, tmp_path)
    assert (result.matched, result.expected, result.passed) == (2, 4, False)
    assert "2 of 4 golden readings on 2 images reproduced, 3 needed" in result.detail
    record_golden(Scripted([two]), tmp_path, _images(2), GoldenTolerance(min_recall=0.5))
    result = check_golden(one, tmp_path)
    assert result.passed
    assert "within tolerance" in result.detail
    assert "expected speed_limit 70 km/h" in result.detail
