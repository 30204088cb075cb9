"""ONNX Runtime backend: runs ``.onnx`` artifacts on the execution providers a profile prefers.

`detector.execution_providers` is a preference list: the providers this build of ONNX Runtime
has are used in that order, the ones it lacks are skipped with a warning (a Jetson profile lists
TensorRT, CUDA, then the CPU, and runs on whichever the installed wheel brings), and a list of
which it has none is refused, naming the field, rather than run on a provider nobody chose.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_agent.exceptions import InferenceError, ModelError

log = logging.getLogger(__name__)


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

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, in priority order."""
        return list(self._session.get_providers())

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch; outputs by name."""
        try:
            values = self._session.run(self._outputs, {self._input: batch})
        except Exception as e:
            raise InferenceError(f"ONNX Runtime failed on a {batch.shape} batch: {e}") from e
        return dict(zip(self._outputs, (np.asarray(v) for v in values), strict=True))


def usable_providers(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The `wanted` providers this build has, in the order wanted; `ModelError` if none."""
    usable = [p for p in wanted if p in available]
    if not usable:
        raise ModelError(
            f"detector.execution_providers {list(wanted)}: this ONNX Runtime build has none of "
            f"them (it has {list(available)})"
        )
    skipped = [p for p in wanted if p not in available]
    if skipped:
        log.warning(
            "detector.execution_providers: this ONNX Runtime build lacks %s; running on %s",
            skipped,
            usable,
        )
    return usable


class OnnxRuntimeBackend:
    """Loads artifacts with ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self._providers = list(providers)

    def load(self, artifact: Path, *, threads: int) -> OnnxRuntimeModel:
        """Load `artifact` with `threads` intra-op threads on the preferred providers it has."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = usable_providers(self._providers, ort.get_available_providers())
        try:
            session = ort.InferenceSession(str(artifact), options, providers=providers)
        except Exception as e:
            raise ModelError(f"ONNX Runtime cannot load {artifact}: {e}") from e
        return OnnxRuntimeModel(session)
