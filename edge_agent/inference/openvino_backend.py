"""OpenVINO backend: runs OpenVINO IR (``.xml`` + ``.bin``) or ``.onnx`` artifacts on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from edge_agent.exceptions import InferenceError, ModelError


class OpenVinoModel:
    """A model compiled for the CPU plugin, with one image input."""

    def __init__(self, compiled: ov.CompiledModel) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        self._outputs = [port.get_any_name() for port in compiled.outputs]
        self._input_shape = compiled.inputs[0].get_partial_shape()

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in the model's order."""
        return list(self._outputs)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; outputs by name."""
        # OpenVINO may run a batch whose static dimensions do not fit; refuse it here instead.
        if not self._input_shape.compatible(ov.PartialShape(list(batch.shape))):
            raise InferenceError(
                f"OpenVINO failed on a {batch.shape} batch: the model takes {self._input_shape}"
            )
        try:
            results = self._request.infer({0: batch})
        except RuntimeError as e:
            raise InferenceError(f"OpenVINO failed on a {batch.shape} batch: {e}") from e
        return {
            name: np.asarray(results[port])
            for name, port in zip(self._outputs, self._compiled.outputs, strict=True)
        }


class OpenVinoBackend:
    """Loads artifacts with OpenVINO's CPU plugin, tuned for latency."""

    name = "openvino"

    def load(self, artifact: Path, *, threads: int) -> OpenVinoModel:
        """Read and compile `artifact` for `threads` inference threads."""
        core = ov.Core()
        try:
            model = core.read_model(str(artifact))
            compiled = core.compile_model(
                model,
                "CPU",
                {
                    "INFERENCE_NUM_THREADS": threads,
                    "PERFORMANCE_HINT": "LATENCY",
                    # CPUs with bf16 units would otherwise run FP32 models in bf16: keep FP32
                    # models at the precision they were scored at; INT8 models are the fast path.
                    "INFERENCE_PRECISION_HINT": "f32",
                },
            )
        except RuntimeError as e:
            raise ModelError(f"OpenVINO cannot load {artifact}: {e}") from e
        return OpenVinoModel(compiled)
