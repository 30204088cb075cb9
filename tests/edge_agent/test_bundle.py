"""Model sidecars: a model runs only when its bytes match the sidecar that describes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edge_agent
from edge_agent.bundle import load_bundle, load_metadata, shipped_bundle, sidecar_path
from edge_agent.exceptions import ModelError
from edge_agent.profile import DeviceProfile
from tests.edge_agent.conftest import tiny_classifier_bundle


def test_verified_sidecar_describes_its_artifact(tmp_path: Path) -> None:
    artifact = tiny_classifier_bundle(tmp_path)
    metadata = load_metadata(artifact)
    assert (metadata.task, metadata.format, metadata.input_size) == ("classifier", "onnx_fp32", 8)
    assert metadata.outputs["speed"] == ["none", "30", "50"]


def test_a_changed_byte_is_refused(tmp_path: Path) -> None:
    artifact = tiny_classifier_bundle(tmp_path)
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 1
    artifact.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"fails its checksum.*refusing to run it"):
        load_metadata(artifact)
    assert load_metadata(artifact, verify=False).name == "tiny"


def test_missing_invalid_or_foreign_sidecars_are_refused(tmp_path: Path) -> None:
    artifact = tiny_classifier_bundle(tmp_path)
    sidecar = sidecar_path(artifact)
    content = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**content, "colour": "BGR"}))
    with pytest.raises(ModelError, match="invalid sidecar"):
        load_metadata(artifact)
    sidecar.write_text(json.dumps({**content, "artifact": "other.onnx"}))
    with pytest.raises(ModelError, match=r"describes other\.onnx"):
        load_metadata(artifact)
    sidecar.unlink()
    with pytest.raises(ModelError, match="no readable sidecar"):
        load_metadata(artifact)
    sidecar.write_text(json.dumps(content))
    artifact.unlink()
    with pytest.raises(ModelError, match=r"classifier\.onnx cannot be read"):
        load_metadata(artifact)


def test_bundle_index_picks_the_best_format_each_runtime_can_run(tmp_path: Path) -> None:
    from edge_agent.bundle import BUNDLE_INDEX, load_bundle, pick_detector

    (tmp_path / BUNDLE_INDEX).write_text(
        json.dumps(
            {
                "name": "b",
                "version": "1",
                "classifier": "c.onnx",
                "detector": {
                    "onnx_int8": "d/o8.onnx",
                    "openvino_int8": "d/v8.xml",
                    "onnx_fp32": "d/o32.onnx",
                },
            }
        )
    )
    index = load_bundle(tmp_path)
    assert pick_detector(tmp_path, index, "openvino") == (tmp_path / "d/v8.xml", "openvino_int8")
    assert pick_detector(tmp_path, index, "onnxruntime") == (tmp_path / "d/o8.onnx", "onnx_int8")
    assert pick_detector(tmp_path, index, "openvino", "onnx_fp32")[1] == "onnx_fp32"
    with pytest.raises(ModelError, match="onnxruntime cannot load"):
        pick_detector(tmp_path, index, "onnxruntime", "openvino_int8")
    with pytest.raises(ModelError, match="no openvino_fp32 detector"):
        pick_detector(tmp_path, index, "openvino", "openvino_fp32")
    only_ir = index.model_copy(update={"detector": {"openvino_int8": "d/v8.xml"}})
    with pytest.raises(ModelError, match="no detector that onnxruntime can run"):
        pick_detector(tmp_path, only_ir, "onnxruntime")


def test_missing_or_invalid_bundle_index_is_refused(tmp_path: Path) -> None:
    from edge_agent.bundle import BUNDLE_INDEX, load_bundle

    with pytest.raises(ModelError, match="no model bundle"):
        load_bundle(tmp_path)
    (tmp_path / BUNDLE_INDEX).write_text('{"name": "b"}')
    with pytest.raises(ModelError, match="invalid"):
        load_bundle(tmp_path)


def test_the_shipped_bundle_is_package_data_and_the_default_model_dir() -> None:
    bundle = shipped_bundle()
    assert bundle.parent == Path(edge_agent.__file__).parent  # inside the package, not the cwd
    assert bundle.is_absolute()
    index = load_bundle(bundle)
    assert (bundle / index.classifier).is_file()
    assert all((bundle / artifact).is_file() for artifact in index.detector.values())
    assert DeviceProfile().detector.model_dir == bundle
