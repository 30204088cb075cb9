"""Export of the trained detector: ONNX FP32 and INT8, OpenVINO FP32 and INT8, with sidecars.

All four come from one ONNX FP32 graph (ultralytics' exporter, simplified by onnxslim), so they
differ only in precision. The graph takes any input height and width that are multiples of the
model's stride (its anchors are computed from the input's shape), so a device letterboxes a 4:3
frame to 416x320 instead of padding it to 416x416: a quarter fewer pixels to run.

INT8 is static, calibrated on training scenes letterboxed exactly as the agent letterboxes
frames, never on validation or test images. The Detect head stays in float in both INT8 models:
its concatenated output mixes box coordinates (hundreds of pixels) with class scores (0-1), and
one uint8 scale for both zeroes every score. Only the head's box branches are quantised: their
3x3 convolutions are 64 channels wide at every level, the costliest layers of the network (half
the detector's time at 416x320 while the whole head was float); the class branches, whose
outputs become the scores, cost accuracy when quantised and stay float (`stays_float`).
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bundle import ModelFormat, ModelMetadata, file_sha256, write_metadata
from edge_agent.detection import letterbox
from edge_agent.reading.crops import to_batch
from training.data.categories import CATEGORIES
from training.data.sign_art import load_rgb
from training.detector.offline import disable_integrations, prepare_ultralytics
from training.exceptions import TrainingError

DETECTOR_NAME = "roadsign-detector"
OPSET = 17
ARTIFACTS: dict[ModelFormat, str] = {
    "onnx_fp32": "model.onnx",
    "onnx_int8": "model.onnx",
    "openvino_fp32": "model.xml",
    "openvino_int8": "model.xml",
}


class ExportError(TrainingError):
    """An export step failed."""


def calibration_batches(
    images: Sequence[Path], size: int, stride: int | None = None
) -> list[np.ndarray]:
    """Training images as 1 x 3 x H x W float batches, letterboxed like live frames."""
    batches = []
    for path in images:
        canvas, _ = letterbox(load_rgb(path), size, stride)
        # The detector sidecars keep the default pixel scale, so the agent scales by it too.
        batches.append(to_batch([canvas], ModelMetadata.model_fields["scale"].default))
    if not batches:
        raise ExportError("INT8 calibration needs at least one training image")
    return batches


def export_onnx_fp32(weights: Path, out_dir: Path, *, imgsz: int, work_dir: Path) -> Path:
    """ONNX FP32, any input height and width, from ultralytics weights: ``out_dir/model.onnx``."""
    prepare_ultralytics(work_dir / ".ultralytics")
    from torch.jit._trace import TracerWarning
    from ultralytics import YOLO

    disable_integrations(work_dir)

    try:
        with warnings.catch_warnings():
            # Ultralytics uses torch's TorchScript exporter, deprecated upstream but still the
            # one whose graphs every device runtime reads.
            warnings.simplefilter("ignore", DeprecationWarning)
            # Tracing warns where the head compares shapes; ultralytics silences it only by a
            # filter set when it is first imported, which an earlier catch_warnings may undo.
            warnings.simplefilter("ignore", TracerWarning)
            exported = YOLO(str(weights), task="detect").export(
                format="onnx",
                imgsz=imgsz,
                dynamic=True,
                simplify=True,
                opset=OPSET,
                batch=1,
                device="cpu",
                verbose=False,
            )
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"ONNX export of {weights} failed: {e}") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.onnx"
    shutil.move(str(exported), target)
    return target


def onnx_stride(onnx_path: Path) -> int:
    """The largest stride of the exported model, from the metadata ultralytics writes."""
    import onnx

    props = {
        p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props
    }
    try:
        return int(props["stride"])
    except (KeyError, ValueError) as e:
        raise ExportError(f"{onnx_path}: no stride in the model's metadata") from e


def stays_float(name: str, scope: str) -> bool:
    """Whether the graph node `name` stays float when the detector is quantised.

    Everything in the Detect head `scope` does, except the two 3x3 convolution blocks of each
    box branch (``cv2.<level>.0`` and ``.1``, with their activations). Quantising them too
    keeps the synthetic validation mAP50 and the real photos read (0.673 and 12 of 17 for
    OpenVINO, as with the whole head float); quantising the class branches' blocks as well
    loses 2-3 points and up to 6 of the photos.
    """
    if not name.startswith(scope):
        return False
    return re.match(rf"{re.escape(scope)}cv2\.\d+/cv2\.\d+\.[01]/", name) is None


def head_scope(onnx_path: Path) -> str:
    """Name prefix of the Detect head's nodes (``/model.22/``): the last Sigmoid's scope."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    sigmoids = [node.name for node in graph.node if node.op_type == "Sigmoid"]
    if not sigmoids or not sigmoids[-1].startswith("/"):
        raise ExportError(f"{onnx_path}: no Detect head found (no scoped Sigmoid node)")
    return "/" + str(sigmoids[-1]).split("/")[1] + "/"


