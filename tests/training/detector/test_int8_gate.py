"""The INT8 gate: a quantised detector that lost its scores is refused before registration."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from tests.edge_agent.conftest import constant_detector_onnx, detector_sidecar
from tests.training.data.conftest import write_image
from training.data.records import Box, LabeledImage
from training.detector.evaluate import Int8GateError, check_int8_gate, int8_drops, score_exports
from training.detector.export import (
    calibration_batches,
    export_openvino,
    head_scope,
    quantize_onnx_int8,
    stays_float,
)

SIZE = 640  # box coordinates of hundreds of pixels, as at deployment


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, list[LabeledImage], list[Path]]:
    image = write_image(tmp_path / "val" / "scene.png", SIZE, SIZE)
    truth = [LabeledImage(image, SIZE, SIZE, (Box(80, 80, 240, 240, "prohibitory"),), "s")]
    fp32 = constant_detector_onnx(
        tmp_path / "onnx_fp32" / "model.onnx", SIZE, [(80, 80, 240, 240, 0)]
    )
    calibration = [
        write_image(tmp_path / "train" / f"{i}.png", SIZE, SIZE, seed=i) for i in range(4)
    ]
    return fp32, truth, calibration


def test_head_scope_is_found(scene: tuple[Path, list[LabeledImage], list[Path]]) -> None:
    assert head_scope(scene[0]) == "/model.22/"


@pytest.mark.parametrize(
    ("name", "float_"),
    [
        ("/model.21/cv1/conv/Conv", False),  # the network before the head
        ("/model.22/cv2.0/cv2.0.0/conv/Conv", False),  # box branch 3x3 blocks: quantised
        ("/model.22/cv2.2/cv2.2.1/act/Mul", False),
        ("/model.22/cv2.0/cv2.0.2/Conv/WithoutBiases", True),  # the branch's output conv
        ("/model.22/cv3.1/cv3.1.0/conv/Conv", True),  # class branches
        ("/model.22/dfl/conv/Conv", True),
        ("/model.22/Concat_7", True),  # boxes and scores in one tensor
        ("/model.22/Sigmoid", True),
    ],
)
def test_only_the_heads_box_branch_blocks_are_quantised(name: str, float_: bool) -> None:
    assert stays_float(name, "/model.22/") is float_


def test_int8_that_keeps_the_head_in_float_passes_and_one_that_does_not_is_refused(
    tmp_path: Path, scene: tuple[Path, list[LabeledImage], list[Path]]
) -> None:
    fp32, truth, calibration_images = scene
    batches = calibration_batches(calibration_images, SIZE)
    good = quantize_onnx_int8(fp32, tmp_path / "onnx_int8", batches)
    broken = tmp_path / "broken" / "model.onnx"
    broken.parent.mkdir()

    class Reader:
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self) -> dict[str, object] | None:
            item = next(self.items, None)
            return None if item is None else {"images": item}

    # Deliberately broken: the head's concat of pixel boxes and 0-1 scores shares one scale.
    quantize_static(
        str(fp32),
        str(broken),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    ov_fp32 = export_openvino(fp32, tmp_path / "openvino_fp32")
    ov_int8 = export_openvino(fp32, tmp_path / "openvino_int8", calibration=batches)
    artifacts = {
        "onnx_fp32": fp32,
        "onnx_int8": good,
        "openvino_fp32": ov_fp32,
        "openvino_int8": ov_int8,
    }
    for fmt, artifact in artifacts.items():
        detector_sidecar(artifact, SIZE, fmt)
    scores = score_exports(artifacts, truth, threads=1)  # type: ignore[arg-type]
    assert scores["onnx_fp32"].map50 == pytest.approx(1.0)
    drops = int8_drops(scores)
    assert drops == {
        "int8_map50_drop_onnx": pytest.approx(0.0),
        "int8_map50_drop_openvino": pytest.approx(0.0),
    }
    check_int8_gate(drops, 1.5)

    detector_sidecar(broken, SIZE, "onnx_int8")
    broken_scores = score_exports({"onnx_fp32": fp32, "onnx_int8": broken}, truth, threads=1)
    broken_drops = int8_drops(broken_scores)
    assert broken_drops["int8_map50_drop_onnx"] == pytest.approx(100.0)
    with pytest.raises(Int8GateError, match=r"int8_map50_drop_onnx = 100\.00 points"):
        check_int8_gate(broken_drops, 1.5)
