"""Where in a frame the detector looks: full-resolution tiles plus a coarse whole-frame pass.

A dashcam frame shrunk to the detector's 416 px input makes a 26 px sign 8 px, below what the
detector can find. Cut into overlapping tiles of the input's own size, the frame is seen at full
resolution; a coarse pass over the whole, shrunk frame still sees the near signs that are larger
than the tiles' overlap (and would be cut in two by a tile border). The tiles of one frame can be
spread over several frames (`interleave`): a sign stays in view for many frames, and the tracker
bridges the frames it was not looked for.

The layout and the merge are pure functions of sizes and boxes; `TiledDetection` runs them on a
`Detector`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edge_agent.detection import Detection, Detector, nms

EDGE_MARGIN_PX = 2.0
"""A tile's box this close to an inner tile border is a sign cut by it: its whole view is in a
neighbouring tile (or, if larger than the overlap, in the coarse pass)."""


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: its top-left corner and size in frame pixels, and which of its sides are inner
    (shared with a neighbour) rather than the frame's own edge."""

    x: int
    y: int
    width: int
    height: int
    inner_left: bool
    inner_top: bool
    inner_right: bool
    inner_bottom: bool

    def cuts(self, box: tuple[float, float, float, float]) -> bool:
        """Whether `box` (in tile pixels) touches one of the tile's inner borders."""
        x1, y1, x2, y2 = box
        return (
            (self.inner_left and x1 <= EDGE_MARGIN_PX)
            or (self.inner_top and y1 <= EDGE_MARGIN_PX)
            or (self.inner_right and x2 >= self.width - EDGE_MARGIN_PX)
            or (self.inner_bottom and y2 >= self.height - EDGE_MARGIN_PX)
        )


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread tile starts along one side, neighbours sharing at least `overlap` pixels."""
    if length <= tile:
        return [0]
    count = -(-(length - overlap) // (tile - overlap))
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def tile_layout(
    width: int,
    height: int,
    *,
    tile_px: int,
    overlap_px: int,
    band: tuple[float, float] = (0.0, 1.0),
) -> list[Tile]:
    """The tiles covering a `width` x `height` frame, row by row.

    Tiles are `tile_px` square (clipped to a smaller frame) and neighbours overlap by at least
    `overlap_px`, so any sign no larger than the overlap lies whole inside at least one tile.
    A frame that fits one tile is one tile. `band` (top and bottom, fractions of the height)
    limits the tiles to the rows where signs are (the coarse pass still sees the whole frame):
    the band's edges count as the frame's own, not as tile borders.
    """
    if not 0 <= overlap_px < tile_px:
        raise ValueError(f"overlap_px {overlap_px} must be at least 0 and below tile_px {tile_px}")
    if not 0 <= band[0] < band[1] <= 1:
        raise ValueError(f"band {band} must be top < bottom, both within 0..1")
    xs = _starts(width, tile_px, overlap_px)
    tile_w, tile_h = min(tile_px, width), min(tile_px, height)
    # A band lower than one tile still gets a whole tile, centred on it but kept in the frame.
    top, bottom = round(band[0] * height), round(band[1] * height)
    if bottom - top < tile_h:
        centre = (top + bottom) // 2
        top = min(max(centre - tile_h // 2, 0), height - tile_h)
        bottom = top + tile_h
    ys = [top + y for y in _starts(bottom - top, tile_px, overlap_px)]
    return [
        Tile(
            x,
            y,
            tile_w,
            tile_h,
            inner_left=col > 0,
            inner_top=row > 0,
            inner_right=col < len(xs) - 1,
            inner_bottom=row < len(ys) - 1,
        )
        for row, y in enumerate(ys)
        for col, x in enumerate(xs)
    ]


def tiles_of_phase(tiles: list[Tile], phase: int | None, interleave: int) -> list[Tile]:
    """The tiles a frame of `phase` looks at: every `interleave`-th, or all (a still: None)."""
    if phase is None or interleave <= 1:
        return tiles
    return tiles[phase % interleave :: interleave]


def merge(detections: list[Detection], iou_threshold: float) -> list[Detection]:
    """One box per sign from the tiles' and the coarse pass's boxes, best first.

    Overlap is measured over the smaller box, as `decode` does for one pass: a sign seen whole in
    one tile and as a part in another (or by the coarse pass) is one sign.
    """
    if len(detections) <= 1:
        return list(detections)
    boxes = np.array([d.box for d in detections], dtype=np.float32)
    scores = np.array([d.score for d in detections], dtype=np.float32)
    return [detections[i] for i in nms(boxes, scores, iou_threshold, of_smaller=True)]


@dataclass(frozen=True, slots=True)
class TilingPolicy:
    """How a frame is looked at (the profile's ``detector.tiling``, see there)."""

    enabled: bool = True
    tile_px: int | None = None
    overlap_px: int = 96
    coarse_pass: bool = True
    interleave: int = 1
    min_frame_px: int | None = None
    band: tuple[float, float] = (0.0, 1.0)

    def as_json(self) -> dict[str, object]:
        """The policy as JSON-ready fields (the band as a list, as JSON reads it back)."""
        return {**asdict(self), "band": list(self.band)}

    def tile_size(self, input_size: int) -> int:
        """The tile side for a detector of `input_size` (its own, unless the policy sets one)."""
        return self.tile_px or input_size

    def tiles_frame(self, width: int, height: int, input_size: int) -> bool:
        """Whether a `width` x `height` frame is tiled: one whose longer side reaches
        `min_frame_px` (unset: twice the tile side, so the whole pass would shrink it by more
        than half). A smaller frame loses little in one pass, and tiles would show the
        detector background up close that it was never trained to ignore."""
        threshold = self.min_frame_px or 2 * self.tile_size(input_size)
        return self.enabled and max(width, height) >= threshold


class TiledDetection:
    """A `Detector` run under a `TilingPolicy`: tiles (some per frame) plus the coarse pass."""

    def __init__(self, detector: Detector, policy: TilingPolicy) -> None:
        self.detector = detector
        self.policy = policy
        self._layouts: dict[tuple[int, int], list[Tile]] = {}

    def layout(self, width: int, height: int) -> list[Tile]:
        """The tiles of a frame of this size (cached: a camera's frames are all one size)."""
        key = (width, height)
        if key not in self._layouts:
            tile = self.policy.tile_size(self.detector.metadata.input_size)
            overlap = min(self.policy.overlap_px, tile - 1)
            self._layouts[key] = tile_layout(
                width, height, tile_px=tile, overlap_px=overlap, band=self.policy.band
            )
        return self._layouts[key]

    def detect(
        self,
        image: np.ndarray,
        *,
        confidence: float,
        iou_threshold: float,
        phase: int | None = None,
    ) -> list[Detection]:
        """The signs in one RGB frame, one box each; `phase`: the frame's number in a stream
        (None for a still, which looks at every tile)."""
        height, width = image.shape[:2]
        tiled = self.policy.tiles_frame(width, height, self.detector.metadata.input_size)
        tiles = self.layout(width, height) if tiled else []
        if len(tiles) <= 1:
            return self._pass(image, confidence, iou_threshold)
        found: list[Detection] = []
        if self.policy.coarse_pass:
            found.extend(self._pass(image, confidence, iou_threshold))
        for tile in tiles_of_phase(tiles, phase, self.policy.interleave):
            view = image[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width]
            for d in self._pass(view, confidence, iou_threshold):
                if tile.cuts(d.box):
                    continue
                x1, y1, x2, y2 = d.box
                box = (x1 + tile.x, y1 + tile.y, x2 + tile.x, y2 + tile.y)
                found.append(Detection(box, d.category, d.score))
        return merge(found, iou_threshold)

    def _pass(self, image: np.ndarray, confidence: float, iou_threshold: float) -> list[Detection]:
        return self.detector.detect(
            image, confidence=confidence, iou_threshold=iou_threshold, agnostic=True
        )
