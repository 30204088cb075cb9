"""The crop classifier: which sign a detected crop shows, and the speed value written on it.

The model has two outputs: ``sign`` over the 43 GTSRB classes plus ``other`` (a sign outside
GTSRB), and ``speed`` over the speed values plus ``none``. The speed head reads values GTSRB has
no class for (5, 40, 90, 110 km/h, mph plates), which is what generalises across countries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.bundle import ModelMetadata, load_metadata
from edge_agent.exceptions import ModelError
from edge_agent.inference import CompiledModel, get_backend
from edge_agent.reading.crops import crop_square, to_batch

OTHER = "other"
NO_SPEED = "none"


@dataclass(frozen=True, slots=True)
class CropReading:
    """What the classifier says about one crop."""

    sign_label: str
    """A GTSRB class id as text (``"14"``) or ``other``."""
    sign_confidence: float
    speed_value: int | None
    speed_confidence: float

    @property
    def gtsrb_id(self) -> int | None:
        """The GTSRB class id, or None for ``other``."""
        return None if self.sign_label == OTHER else int(self.sign_label)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return result


class CropClassifier:
    """Runs the classifier model on crops of detected signs."""

    def __init__(self, model: CompiledModel, metadata: ModelMetadata) -> None:
        if metadata.task != "classifier":
            raise ModelError(f"{metadata.artifact} is a {metadata.task}, not a classifier")
        missing = {"sign", "speed"} - set(metadata.outputs)
        if missing or set(model.output_names) < {"sign", "speed"}:
            raise ModelError(f"{metadata.artifact} lacks the outputs sign and speed")
        self.metadata = metadata
        self._model = model
        self._signs = metadata.outputs["sign"]
        self.infer_seconds = 0.0
        """Time spent inside the runtime so far."""
        self._speeds = metadata.outputs["speed"]

    @classmethod
    def load(cls, artifact: Path, *, backend: str = "auto", threads: int = 1) -> CropClassifier:
        """Verify and load the classifier artifact with the chosen backend."""
        metadata = load_metadata(artifact)
        return cls(get_backend(backend).load(artifact, threads=threads), metadata)

    @property
    def input_size(self) -> int:
        """Side of the square crops the model takes."""
        return self.metadata.input_size

    def crop(self, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
        """The classifier's view of `box` in an RGB frame."""
        return crop_square(image, box, size=self.input_size, margin=self.metadata.crop_margin)

    def classify(self, crops: Sequence[np.ndarray], batch_size: int = 256) -> list[CropReading]:
        """Readings of square RGB crops (from `crop`), in order."""
        readings: list[CropReading] = []
        for start in range(0, len(crops), batch_size):
            batch = to_batch(crops[start : start + batch_size], self.metadata.scale)
            began = time.perf_counter()
            outputs = self._model.infer(batch)
            self.infer_seconds += time.perf_counter() - began
            signs, speeds = _softmax(outputs["sign"]), _softmax(outputs["speed"])
            for sign_p, speed_p in zip(signs, speeds, strict=True):
                s, v = int(sign_p.argmax()), int(speed_p.argmax())
                value = self._speeds[v]
                readings.append(
                    CropReading(
                        self._signs[s],
                        float(sign_p[s]),
                        None if value == NO_SPEED else int(value),
                        float(speed_p[v]),
                    )
                )
        return readings
