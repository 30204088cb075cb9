"""Cutting a detected sign out of a frame the way the classifier was trained to see it.

The box is widened by a margin on every side (GTSRB crops show about 10% of background around
the sign), padded by repeating edge pixels where it leaves the frame, and resized to the
classifier's square input, aspect squashed as in training. Training uses this very function.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def crop_square(image: np.ndarray, box: Sequence[float], *, size: int, margin: float) -> np.ndarray:
    """The `box` region of `image` (H x W x 3 uint8) widened by `margin`, as size x size."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * margin, (y2 - y1) * margin
    left, top = int(np.floor(x1 - mx)), int(np.floor(y1 - my))
    right, bottom = int(np.ceil(x2 + mx)), int(np.ceil(y2 + my))
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    region = image[max(top, 0) : min(bottom, height), max(left, 0) : min(right, width)]
    pad = (max(-top, 0), max(bottom - height, 0), max(-left, 0), max(right - width, 0))
    if any(pad) and region.size:
        region = cv2.copyMakeBorder(region, *pad, cv2.BORDER_REPLICATE)
    if region.size == 0:
        return np.zeros((size, size, 3), np.uint8)
    shrinking = region.shape[0] > size or region.shape[1] > size
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    resized: np.ndarray = cv2.resize(region, (size, size), interpolation=interpolation)
    return resized


def to_batch(images: Sequence[np.ndarray], scale: float) -> np.ndarray:
    """Same-sized RGB uint8 images (crops, or a letterboxed frame) as one float32 NCHW batch."""
    # Planar while still bytes, then to float, scaled in place: one pass over the floats.
    batch = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)).astype(np.float32)
    batch *= np.float32(scale)
    return batch