def quantize_onnx_int8(fp32: Path, out_dir: Path, calibration: Sequence[np.ndarray]) -> Path:
    """Static INT8 (QDQ, per-channel weights) of everything but the Detect head."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    scope = head_scope(fp32)
    graph = onnx.load(str(fp32)).graph
    input_name = graph.input[0].name
    excluded = [node.name for node in graph.node if stays_float(node.name, scope)]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "model.onnx"
    try:
        quantize_static(
            str(fp32),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=excluded,
            # Each activation's range is the mean of its per-image ranges, not the most extreme
            # image's: one outlier scene no longer coarsens the steps for all the rest (on the
            # default set's validation scenes: a 0.5-point mAP50 drop against 1.6 points).
            extra_options={"CalibMovingAverage": True},
        )
    except Exception as e:
        raise ExportError(f"ONNX INT8 quantisation of {fp32} failed: {e}") from e
    return target


def _openvino_float_ops(model: Any, scope: str) -> list[str]:
    return [
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if stays_float(op.get_friendly_name(), scope)
    ]


def export_openvino(
    fp32: Path, out_dir: Path, *, calibration: Sequence[np.ndarray] | None = None
) -> Path:
    """OpenVINO IR from the ONNX FP32 graph: FP32, or INT8 through NNCF with `calibration`."""
    import openvino as ov

    try:
        model = ov.convert_model(str(fp32))
        if calibration is not None:
            import nncf

            model = nncf.quantize(
                model,
                nncf.Dataset(list(calibration)),
                preset=nncf.QuantizationPreset.MIXED,
                subset_size=len(calibration),
                ignored_scope=nncf.IgnoredScope(names=_openvino_float_ops(model, head_scope(fp32))),
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / "model.xml"
        ov.save_model(model, str(target), compress_to_fp16=False)
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"OpenVINO export of {fp32} failed: {e}") from e
    return target


def write_detector_sidecar(
    artifact: Path,
    model_format: ModelFormat,
    *,
    imgsz: int,
    stride: int | None,
    version: str,
    run_id: str | None,
) -> Path:
    """Write the sidecar of a detector artifact (with its .bin for OpenVINO IR)."""
    companions = {}
    if artifact.suffix == ".xml":
        weights = artifact.with_suffix(".bin")
        companions[weights.name] = file_sha256(weights)
    return write_metadata(
        ModelMetadata(
            name=DETECTOR_NAME,
            version=version,
            task="detector",
            format=model_format,
            artifact=artifact.name,
            sha256=file_sha256(artifact),
            input_size=imgsz,
            stride=stride,
            outputs={"boxes": [c.value for c in CATEGORIES]},
            companions=companions,
            source_run_id=run_id,
        ),
        artifact.parent,
    )


def export_all(
    weights: Path,
    out_dir: Path,
    *,
    imgsz: int,
    calibration_images: Sequence[Path],
    version: str,
    run_id: str | None,
    work_dir: Path,
) -> dict[ModelFormat, Path]:
    """All four artifacts, each in ``out_dir/<format>/`` with its sidecar."""
    fp32 = export_onnx_fp32(weights, out_dir / "onnx_fp32", imgsz=imgsz, work_dir=work_dir)
    stride = onnx_stride(fp32)
    calibration = calibration_batches(calibration_images, imgsz, stride)
    artifacts: dict[ModelFormat, Path] = {
        "onnx_fp32": fp32,
        "onnx_int8": quantize_onnx_int8(fp32, out_dir / "onnx_int8", calibration),
        "openvino_fp32": export_openvino(fp32, out_dir / "openvino_fp32"),
        "openvino_int8": export_openvino(fp32, out_dir / "openvino_int8", calibration=calibration),
    }
    for model_format, artifact in artifacts.items():
        write_detector_sidecar(
            artifact, model_format, imgsz=imgsz, stride=stride, version=version, run_id=run_id
        )
    return artifacts
