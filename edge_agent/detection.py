"""The sign detector: letterbox, run the model, decode YOLOv8 output, NMS, all in numpy.

A YOLOv8 detection model outputs ``(batch, 4 + classes, anchors)``: per anchor a box centre and
size in input pixels, then one sigmoid score per class. Frames are letterboxed to the model's input
(scaled to fit, padded with grey 114 as in training: to the square, or for a model exported with
dynamic height and width only to the next multiple of its stride, as ultralytics predicts), and
boxes are mapped back to the original frame's pixels.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_agent.bundle import ModelMetadata, load_metadata
from edge_agent.exceptions import ModelError
from edge_agent.inference import CompiledModel, get_backend
from edge_agent.reading.crops import to_batch

PAD_VALUE = 114
MAX_DETECTIONS = 100
_MAX_SIDE = 8192.0  # offsets boxes per class so one NMS pass never merges two classes


@dataclass(frozen=True, slots=True)
class Detection:
    """One detected sign, box in pixels of the original frame."""

    box: tuple[float, float, float, float]
    category: str
    score: float


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the square input."""

    scale: float
    pad_x: float
    pad_y: float

    def to_frame(self, boxes: np.ndarray, width: int, height: int) -> np.ndarray:
        """Input-pixel xyxy boxes back in frame pixels, clipped to the frame."""
        out = boxes.copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.scale).clip(0, width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.scale).clip(0, height)
        return out


def _fit(width: int, height: int, size: int) -> tuple[float, int, int]:
    """The scale that fits a frame in size x size, and the scaled frame's width and height."""
    scale = min(size / width, size / height)
    return scale, max(round(width * scale), 1), max(round(height * scale), 1)


def letterbox_shape(width: int, height: int, size: int, stride: int | None) -> tuple[int, int]:
    """The (width, height) of the input a `width` x `height` frame is letterboxed into.

    Square `size` without a `stride`; with one, the smallest multiples of `stride` that hold the
    scaled frame, so a model that takes any such shape spends nothing on needless padding.
    """
    if stride is None:
        return size, size
    _, new_w, new_h = _fit(width, height, size)
    return -(-new_w // stride) * stride, -(-new_h // stride) * stride


def letterbox(
    image: np.ndarray, size: int, stride: int | None = None
) -> tuple[np.ndarray, Letterbox]:
    """`image` scaled to fit size x size, centred on grey padding (to stride multiples only)."""
    height, width = image.shape[:2]
    canvas_w, canvas_h = letterbox_shape(width, height, size, stride)
    scale, new_w, new_h = _fit(width, height, size)
    # Bilinear, as ultralytics resizes in training and prediction, and 7x cheaper than area
    # averaging; only a large reduction (a 1360 px photo to 416) averages, since bilinear
    # sampling would skip pixels and alias the small far signs away.
    interpolation = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (canvas_w - new_w) // 2, (canvas_h - new_h) // 2
    canvas = cv2.copyMakeBorder(
        resized,
        pad_y,
        canvas_h - new_h - pad_y,
        pad_x,
        canvas_w - new_w - pad_x,
        cv2.BORDER_CONSTANT,
        value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    return canvas, Letterbox(scale, float(pad_x), float(pad_y))


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, *, of_smaller: bool = False
) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best first.

    Overlap is intersection over union, or with `of_smaller` over the smaller box's area (so a
    box nested in another counts as the same object whatever their sizes).
    """
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        if of_smaller:
            overlap = inter / np.maximum(np.minimum(areas[best], areas[rest]), 1e-9)
        else:
            overlap = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def decode(
    output: np.ndarray,
    confidence: float,
    iou_threshold: float,
    max_detections: int = MAX_DETECTIONS,
    *,
    agnostic: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``(4 + classes, anchors)`` output to xyxy boxes, scores and class indices.

    NMS is per class (as ultralytics scores mAP) unless `agnostic`: then overlapping boxes of
    any classes suppress each other, and a box nested in a better one goes too: one box per
    object, as a reader of signs needs.
    """
    predictions = output.T
    class_scores = predictions[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(classes)), classes]
    mask = scores >= confidence
    if not mask.any():
        empty = np.zeros((0, 4), np.float32)
        return empty, np.zeros(0, np.float32), np.zeros(0, np.int64)
    cx, cy, w, h = predictions[mask, :4].T
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    scores, classes = scores[mask], classes[mask]
    offsets = 0 if agnostic else classes[:, None] * _MAX_SIDE
    keep = nms(boxes + offsets, scores, iou_threshold, of_smaller=agnostic)[:max_detections]
    return boxes[keep], scores[keep], classes[keep]


class Detector:
    """Runs a YOLOv8 detection model on RGB frames."""

    def __init__(self, model: CompiledModel, metadata: ModelMetadata) -> None:
        if metadata.task != "detector":
            raise ModelError(f"{metadata.artifact} is a {metadata.task}, not a detector")
        if "boxes" not in metadata.outputs:
            raise ModelError(f"{metadata.artifact}: sidecar names no 'boxes' output labels")
        self.metadata = metadata
        self.categories = metadata.outputs["boxes"]
        self._model = model
        self._output = model.output_names[0]
        self.infer_seconds = 0.0
        """Time spent inside the runtime so far (the rest of `detect` is our own work)."""

    @classmethod
    def load(cls, artifact: Path, *, backend: str = "auto", threads: int = 1) -> Detector:
        """Verify and load the detector artifact with the chosen backend."""
        metadata = load_metadata(artifact)
        return cls(get_backend(backend).load(artifact, threads=threads), metadata)

    def detect(
        self,
        image: np.ndarray,
        *,
        confidence: float = 0.25,
        iou_threshold: float = 0.45,
        agnostic: bool = False,
    ) -> list[Detection]:
        """Signs in one RGB frame, best first (`agnostic`: one box per object, see `decode`)."""
        return self.detect_batch(
            [image], confidence=confidence, iou_threshold=iou_threshold, agnostic=agnostic
        )[0]

    def detect_batch(
        self,
        images: Sequence[np.ndarray],
        *,
        confidence: float = 0.25,
        iou_threshold: float = 0.45,
        agnostic: bool = False,
    ) -> list[list[Detection]]:
        """Signs in each of several RGB frames (one inference call per frame)."""
        results = []
        size = self.metadata.input_size
        for image in images:
            canvas, fit = letterbox(image, size, self.metadata.stride)
            batch = to_batch([canvas], self.metadata.scale)
            started = time.perf_counter()
            output = self._model.infer(batch)[self._output][0]
            self.infer_seconds += time.perf_counter() - started
            if output.shape[0] != 4 + len(self.categories):
                raise ModelError(
                    f"{self.metadata.artifact}: output has {output.shape[0] - 4} classes, the "
                    f"sidecar names {len(self.categories)}"
                )
            boxes, scores, classes = decode(output, confidence, iou_threshold, agnostic=agnostic)
            boxes = fit.to_frame(boxes, image.shape[1], image.shape[0])
            results.append(
                [
                    Detection(
                        (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                        self.categories[int(c)],
                        float(s),
                    )
                    for b, s, c in zip(boxes, scores, classes, strict=True)
                ]
            )
        return results
