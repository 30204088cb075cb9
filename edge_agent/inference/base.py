"""The interface every inference backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class CompiledModel(Protocol):
    """A model loaded by a runtime, ready to run."""

    @property
    def output_names(self) -> list[str]:
        """Names of the outputs, in the model's order."""
        ...

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one input batch (float32, NCHW); outputs by name."""
        ...


class InferenceBackend(Protocol):
    """A runtime that loads model artifacts."""

    name: str

    def load(self, artifact: Path, *, threads: int) -> CompiledModel:
        """Load `artifact` for inference on `threads` CPU threads; `ModelError` if it cannot."""
        ...
