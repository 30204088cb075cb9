"""Both inference backends load a real ONNX model, agree on its outputs, and refuse junk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.exceptions import InferenceError, ModelError
from edge_agent.inference import get_backend, resolve_backend_name
from edge_agent.inference.openvino_backend import MAX_IMAGE_SIZES, OpenVinoModel
from tests.edge_agent.conftest import (
    SIGNS,
    constant_detector_onnx,
    missing_onnx_provider,
    tiny_classifier_onnx,
)


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "openvino"),
        ("AMD64", "openvino"),
        ("aarch64", "onnxruntime"),
        ("armv7l", "onnxruntime"),
    ],
)
def test_auto_picks_openvino_on_x86_and_onnxruntime_elsewhere(machine: str, expected: str) -> None:
    assert resolve_backend_name("auto", machine) == expected


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ModelError, match="unknown inference backend 'tensorrt'"):
        resolve_backend_name("tensorrt")


def test_backends_agree_on_a_real_model(tmp_path: Path) -> None:
    artifact = tiny_classifier_onnx(tmp_path / "m.onnx")
    batch = np.random.default_rng(1).random((5, 3, 8, 8), dtype=np.float32)
    results = {}
    for name in ("onnxruntime", "openvino"):
        model = get_backend(name).load(artifact, threads=1)
        assert set(model.output_names) == {"sign", "speed"}
        results[name] = model.infer(batch)
        assert results[name]["sign"].shape == (5, len(SIGNS))
    for output in ("sign", "speed"):
        np.testing.assert_allclose(
            results["onnxruntime"][output], results["openvino"][output], rtol=1e-4, atol=1e-5
        )


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_a_broken_artifact_is_a_model_error(tmp_path: Path, name: str) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01garbage")
    with pytest.raises(ModelError, match="cannot load"):
        get_backend(name).load(junk, threads=1)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_a_wrong_input_is_an_inference_error(tmp_path: Path, name: str) -> None:
    model = get_backend(name).load(tiny_classifier_onnx(tmp_path / "m.onnx"), threads=1)
    with pytest.raises(InferenceError, match="failed on a"):
        model.infer(np.zeros((1, 4, 8, 8), np.float32))


def test_openvino_compiles_a_dynamic_model_once_per_image_size(tmp_path: Path) -> None:
    artifact = constant_detector_onnx(tmp_path / "d.onnx", 64, [(8, 8, 24, 24, 0)], dynamic=True)
    model = get_backend("openvino").load(artifact, threads=1)
    assert isinstance(model, OpenVinoModel)
    reference = get_backend("onnxruntime").load(artifact, threads=1)
    sizes = [(32, 64), (64, 32), (32, 64), *((32 * (i + 3), 32) for i in range(MAX_IMAGE_SIZES))]
    for height, width in sizes:
        batch = np.random.default_rng(height).random((1, 3, height, width), dtype=np.float32)
        np.testing.assert_allclose(
            model.infer(batch)["output0"], reference.infer(batch)["output0"], atol=1e-5
        )
    # Each size compiled once (the repeat reused its compilation); the oldest gave way.
    assert model.compiled_sizes == [(32 * (i + 3), 32) for i in range(MAX_IMAGE_SIZES)]


def test_openvino_keeps_a_dynamic_batch_in_one_compilation(tmp_path: Path) -> None:
    model = get_backend("openvino").load(tiny_classifier_onnx(tmp_path / "m.onnx"), threads=1)
    assert isinstance(model, OpenVinoModel)
    for crops in (1, 3, 7):
        assert model.infer(np.zeros((crops, 3, 8, 8), np.float32))["sign"].shape[0] == crops
    assert model.compiled_sizes == []


def test_onnxruntime_skips_a_preferred_provider_it_lacks_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from edge_agent.inference.onnxruntime_backend import OnnxRuntimeModel

    missing = missing_onnx_provider()
    backend = get_backend("onnxruntime", execution_providers=[missing, "CPUExecutionProvider"])
    model = backend.load(tiny_classifier_onnx(tmp_path / "m.onnx"), threads=1)
    assert isinstance(model, OnnxRuntimeModel)
    assert model.providers == ["CPUExecutionProvider"]
    assert f"lacks ['{missing}']" in caplog.text
    assert "detector.execution_providers" in caplog.text
