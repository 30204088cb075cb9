"""Benchmark: reading speed values with the classifier's speed head versus Tesseract OCR.

The design question behind the crop classifier: should the number on a speed sign be read by
OCR (Tesseract, digits only, on the inner disc after upscaling and Otsu binarisation) or by a
learned head? Both read the same held-out real crops (GTSDB >= 30 px, TT100K test speed limits
>= 30 px); the exact-read rate and the time per crop of each are reported side by side.

    python bench/speed_reading.py \\
        --classifier .cache/datasets/default/classifier/export/classifier.onnx \\
        --output bench/results/speed_reading.json
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from edge_agent.reading.classifier import CropClassifier
from training.config import DataConfig
from training.data.build import split_real_sets
from training.data.records import Box, LabeledImage
from training.data.sign_art import load_rgb

MIN_PX = 30


def _ocr_input(rgb: np.ndarray, box: Box) -> np.ndarray:
    """The inner disc of a round sign, 4x, grey, Otsu-binarised: the digits on white."""
    x1, y1, x2, y2 = (round(v) for v in (box.x1, box.y1, box.x2, box.y2))
    w, h = x2 - x1, y2 - y1
    inner = rgb[y1 + int(0.2 * h) : y2 - int(0.2 * h), x1 + int(0.15 * w) : x2 - int(0.15 * w)]
    grey = cv2.cvtColor(inner, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return cv2.copyMakeBorder(binary, 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=255)


def main() -> int:
    """Score both readers on the held-out crops."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", type=Path, required=True)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    import tesserocr
    from PIL import Image

    parts, _ = split_real_sets(DataConfig())
    items: dict[str, list[tuple[LabeledImage, Box]]] = {
        "gtsdb": [
            (i, b)
            for i in parts["gtsdb/test"]
            for b in i.boxes
            if b.speed_value and b.height >= MIN_PX
        ],
        "tt100k": [
            (i, b)
            for i in parts["tt100k/test"]
            for b in i.boxes
            if b.speed_value and b.height >= MIN_PX and b.label.startswith("pl")
        ],
    }
    classifier = CropClassifier.load(args.classifier, backend="openvino", threads=1)
    results: dict[str, dict[str, float]] = {}
    tessdata = sorted(Path("/usr/share/tesseract-ocr").glob("*/tessdata"))[-1]
    with tesserocr.PyTessBaseAPI(
        path=f"{tessdata}/", lang="eng", psm=tesserocr.PSM.SINGLE_LINE
    ) as ocr:
        ocr.SetVariable("tessedit_char_whitelist", "0123456789")
        for name, pairs in items.items():
            images = [load_rgb(i.path) for i, _ in pairs]
            truth = [int(b.speed_value or 0) for _, b in pairs]
            started = time.perf_counter()
            crops = [
                classifier.crop(img, (b.x1, b.y1, b.x2, b.y2))
                for img, (_, b) in zip(images, pairs, strict=True)
            ]
            head = [r.speed_value for r in classifier.classify(crops, batch_size=1)]
            head_ms = 1000 * (time.perf_counter() - started) / len(pairs)
            read, times = [], []
            for img, (_, box) in zip(images, pairs, strict=True):
                started = time.perf_counter()
                ocr.SetImage(Image.fromarray(_ocr_input(img, box)))
                digits = re.sub(r"\D", "", ocr.GetUTF8Text())
                times.append(time.perf_counter() - started)
                read.append(int(digits) if digits else None)
            results[name] = {
                "crops": len(pairs),
                "speed_head_exact": float(
                    np.mean([a == b for a, b in zip(head, truth, strict=True)])
                ),
                "tesseract_exact": float(
                    np.mean([a == b for a, b in zip(read, truth, strict=True)])
                ),
                "speed_head_ms_per_crop": head_ms,
                "tesseract_ms_per_crop": 1000 * statistics.median(times),
            }
            print(name, json.dumps(results[name]), flush=True)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
