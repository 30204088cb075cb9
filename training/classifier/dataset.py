"""Classifier training data: crops of real signs and rendered faces, and their augmentation.

Every labelled box is cut once with a wide margin into a 64 px store (``STORE``), using the edge
agent's own `crop_square`; each epoch then draws a fresh view of it: a random margin and shift
(what a detector's loose or tight box does), light, colour, blur, low resolution and noise.
Rendered faces fill in what real sets lack: every speed value, mph plates, rare classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from edge_agent.reading.crops import crop_square
from training.classifier.labels import OTHER_INDEX, SIGN_LABELS, sign_target, speed_target
from training.data.categories import CATEGORIES, Category
from training.data.records import Box, LabeledImage
from training.data.sign_art import SignFace, draw_random_face, load_rgb

STORE = 64
STORE_MARGIN = 0.25
"""Margin kept around each stored box, so views can take any margin from 0 to ~0.2."""

_GTSRB_OF_FACE = {"stop": 14, "yield": 13, "priority": 12, "no_entry": 17}
_GTSRB_SPEEDS = {20: 0, 30: 1, 50: 2, 60: 3, 70: 4, 80: 5, 100: 7, 120: 8}


@dataclass(frozen=True)
class CropSet:
    """Stored crops and their two targets."""

    images: np.ndarray
    """N x STORE x STORE x 3 uint8 RGB, each box centred with `STORE_MARGIN` around it."""
    sign: np.ndarray
    speed: np.ndarray
    source: np.ndarray
    """Dataset name of each crop, for per-source metrics."""

    def __len__(self) -> int:
        return len(self.sign)

    @staticmethod
    def concat(sets: Sequence[CropSet]) -> CropSet:
        """One set holding all of `sets`."""
        return CropSet(
            np.concatenate([s.images for s in sets]),
            np.concatenate([s.sign for s in sets]),
            np.concatenate([s.speed for s in sets]),
            np.concatenate([s.source for s in sets]),
        )


@lru_cache(maxsize=2048)
def _image(path: Path) -> np.ndarray:
    return load_rgb(path)


def real_crops(
    records: Sequence[LabeledImage], rng: np.random.Generator, *, max_images: int | None = None
) -> CropSet:
    """Stored crops of every box in `records`; a background image gives one random crop."""
    chosen = list(records)
    if max_images is not None and len(chosen) > max_images:
        picks = rng.choice(len(chosen), max_images, replace=False)
        chosen = [chosen[i] for i in sorted(picks)]
    images, signs, speeds, sources = [], [], [], []
    for record in chosen:
        rgb = _image(record.path)
        boxes: Sequence[Box | None] = record.boxes or [None]
        for box in boxes:
            if box is None:
                side = rng.uniform(0.2, 0.6) * min(record.width, record.height)
                x = rng.uniform(0, record.width - side)
                y = rng.uniform(0, record.height - side)
                region = (x, y, x + side, y + side)
            else:
                region = (box.x1, box.y1, box.x2, box.y2)
            images.append(crop_square(rgb, region, size=STORE, margin=STORE_MARGIN))
            signs.append(sign_target(box))
            speeds.append(speed_target(box))
            sources.append(record.source)
    return CropSet(np.stack(images), np.array(signs), np.array(speeds), np.array(sources))


def _face_targets(face: SignFace) -> tuple[int, int]:
    box = Box(0, 0, 1, 1, face.label, speed_value=face.speed_value, speed_unit=face.speed_unit)
    gtsrb: int | None = _GTSRB_OF_FACE.get(face.label)
    if face.label == "speed_round" and face.speed_value is not None:
        gtsrb = _GTSRB_SPEEDS.get(int(face.speed_value))
    if face.label == "end_speed_round" and face.speed_value == 80:
        gtsrb = 6
    return (gtsrb if gtsrb is not None else OTHER_INDEX), speed_target(box)


def rendered_crops(
    count: int, rng: np.random.Generator, backgrounds: Sequence[Path] = ()
) -> CropSet:
    """`count` procedural faces, half of them speed signs, composited and stored like real ones."""
    weights = np.array(
        [
            6.0 if c is Category.PROHIBITORY else 3.0 if c is Category.SPEED_RECT else 1.0
            for c in CATEGORIES
        ]
    )
    images, signs, speeds = [], [], []
    for _ in range(count):
        category = CATEGORIES[int(rng.choice(len(CATEGORIES), p=weights / weights.sum()))]
        face = draw_random_face(category, rng)
        side = round(STORE / (1 + 2 * STORE_MARGIN))
        h, w = face.rgba.shape[:2]
        fw, fh = (side, max(int(side * h / w), 1)) if w >= h else (max(int(side * w / h), 1), side)
        small = cv2.resize(face.rgba, (fw, fh), interpolation=cv2.INTER_AREA)
        if backgrounds:
            canvas = cv2.resize(
                _image(backgrounds[int(rng.integers(len(backgrounds)))]), (STORE, STORE)
            ).astype(np.float32)
        else:
            canvas = np.clip(rng.normal(rng.uniform(40, 200, 3), 20, (STORE, STORE, 3)), 0, 255)
        y0, x0 = (STORE - fh) // 2, (STORE - fw) // 2
        alpha = small[..., 3:].astype(np.float32) / 255
        patch = canvas[y0 : y0 + fh, x0 : x0 + fw]
        canvas[y0 : y0 + fh, x0 : x0 + fw] = patch * (1 - alpha) + small[..., :3] * alpha
        images.append(canvas.astype(np.uint8))
        sign, speed = _face_targets(face)
        signs.append(sign)
        speeds.append(speed)
    return CropSet(
        np.stack(images), np.array(signs), np.array(speeds), np.array(["rendered"] * count)
    )


def views(stored: np.ndarray, size: int, rng: np.random.Generator, *, train: bool) -> np.ndarray:
    """Crops at `size` from stored crops: jittered (train) or at the deployed 0.1 margin."""
    out = np.empty((len(stored), size, size, 3), np.uint8)
    box = STORE / (1 + 2 * STORE_MARGIN)  # side of the stored box
    for i, crop in enumerate(stored):
        margin = rng.uniform(0.0, 0.2) if train else 0.1
        shift = rng.uniform(-0.08, 0.08, 2) * box if train else np.zeros(2)
        aspect = rng.uniform(0.85, 1.15) if train else 1.0
        side_x = box * (1 + 2 * margin) * aspect
        side_y = box * (1 + 2 * margin) / aspect
        cx, cy = STORE / 2 + shift[0], STORE / 2 + shift[1]
        matrix = np.array(
            [
                [size / side_x, 0, size / 2 - cx * size / side_x],
                [0, size / side_y, size / 2 - cy * size / side_y],
            ]
        )
        out[i] = cv2.warpAffine(
            crop, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE
        )
    if not train:
        return out
    return _degrade(out, rng)


def _degrade(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light, colour, low resolution, blur and noise, each sample its own."""
    out = batch.astype(np.float32)
    n, size = len(batch), batch.shape[1]
    out *= rng.uniform(0.5, 1.4, (n, 1, 1, 1))  # exposure
    out += rng.uniform(-30, 30, (n, 1, 1, 1))
    out *= rng.uniform(0.85, 1.15, (n, 1, 1, 3))  # white balance
    grey = out.mean(axis=3, keepdims=True)
    out = grey + (out - grey) * rng.uniform(0.5, 1.3, (n, 1, 1, 1))  # saturation
    for i in np.nonzero(rng.random(n) < 0.35)[0]:  # far away: few pixels
        low = int(rng.integers(max(size // 4, 8), size))
        small = cv2.resize(out[i], (low, low), interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    for i in np.nonzero(rng.random(n) < 0.2)[0]:
        out[i] = cv2.GaussianBlur(out[i], (0, 0), rng.uniform(0.4, 1.2))
    out += rng.normal(0, 1, out.shape) * rng.uniform(0, 8, (n, 1, 1, 1))
    degraded: np.ndarray = np.clip(out, 0, 255).astype(np.uint8)
    return degraded


def class_balance_weights(sign: np.ndarray) -> np.ndarray:
    """Per-sample weights that give rare sign classes a fair share of each epoch."""
    counts = np.bincount(sign, minlength=len(SIGN_LABELS)).astype(np.float64)
    per_class = 1 / np.sqrt(np.maximum(counts, 1))
    weights: np.ndarray = per_class[sign]
    normalised: np.ndarray = weights / weights.sum()
    return normalised
