"""Model artifacts and their metadata sidecars: what a device needs to run a model correctly.

Every artifact (``model.onnx``, or OpenVINO's ``model.xml`` with its ``.bin``) has a sidecar
``<artifact stem>.json`` beside it: the task, the format, the input size and pre-processing, the
labels of each output, the sha256 of the artifact's bytes and the training run it came from.
`load_metadata` refuses an artifact whose bytes do not match its sidecar, so a corrupt or
half-copied model never runs. `shipped_bundle` is the bundle the agent package carries.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.exceptions import ModelError

ModelFormat = Literal["onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8"]
_CHUNK = 1 << 20


class ModelMetadata(BaseModel):
    """The sidecar of one model artifact."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Model name, e.g. roadsign-classifier.")
    version: str = Field(description="Model version as registered.")
    task: Literal["detector", "classifier"] = Field(description="What the model does.")
    format: ModelFormat = Field(description="Runtime format and precision.")
    artifact: str = Field(description="File name of the artifact, beside this sidecar.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the artifact's bytes.")
    input_size: int = Field(
        ge=8, le=4096, description="Square input side, or the longer side's most, pixels."
    )
    stride: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description=(
            "Detector: the input's height and width may each be any multiple of this, up to "
            "input_size, and frames are letterboxed to the smallest such rectangle (a 4:3 "
            "frame at 416 runs as 416x320, not 416x416). None: the input is input_size square."
        ),
    )
    input_name: str = Field(default="images", description="Name of the input tensor.")
    layout: Literal["NCHW"] = Field(default="NCHW", description="Input tensor layout.")
    colour: Literal["RGB"] = Field(default="RGB", description="Channel order of the input.")
    scale: float = Field(default=1 / 255, description="Pixels are multiplied by this.")
    crop_margin: float = Field(
        default=0.1, ge=0, le=1, description="Classifier: box is widened by this share per side."
    )
    outputs: dict[str, list[str]] = Field(
        description="Labels of each output, by output name, in index order."
    )
    companions: dict[str, str] = Field(
        default_factory=dict,
        description="Other files the artifact needs (OpenVINO's .bin), by name, with sha256.",
    )
    source_run_id: str | None = Field(default=None, description="Training run it came from.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Measured quality.")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(artifact: Path) -> Path:
    """Where the sidecar of `artifact` lives."""
    return artifact.with_suffix(".json")


def write_metadata(metadata: ModelMetadata, directory: Path) -> Path:
    """Write the sidecar of ``directory / metadata.artifact``."""
    path = sidecar_path(directory / metadata.artifact)
    path.write_text(json.dumps(metadata.model_dump(mode="json"), indent=2) + "\n")
    return path


def load_metadata(artifact: Path, *, verify: bool = True) -> ModelMetadata:
    """Read the sidecar of `artifact` and, unless told not to, check the artifact's sha256."""
    sidecar = sidecar_path(artifact)
    try:
        metadata = ModelMetadata.model_validate_json(sidecar.read_bytes())
    except OSError as e:
        raise ModelError(f"model {artifact}: no readable sidecar {sidecar.name}: {e}") from e
    except ValidationError as e:
        raise ModelError(f"model {artifact}: invalid sidecar {sidecar.name}: {e}") from e
    if metadata.artifact != artifact.name:
        raise ModelError(f"sidecar {sidecar} describes {metadata.artifact}, not {artifact.name}")
    if verify:
        files = {artifact.name: metadata.sha256, **metadata.companions}
        for name, expected in files.items():
            path = artifact.parent / name
            try:
                actual = file_sha256(path)
            except OSError as e:
                raise ModelError(f"model {artifact}: {name} cannot be read: {e}") from e
            if actual != expected:
                raise ModelError(
                    f"model {artifact} fails its checksum: {name} has sha256 {actual[:12]}... "
                    f"but the sidecar says {expected[:12]}...; refusing to run it"
                )
    return metadata


BUNDLE_INDEX = "bundle.json"
SHIPPED_BUNDLE = "shipped_bundle"
"""The package-data folder of the shipped bundle: in the repository a link to models/default."""


def shipped_bundle() -> Path:
    """The model bundle shipped inside the agent package, found without the working directory.

    ``roadsign-agent predict`` and a profile that names no ``detector.model_dir`` use it, from
    any directory, in a source checkout and in an installed wheel alike.
    """
    package = resources.files("edge_agent")
    if not isinstance(package, Path):  # zip imports: the runtimes need files on disk
        raise ModelError(f"the agent package is not on disk ({package}); no shipped bundle")
    return package / SHIPPED_BUNDLE


_PREFERENCE: dict[str, tuple[ModelFormat, ...]] = {
    "openvino": ("openvino_int8", "openvino_fp32", "onnx_int8", "onnx_fp32"),
    "onnxruntime": ("onnx_int8", "onnx_fp32"),
}


class BundleIndex(BaseModel):
    """``bundle.json``: the artifacts of a model bundle, by role and format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Bundle name, e.g. roadsign-default.")
    version: str = Field(description="Bundle version.")
    detector: dict[ModelFormat, str] = Field(
        description="Detector artifact of each format, relative to the bundle folder."
    )
    classifier: str = Field(description="Classifier artifact, relative to the bundle folder.")


def load_bundle(directory: Path) -> BundleIndex:
    """The index of the bundle in `directory`."""
    path = directory / BUNDLE_INDEX
    try:
        return BundleIndex.model_validate_json(path.read_bytes())
    except OSError as e:
        raise ModelError(f"no model bundle at {directory}: {e}") from e
    except ValidationError as e:
        raise ModelError(f"invalid {path}: {e}") from e


def pick_detector(
    directory: Path, index: BundleIndex, backend: str, model_format: str = "auto"
) -> tuple[Path, ModelFormat]:
    """The detector artifact to run on `backend`: the asked format, or its best available."""
    if model_format != "auto":
        if model_format not in index.detector:
            raise ModelError(f"bundle {index.name} has no {model_format} detector")
        chosen: ModelFormat = model_format
    else:
        options = [f for f in _PREFERENCE[backend] if f in index.detector]
        if not options:
            raise ModelError(f"bundle {index.name} has no detector that {backend} can run")
        chosen = options[0]
    if backend == "onnxruntime" and chosen.startswith("openvino"):
        raise ModelError(f"{chosen} is OpenVINO IR, which onnxruntime cannot load")
    return directory / index.detector[chosen], chosen
