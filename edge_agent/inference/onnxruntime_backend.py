"""ONNX Runtime backend: runs ``.onnx`` artifacts on the CPU (or a provider the build has)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_agent.exceptions import InferenceError, ModelError


class OnnxRuntimeModel:
    """An ONNX Runtime session with one image input."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self._session = session
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in the model's order."""
        return list(self._outputs)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; outputs by name."""
        try:
            values = self._session.run(self._outputs, {self._input: batch})
        except Exception as e:
            raise InferenceError(f"ONNX Runtime failed on a {batch.shape} batch: {e}") from e
        return dict(zip(self._outputs, (np.asarray(v) for v in values), strict=True))


class OnnxRuntimeBackend:
    """Loads artifacts with ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self._providers = list(providers)

    def load(self, artifact: Path, *, threads: int) -> OnnxRuntimeModel:
        """Load `artifact` with `threads` intra-op threads on the first available provider."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = set(ort.get_available_providers())
        providers = [p for p in self._providers if p in available] or ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(artifact), options, providers=providers)
        except Exception as e:
            raise ModelError(f"ONNX Runtime cannot load {artifact}: {e}") from e
        return OnnxRuntimeModel(session)
