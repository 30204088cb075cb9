"""Tesseract in-process through tesserocr: one engine per reader, no process per crop."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tesserocr
from PIL import Image

from edge_agent.ocr.base import OcrResult

DIGITS = "0123456789"


class TesserocrEngine:
    """A Tesseract API kept open; calls are serialised (the API is not thread-safe)."""

    name = "tesserocr"

    def __init__(self, languages: Sequence[str], tessdata: Path) -> None:
        from edge_agent.ocr import OcrError

        try:
            self._api = tesserocr.PyTessBaseAPI(
                path=f"{tessdata}/", lang="+".join(languages), psm=tesserocr.PSM.SINGLE_LINE
            )
        except RuntimeError as e:
            raise OcrError(f"tesserocr cannot start with {list(languages)}: {e}") from e
        self._lock = threading.Lock()

    def read(self, image: np.ndarray, *, digits_only: bool = False) -> OcrResult:
        """Text on a prepared crop."""
        with self._lock:
            self._api.SetVariable("tessedit_char_whitelist", DIGITS if digits_only else "")
            self._api.SetImage(Image.fromarray(image))
            text = self._api.GetUTF8Text().strip()
            confidence = max(self._api.MeanTextConf(), 0) / 100
        return OcrResult(text, float(confidence))

    def close(self) -> None:
        """Release Tesseract."""
        with self._lock:
            self._api.End()
