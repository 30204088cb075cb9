"""The interface of OCR engines, and the crop preparation they share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np


@dataclass(frozen=True, slots=True)
class OcrResult:
    """Text read on a crop and Tesseract's confidence in it (0-1)."""

    text: str
    confidence: float


class OcrEngine(Protocol):
    """Reads text on small crops."""

    name: str

    def read(self, image: np.ndarray, *, digits_only: bool = False) -> OcrResult:
        """Text on an RGB or grey crop (prepare it with `prepare_for_ocr` first)."""
        ...

    def close(self) -> None:
        """Release the engine."""
        ...


def prepare_for_ocr(rgb: np.ndarray, *, scale: float = 3.0, inner: float = 0.0) -> np.ndarray:
    """A crop as Tesseract reads best: `inner` share cut off each side, upscaled, binarised.

    Dark text on a light field either way round: if the binarised crop is mostly dark, it is
    inverted. A white border keeps glyphs off the edge.
    """
    h, w = rgb.shape[:2]
    dy, dx = int(h * inner), int(w * inner)
    region = rgb[dy : h - dy or None, dx : w - dx or None]
    grey = cv2.cvtColor(region, cv2.COLOR_RGB2GRAY) if region.ndim == 3 else region
    grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if binary.mean() < 127:
        binary = 255 - binary
    padded: np.ndarray = cv2.copyMakeBorder(binary, 8, 8, 8, 8, cv2.BORDER_CONSTANT, value=255)
    return padded
