"""OpenVINO backend: runs OpenVINO IR (``.xml`` + ``.bin``) or ``.onnx`` artifacts on the CPU.

A model whose input height and width are dynamic (a detector exported to take any frame shape)
is compiled once as it is, so a broken artifact fails at load, and then once more per image size
it meets, reshaped to that height and width: OpenVINO's CPU plugin runs a graph of known spatial
size faster, and a camera sends one frame size all its life. The batch dimension stays as the
model has it, so a classifier's varying number of crops never causes a recompilation.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from edge_agent.exceptions import InferenceError, ModelError

# Image sizes compiled per model: a camera needs one; `predict` over mixed photos a few.
MAX_IMAGE_SIZES = 4


class OpenVinoModel:
    """A model compiled for the CPU plugin, with one image input (N, C, H, W)."""

    def __init__(self, core: ov.Core, model: ov.Model, config: dict[str, Any]) -> None:
        self._core, self._model, self._config = core, model, config
        self._input_shape = model.inputs[0].get_partial_shape()
        try:
            compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise ModelError(f"compilation failed: {e}") from e
        self._outputs = [port.get_any_name() for port in compiled.outputs]
        spatial = list(self._input_shape)[2:]
        self._by_size = len(spatial) == 2 and any(d.is_dynamic for d in spatial)
        self._sized: OrderedDict[tuple[int, int], Any] = OrderedDict()
        # A model compiled per image size needs the dynamic compilation only as a load check.
        self._request = None if self._by_size else compiled.create_infer_request()

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in the model's order."""
        return list(self._outputs)

    @property
    def compiled_sizes(self) -> list[tuple[int, int]]:
        """The (height, width) sizes compiled for so far, most recently used last."""
        return list(self._sized)

    def _request_for(self, shape: tuple[int, ...]) -> Any:
        if self._request is not None:
            return self._request
        size = (shape[2], shape[3])
        request = self._sized.get(size)
        if request is not None:
            self._sized.move_to_end(size)
            return request
        fixed = ov.PartialShape(self._input_shape)
        fixed[2], fixed[3] = ov.Dimension(size[0]), ov.Dimension(size[1])
        reshaped = self._model.clone()
        try:
            reshaped.reshape({0: fixed})
            compiled = self._core.compile_model(reshaped, "CPU", self._config)
        except RuntimeError as e:
            raise InferenceError(f"OpenVINO failed on a {shape} batch: {e}") from e
        if len(self._sized) >= MAX_IMAGE_SIZES:
            self._sized.popitem(last=False)
        self._sized[size] = request = compiled.create_infer_request()
        return request

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; outputs by name."""
        # OpenVINO may run a batch whose static dimensions do not fit; refuse it here instead.
        if not self._input_shape.compatible(ov.PartialShape(list(batch.shape))):
            raise InferenceError(
                f"OpenVINO failed on a {batch.shape} batch: the model takes {self._input_shape}"
            )
        request = self._request_for(tuple(batch.shape))
        try:
            # Shared, not copied: the batch is ours and outlives this call. (Once a request has
            # taken shared input it must keep doing so: its tensor is then the caller's.)
            results = request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
        except RuntimeError as e:
            raise InferenceError(f"OpenVINO failed on a {batch.shape} batch: {e}") from e
        return {
            name: np.asarray(results[port])
            for name, port in zip(self._outputs, request.model_outputs, strict=True)
        }


class OpenVinoBackend:
    """Loads artifacts with OpenVINO's CPU plugin, tuned for latency."""

    name = "openvino"

    def load(self, artifact: Path, *, threads: int) -> OpenVinoModel:
        """Read and compile `artifact` for `threads` inference threads."""
        core = ov.Core()
        try:
            model = core.read_model(str(artifact))
        except RuntimeError as e:
            raise ModelError(f"OpenVINO cannot load {artifact}: {e}") from e
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # CPUs with bf16 units would otherwise run FP32 models in bf16: keep FP32
            # models at the precision they were scored at; INT8 models are the fast path.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        try:
            return OpenVinoModel(core, model, config)
        except ModelError as e:
            raise ModelError(f"OpenVINO cannot load {artifact}: {e}") from e
