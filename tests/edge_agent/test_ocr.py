"""Both OCR engines read rendered text and digits; a missing engine or language is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.ocr import OcrError, create_ocr, find_tessdata, prepare_for_ocr
from training.data.sign_art import draw_speed_round, draw_text_plate


def _rgb(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[..., 3:] / 255
    return (rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


@pytest.mark.parametrize("engine", ["tesserocr", "pytesseract"])
def test_engine_reads_a_plate_and_speed_digits(engine: str) -> None:
    ocr = create_ocr(engine, languages=["eng"])
    try:
        plate = ocr.read(prepare_for_ocr(_rgb(draw_text_plate("SCHOOL").rgba), scale=1.0))
        assert plate.text == "SCHOOL"
        assert 0.5 < plate.confidence <= 1
        digits = ocr.read(
            prepare_for_ocr(_rgb(draw_speed_round(80).rgba), scale=1.0, inner=0.2), digits_only=True
        )
        assert digits.text == "80"
    finally:
        ocr.close()


def test_unknown_engine_or_missing_language_is_refused() -> None:
    with pytest.raises(OcrError, match="unknown OCR engine 'easyocr'"):
        create_ocr("easyocr")
    with pytest.raises(OcrError, match=r"language packs missing .*\['xyz'\]"):
        create_ocr("tesserocr", languages=["xyz"])


def test_tessdata_is_found_or_its_absence_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert any(find_tessdata().glob("eng.traineddata"))
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    (tmp_path / "eng.traineddata").write_bytes(b"x")
    assert find_tessdata() == tmp_path


def test_light_text_on_dark_is_inverted_to_dark_on_light() -> None:
    dark = np.zeros((20, 40, 3), np.uint8)
    dark[5:15, 10:30] = 255
    prepared = prepare_for_ocr(dark, scale=1.0)
    assert prepared.mean() > 127
