"""The golden-set writer: seeded scenes, only scenes the runtimes read alike, a set the bundle
passes, the committed default set from its seed, and stale sets never survive."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_agent.bundle import ModelFormat, load_bundle
from edge_agent.golden import GOLDEN_INDEX, GoldenTolerance, check_golden, load_golden
from edge_agent.reading.signs import SignReading, load_reader
from fleet_protocol.taxonomy import SignType
from tests.conftest import REPO_ROOT
from tests.edge_agent.conftest import write_tiny_bundle
from training.bundle import assemble_bundle
from training.cli import main
from training.exceptions import TrainingError
from training.golden import JPEG_QUALITY, agreed_readings, render_scene, write_golden_set

BUNDLE = REPO_ROOT / "models" / "default"


def test_scenes_are_rendered_from_their_seed_alone() -> None:
    first, planted = render_scene(3, 1)
    again, planted_again = render_scene(3, 1)
    other, _ = render_scene(3, 2)
    assert first.shape == (480, 640, 3)
    assert np.array_equal(first, again)
    assert planted == planted_again
    assert not np.array_equal(first, other)
    assert len(planted) == 2
    for sign in planted:  # large enough to read, inside the frame
        x1, y1, x2, y2 = sign.box
        assert 0 <= x1 < x2 <= 640
        assert 0 <= y1 < y2 <= 480
        assert y2 - y1 >= 64


def _candidate_jpeg_sha256(seed: int, index: int) -> str:
    """The sha256 `record_golden` gives candidate `index` of `seed` when it keeps it."""
    rgb, _ = render_scene(seed, index)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    assert ok
    return hashlib.sha256(encoded.tobytes()).hexdigest()


def test_rewriting_the_shipped_golden_set_reads_what_each_scene_plants_and_comes_from_its_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "default"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("training", "golden"))
    assert main(["golden", "--bundle", str(bundle)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == summary["images_with_readings"] == 6
    assert set(summary["checked_with"]) == {"openvino", "onnxruntime"}
    # Which candidates are kept depends on how this CPU's INT8 kernels read them; every image,
    # committed or rewritten, is one of the seed's candidates, byte for byte.
    seeded = {_candidate_jpeg_sha256(0, i) for i in range(summary["scenes_tried"] + 20)}
    rewritten = load_golden(bundle)
    assert {e.sha256 for e in rewritten.entries} <= seeded
    assert {e.sha256 for e in load_golden(BUNDLE).entries} <= seeded
    # What each planted sign says is what was read: the golden readings are right, not only
    # reproducible.
    for entry, planted in zip(rewritten.entries, summary["planted"], strict=True):
        read = sorted((r.sign_type.value, r.value) for r in entry.readings)
        said = sorted(
            (
                "speed_limit" if s["kind"].startswith("speed") else s["kind"],
                None if s["value"] is None else float(s["value"]),
            )
            for s in planted
        )
        assert read == said, entry.image


def test_a_bundle_gets_a_golden_set_it_passes_on_every_runtime_it_has(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "tiny")
    summary = write_golden_set(bundle, count=3, read_confidence=0.1)
    assert summary["checked_with"] == {
        "onnxruntime": "3 of 3 golden readings on 3 images reproduced"
    }
    assert check_golden(load_reader(bundle, backend="onnxruntime"), bundle).passed


class Says:
    """A reader of our interface that always reads `readings`."""

    def __init__(self, *readings: SignReading) -> None:
        self.readings = list(readings)

    def read(self, image: np.ndarray, *, confidence: float = 0.25) -> list[SignReading]:
        return [r for r in self.readings if r.confidence >= confidence]


def _speed(value: float, confidence: float = 0.9) -> SignReading:
    box = (10.0, 10.0, 60.0, 60.0)
    kind = SignType.SPEED_LIMIT
    return SignReading(box, "prohibitory", kind, 1, value, "km/h", confidence, False)


def test_a_scene_counts_only_where_every_runtime_reads_it_alike() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    tolerance = GoldenTolerance()
    alike = [Says(_speed(50)), Says(_speed(50, 0.8))]
    assert agreed_readings(image, alike, tolerance, read_confidence=0.25) == 1
    unlike = [Says(_speed(50)), Says(_speed(80))]
    assert agreed_readings(image, unlike, tolerance, read_confidence=0.25) is None
    extra = [Says(), Says(_speed(80))]  # the second reads a sign the first never recorded
    assert agreed_readings(image, extra, tolerance, read_confidence=0.25) is None
    nothing = [Says(_speed(50, 0.3)), Says()]  # too weak to record, too weak to be extra
    assert agreed_readings(image, nothing, tolerance, read_confidence=0.25) == 0


def test_a_model_reading_nothing_still_gets_a_golden_set_of_empty_scenes(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "tiny")
    # At the default threshold the tiny classifier is too unsure for any reading to be recorded.
    summary = write_golden_set(bundle, count=2, max_candidates=4)
    assert (summary["images"], summary["images_with_readings"]) == (2, 0)
    assert all(e.readings == [] for e in load_golden(bundle).entries)


def test_the_writer_refuses_what_it_cannot_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(TrainingError, match="at least one image"):
        write_golden_set(tmp_path, count=0)
    assert main(["golden", "--bundle", str(tmp_path / "nothing")]) == 1
    assert "roadsign-train golden: cannot load bundle" in capsys.readouterr().err
    assert not (tmp_path / "nothing" / "golden").exists()


def test_assembling_a_bundle_drops_the_golden_set_of_the_one_it_replaces(tmp_path: Path) -> None:
    source = write_tiny_bundle(tmp_path / "exports")
    out = tmp_path / "bundle"
    (out / "golden").mkdir(parents=True)
    (out / GOLDEN_INDEX).write_text("{}")
    exports: dict[ModelFormat, Path] = {
        "onnx_int8": source / "detector" / "onnx_int8" / "model.onnx"
    }
    assemble_bundle(
        out,
        name="t",
        version="2",
        detector_exports=exports,
        classifier=source / "classifier" / "classifier.onnx",
        formats=["onnx_int8"],
    )
    assert load_bundle(out).version == "2"
    assert not (out / "golden").exists()
