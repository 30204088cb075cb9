"""``roadsign-agent predict``: read the signs in still images with a model bundle.

Each image gives one JSON object: its path and its readings, each with the `fleet_protocol`
reading fields (sign type, GTSRB class, value and unit, confidence, bbox ``[x1, y1, x2, y2]`` in
pixels of the original image) plus the detector category. An unreadable image gives an object
with an ``error`` instead, and the other images are still read.

A still is looked at as ``run`` looks at a camera's frames (the profile's ``detector.tiling``),
except that every tile is looked at in the one image rather than spread over frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from edge_agent.profile import TilingConfig
from edge_agent.reading.signs import SignReading, load_reader
from edge_agent.reading.tiling import TilingPolicy


def load_image(path: Path) -> np.ndarray | None:
    """An image file as RGB, or None when it is not a readable image."""
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    if data is None or data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def reading_fields(reading: SignReading) -> dict[str, object]:
    """A reading as JSON-ready fields, named as in `fleet_protocol.messages.Reading`."""
    return {
        "sign_type": reading.sign_type.value,
        "gtsrb_class_id": reading.gtsrb_class_id,
        "value": reading.value,
        "unit": reading.unit,
        "text": None,
        "confidence": round(reading.confidence, 4),
        "sources_disagree": reading.sources_disagree,
        "bbox": [round(v, 1) for v in reading.box],
        "category": reading.category,
    }


def predict_files(
    images: Sequence[Path],
    *,
    model_dir: Path,
    backend: str = "auto",
    threads: int = 2,
    confidence: float = 0.25,
    tiling: TilingPolicy | None = None,
) -> Iterator[dict[str, object]]:
    """One result per image, in order; the bundle is verified and loaded once.

    `tiling`: how each image is looked at; None: as a default profile's agent looks.
    """
    policy = tiling if tiling is not None else TilingConfig().policy()
    reader = load_reader(model_dir, backend=backend, threads=threads, tiling=policy)
    for path in images:
        image = load_image(path)
        if image is None:
            yield {"source": str(path), "readings": [], "error": "not a readable image"}
            continue
        readings = reader.read(image, confidence=confidence)
        yield {"source": str(path), "readings": [reading_fields(r) for r in readings]}
