"""Export of the trained classifier to ONNX, with the sidecar every deployed artifact carries."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from edge_agent.bundle import ModelMetadata, file_sha256, write_metadata
from training.classifier.labels import SIGN_LABELS, SPEED_LABELS
from training.classifier.model import SignClassifier
from training.exceptions import TrainingError

CLASSIFIER_NAME = "roadsign-classifier"
OPSET = 17


def export_onnx(
    model: SignClassifier,
    out_dir: Path,
    *,
    input_size: int,
    crop_margin: float,
    version: str,
    run_id: str | None,
) -> Path:
    """Write ``classifier.onnx`` (dynamic batch) and its sidecar into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    artifact = out_dir / "classifier.onnx"
    dummy = torch.zeros(1, 3, input_size, input_size)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated upstream but needs no onnxscript, and its
            # graphs run on every ONNX Runtime and OpenVINO version a device may carry.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model.eval(),
                (dummy,),
                str(artifact),
                dynamo=False,
                opset_version=OPSET,
                input_names=["images"],
                output_names=["sign", "speed"],
                dynamic_axes={"images": {0: "batch"}, "sign": {0: "batch"}, "speed": {0: "batch"}},
            )
    except (RuntimeError, torch.onnx.OnnxExporterError) as e:
        raise TrainingError(f"ONNX export of the classifier failed: {e}") from e
    write_metadata(
        ModelMetadata(
            name=CLASSIFIER_NAME,
            version=version,
            task="classifier",
            format="onnx_fp32",
            artifact=artifact.name,
            sha256=file_sha256(artifact),
            input_size=input_size,
            crop_margin=crop_margin,
            outputs={"sign": list(SIGN_LABELS), "speed": list(SPEED_LABELS)},
            source_run_id=run_id,
        ),
        out_dir,
    )
    return artifact
