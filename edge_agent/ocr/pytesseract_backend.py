"""Tesseract as a program, through pytesseract: a process per crop, no compiled binding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytesseract
from PIL import Image

from edge_agent.ocr.base import OcrResult


class PytesseractEngine:
    """Runs ``tesseract`` for each crop."""

    name = "pytesseract"

    def __init__(self, languages: Sequence[str], tessdata: Path) -> None:
        self._lang = "+".join(languages)
        self._tessdata = tessdata

    def _config(self, digits_only: bool) -> str:
        config = f'--psm 7 --tessdata-dir "{self._tessdata}"'
        return config + (" -c tessedit_char_whitelist=0123456789" if digits_only else "")

    def read(self, image: np.ndarray, *, digits_only: bool = False) -> OcrResult:
        """Text on a prepared crop."""
        from edge_agent.ocr import OcrError

        try:
            data = pytesseract.image_to_data(
                Image.fromarray(image),
                lang=self._lang,
                config=self._config(digits_only),
                output_type=pytesseract.Output.DICT,
            )
        except (pytesseract.TesseractError, pytesseract.TesseractNotFoundError, OSError) as e:
            raise OcrError(f"tesseract failed on a crop: {e}") from e
        words = [
            (w, float(c)) for w, c in zip(data["text"], data["conf"], strict=True) if w.strip()
        ]
        text = " ".join(w for w, _ in words)
        confidence = sum(c for _, c in words) / len(words) / 100 if words else 0.0
        return OcrResult(text, max(confidence, 0.0))

    def close(self) -> None:
        """Nothing is held between crops."""
