"""Sign readings combine detector category and classifier output, flagging disagreements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.detection import Detection
from edge_agent.reading.classifier import CropReading
from edge_agent.reading.signs import DISAGREEMENT_PENALTY, interpret, load_reader
from fleet_protocol.taxonomy import SignType
from tests.edge_agent.conftest import write_tiny_bundle

BOX = (10.0, 10.0, 50.0, 50.0)


def _read(category: str, sign: str, speed: int | None, unit: str = "km/h") -> object:
    detection = Detection(BOX, category, 0.8)
    crop = CropReading(sign, 0.9, speed, 0.95)
    return interpret(detection, crop, round_unit=unit)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("category", "sign", "speed", "expected"),
    [
        ("prohibitory", "2", 50, (SignType.SPEED_LIMIT, 50.0, "km/h", False)),
        ("prohibitory", "other", 40, (SignType.SPEED_LIMIT, 40.0, "km/h", False)),
        ("prohibitory", "17", None, (SignType.NO_ENTRY, None, None, False)),
        ("prohibitory", "other", None, (SignType.PROHIBITORY, None, None, False)),
        ("end_of_restriction", "6", 80, (SignType.END_OF_SPEED_LIMIT, 80.0, "km/h", False)),
        ("end_of_restriction", "32", None, (SignType.END_OF_RESTRICTIONS, None, None, False)),
        ("speed_rect", "other", 35, (SignType.SPEED_LIMIT, 35.0, "mph", False)),
        ("speed_rect", "other", None, (SignType.OTHER, None, None, False)),
        ("warning", "11", None, (SignType.RIGHT_OF_WAY, None, None, False)),
        ("warning", "1", None, (SignType.WARNING, None, None, False)),  # shape beats class
        # Red-rimmed look-alikes: a far stop or yield sign detected as round or triangular.
        ("prohibitory", "14", None, (SignType.STOP, None, None, False)),
        ("prohibitory", "13", None, (SignType.YIELD, None, None, False)),
        ("warning", "13", None, (SignType.YIELD, None, None, False)),
        ("mandatory", "14", None, (SignType.MANDATORY, None, None, False)),
        ("stop", "other", None, (SignType.STOP, None, None, False)),
        ("info_square", "other", None, (SignType.PEDESTRIAN_CROSSING, None, None, False)),
    ],
)
def test_category_and_crop_give_the_meaning(
    category: str, sign: str, speed: int | None, expected: tuple[object, ...]
) -> None:
    reading = _read(category, sign, speed)
    assert (reading.sign_type, reading.value, reading.unit, reading.sources_disagree) == expected  # type: ignore[attr-defined]


def test_class_and_speed_head_disagreeing_is_flagged_and_costs_confidence() -> None:
    agree = _read("prohibitory", "1", 30)
    disagree = _read("prohibitory", "1", 80)
    assert not agree.sources_disagree  # type: ignore[attr-defined]
    assert disagree.sources_disagree  # type: ignore[attr-defined]
    assert disagree.value == 80.0  # type: ignore[attr-defined]
    assert disagree.confidence == pytest.approx(agree.confidence * DISAGREEMENT_PENALTY)  # type: ignore[attr-defined]
    silent = _read("prohibitory", "1", None)  # the class alone says 30 and the head saw none
    assert (silent.value, silent.sources_disagree) == (30.0, True)  # type: ignore[attr-defined]


def test_round_signs_take_the_regions_unit() -> None:
    assert _read("prohibitory", "other", 25, unit="mph").unit == "mph"  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_reader_loads_a_bundle_and_reads_a_frame(tmp_path: Path, backend: str) -> None:
    reader = load_reader(write_tiny_bundle(tmp_path), backend=backend)
    [reading] = reader.read(np.zeros((100, 200, 3), np.uint8))
    assert reading.category == "prohibitory"
    np.testing.assert_allclose(reading.box, (25, 25, 75, 75), atol=1e-3)


def test_detections_marked_to_skip_are_left_unread_and_cost_no_classification(
    tmp_path: Path,
) -> None:
    reader = load_reader(write_tiny_bundle(tmp_path), backend="onnxruntime")
    frame = np.zeros((100, 200, 3), np.uint8)
    [detection] = reader.detect(frame)
    [read] = reader.read_detections(frame, [detection, detection], skip=[False, True])[:1]
    before = reader.classifier.infer_seconds
    [skipped] = reader.read_detections(frame, [detection], skip=[True])
    assert reader.classifier.infer_seconds == before  # the classifier never ran
    assert read.confidence > 0
    assert (skipped.box, skipped.category) == (read.box, read.category)
    assert (skipped.confidence, skipped.gtsrb_class_id, skipped.value) == (0.0, None, None)
    assert skipped.sign_type is SignType.PROHIBITORY
