"""The detector: letterbox there and back, YOLOv8 decoding, class-aware NMS, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.bundle import ModelMetadata
from edge_agent.detection import Detector, decode, letterbox, letterbox_shape, nms
from edge_agent.exceptions import ModelError
from tests.edge_agent.conftest import CATEGORIES, constant_detector_onnx, detector_sidecar


def test_letterbox_centres_and_maps_boxes_back_to_the_frame() -> None:
    frame = np.zeros((100, 200, 3), np.uint8)
    canvas, fit = letterbox(frame, 64)
    assert canvas.shape == (64, 64, 3)
    assert (fit.scale, fit.pad_x, fit.pad_y) == (0.32, 0.0, 16.0)
    assert (canvas[:16] == 114).all()
    assert (canvas[48:] == 114).all()
    back = fit.to_frame(np.array([[0.0, 16.0, 32.0, 32.0], [-5, 0, 70, 70]]), 200, 100)
    np.testing.assert_allclose(back, [[0, 0, 100, 50], [0, 0, 200, 100]])


def test_letterbox_with_a_stride_pads_only_to_the_next_multiple() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    canvas, fit = letterbox(frame, 416, 32)
    # 640x480 scales to 416x312, which pads to 416x320 (not 416x416): a quarter fewer pixels.
    assert canvas.shape == (320, 416, 3)
    assert (fit.scale, fit.pad_x, fit.pad_y) == (0.65, 0.0, 4.0)
    assert (canvas[:4] == 114).all()
    assert (canvas[316:] == 114).all()
    assert (canvas[4:316] == 0).all()
    back = fit.to_frame(np.array([[0.0, 4.0, 416.0, 316.0]]), 640, 480)
    np.testing.assert_allclose(back, [[0, 0, 640, 480]])


@pytest.mark.parametrize(
    ("width", "height", "stride", "expected"),
    [
        (640, 480, None, (416, 416)),
        (640, 480, 32, (416, 320)),
        (1360, 800, 32, (416, 256)),  # GTSDB photos: 416x245 scaled
        (480, 640, 32, (320, 416)),  # portrait
        (416, 416, 32, (416, 416)),
        (3000, 20, 32, (416, 32)),  # a sliver still gets one stride of height
    ],
)
def test_letterbox_shape(
    width: int, height: int, stride: int | None, expected: tuple[int, int]
) -> None:
    assert letterbox_shape(width, height, 416, stride) == expected
    canvas, _ = letterbox(np.zeros((height, width, 3), np.uint8), 416, stride)
    assert (canvas.shape[1], canvas.shape[0]) == expected


def test_nms_keeps_the_best_of_overlapping_boxes_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    keep = nms(boxes, np.array([0.6, 0.9, 0.5]), 0.45)
    assert keep.tolist() == [1, 2]


def test_decode_is_class_aware_and_drops_low_scores() -> None:
    output = np.zeros((4 + 2, 4), np.float32)
    output[:4, 0] = [10, 10, 10, 10]
    output[4, 0] = 0.9  # class 0
    output[:4, 1] = [10, 10, 10, 10]
    output[5, 1] = 0.8  # class 1, same place: kept
    output[:4, 2] = [11, 11, 10, 10]
    output[4, 2] = 0.7  # class 0 duplicate: suppressed
    output[:4, 3] = [50, 50, 4, 4]
    output[4, 3] = 0.1  # below threshold
    boxes, scores, classes = decode(output, 0.25, 0.45)
    assert classes.tolist() == [0, 1]
    np.testing.assert_allclose(boxes[0], [5, 5, 15, 15])
    np.testing.assert_allclose(scores, [0.9, 0.8])
    # Agnostic: the class-1 box in the same place is the same object, so it goes too.
    boxes, scores, classes = decode(output, 0.25, 0.45, agnostic=True)
    assert classes.tolist() == [0]


def test_agnostic_decode_drops_a_box_nested_in_a_better_one() -> None:
    output = np.zeros((4 + 2, 2), np.float32)
    output[:4, 0] = [20, 20, 10, 10]
    output[4, 0] = 0.9
    output[:4, 1] = [21, 21, 20, 20]  # contains the first (IoU 0.25), another class
    output[5, 1] = 0.3
    assert decode(output, 0.25, 0.45)[2].tolist() == [0, 1]
    assert decode(output, 0.25, 0.45, agnostic=True)[2].tolist() == [0]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_detector_returns_frame_boxes_with_categories(tmp_path: Path, backend: str) -> None:
    artifact = detector_sidecar(
        constant_detector_onnx(tmp_path / "d.onnx", 64, [(8, 24, 24, 40, 2)]), 64
    )
    detector = Detector.load(artifact, backend=backend)
    frame = np.zeros((100, 200, 3), np.uint8)  # letterboxed at scale 0.32, pad_y 16
    [found] = detector.detect(frame)
    assert found.category == "stop"
    assert found.score > 0.95
    np.testing.assert_allclose(found.box, (25, 25, 75, 75), atol=1e-3)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_detector_with_dynamic_input_runs_frames_at_their_own_aspect(
    tmp_path: Path, backend: str
) -> None:
    # 32 stride at 64: a 200x100 frame runs as 64x32 (scale 0.32, no padding), a 100x200 one
    # as 32x64; the same model, boxes mapped back from each.
    artifact = detector_sidecar(
        constant_detector_onnx(tmp_path / "d.onnx", 64, [(8, 8, 24, 24, 2)], dynamic=True),
        64,
        stride=32,
    )
    detector = Detector.load(artifact, backend=backend)
    [wide] = detector.detect(np.zeros((100, 200, 3), np.uint8))
    np.testing.assert_allclose(wide.box, (25, 25, 75, 75), atol=1e-3)
    [tall] = detector.detect(np.zeros((200, 100, 3), np.uint8))
    np.testing.assert_allclose(tall.box, (25, 25, 75, 75), atol=1e-3)
    # A static square model given the same frame pads it: the box lands 16 px lower.
    square = detector_sidecar(
        constant_detector_onnx(tmp_path / "s.onnx", 64, [(8, 8, 24, 24, 2)]), 64
    )
    [padded] = Detector.load(square, backend=backend).detect(np.zeros((100, 200, 3), np.uint8))
    np.testing.assert_allclose(padded.box, (25, 0, 75, 25), atol=1e-3)


def test_detector_refuses_classifiers_and_mismatched_labels(tmp_path: Path) -> None:
    artifact = constant_detector_onnx(tmp_path / "d.onnx", 64, [(8, 8, 24, 24, 0)])

    class Unused:
        @property
        def output_names(self) -> list[str]:
            return ["output0"]

        def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            raise AssertionError("never run")

    with pytest.raises(ModelError, match="is a classifier"):
        Detector(
            Unused(),
            ModelMetadata(
                name="x",
                version="1",
                task="classifier",
                format="onnx_fp32",
                artifact="d.onnx",
                sha256="0" * 64,
                input_size=64,
                outputs={"boxes": CATEGORIES},
            ),
        )
    detector_sidecar(artifact, 64)
    sidecar = artifact.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"stop"', '"stop", "extra"'))
    detector = Detector.load(artifact, backend="onnxruntime")
    with pytest.raises(ModelError, match="output has 3 classes, the sidecar names 4"):
        detector.detect(np.zeros((64, 64, 3), np.uint8))
