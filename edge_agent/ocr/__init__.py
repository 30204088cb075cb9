"""OCR engines behind one small interface, chosen through an explicit registry.

``tesserocr`` runs Tesseract in-process (the default: no process per crop); ``pytesseract`` runs
the ``tesseract`` program per crop (slower, but needs no compiled binding). Each engine lives in
its own file and is imported only when chosen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from edge_agent.exceptions import AgentError
from edge_agent.ocr.base import OcrEngine, OcrResult, prepare_for_ocr


class OcrError(AgentError):
    """An OCR engine is missing, misconfigured, or failed on a crop."""


def find_tessdata(explicit: Path | None = None) -> Path:
    """The folder of Tesseract's language files: given, ``TESSDATA_PREFIX``, or the system's."""
    candidates = [explicit] if explicit else []
    if os.environ.get("TESSDATA_PREFIX"):
        candidates.append(Path(os.environ["TESSDATA_PREFIX"]))
    candidates += sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata"), reverse=True)
    candidates.append(Path("/usr/share/tessdata"))
    for candidate in candidates:
        if candidate is not None and any(candidate.glob("*.traineddata")):
            return candidate
    raise OcrError(
        "no Tesseract language data found (install tesseract-ocr, or set TESSDATA_PREFIX)"
    )


def _tesserocr(languages: Sequence[str], tessdata: Path) -> OcrEngine:
    from edge_agent.ocr.tesserocr_backend import TesserocrEngine

    return TesserocrEngine(languages, tessdata)


def _pytesseract(languages: Sequence[str], tessdata: Path) -> OcrEngine:
    from edge_agent.ocr.pytesseract_backend import PytesseractEngine

    return PytesseractEngine(languages, tessdata)


ENGINES: dict[str, Callable[[Sequence[str], Path], OcrEngine]] = {
    "tesserocr": _tesserocr,
    "pytesseract": _pytesseract,
}


def create_ocr(
    name: str, *, languages: Sequence[str] = ("eng",), tessdata: Path | None = None
) -> OcrEngine:
    """The OCR engine registered as `name`, with the language packs it must have."""
    if name not in ENGINES:
        raise OcrError(f"unknown OCR engine {name!r}; known: {', '.join(ENGINES)}")
    data = find_tessdata(tessdata)
    missing = [lang for lang in languages if not (data / f"{lang}.traineddata").is_file()]
    if missing:
        raise OcrError(f"Tesseract language packs missing in {data}: {missing}")
    return ENGINES[name](languages, data)


__all__ = [
    "ENGINES",
    "OcrEngine",
    "OcrError",
    "OcrResult",
    "create_ocr",
    "find_tessdata",
    "prepare_for_ocr",
]
