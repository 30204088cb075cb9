"""Tiles and the coarse pass: far signs are found at full resolution, each sign once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import cv2
import numpy as np
import pytest

from edge_agent.detection import Detection, Detector
from edge_agent.profile import DeviceProfile
from edge_agent.reading.tiling import (
    TiledDetection,
    TilingPolicy,
    merge,
    tile_layout,
    tiles_of_phase,
)

MIN_PX = 12
"""The stand-in detector's smallest findable sign, in pixels of its input."""


class WhiteSquares:
    """A stand-in for `Detector`: finds white squares at least `MIN_PX` wide in its input,
    after the view is shrunk to fit that input, as a real detector loses shrunk far signs."""

    def __init__(self, input_size: int) -> None:
        self.metadata = SimpleNamespace(input_size=input_size)
        self.views: list[tuple[int, int]] = []

    def detect(
        self, image: np.ndarray, *, confidence: float, iou_threshold: float, agnostic: bool
    ) -> list[Detection]:
        assert agnostic, "a reader wants one box per sign"
        self.views.append((image.shape[1], image.shape[0]))
        scale = min(1.0, self.metadata.input_size / max(image.shape[:2]))
        mask = np.ascontiguousarray(image[..., 0] > 200).astype(np.uint8)
        _, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        return [
            Detection((float(x), float(y), float(x + w), float(y + h)), "prohibitory", 0.9)
            for x, y, w, h, _ in stats[1:]
            if min(w, h) * scale >= MIN_PX
        ]


def frame_with(*squares: tuple[int, int, int], width: int = 1280, height: int = 720) -> np.ndarray:
    """A dark frame with white squares (x, y, side)."""
    frame = np.full((height, width, 3), 40, np.uint8)
    for x, y, side in squares:
        frame[y : y + side, x : x + side] = 255
    return frame


def looking(policy: TilingPolicy, input_size: int = 416) -> tuple[TiledDetection, WhiteSquares]:
    fake = WhiteSquares(input_size)
    return TiledDetection(cast(Detector, fake), policy), fake


def test_tiles_cover_a_dashcam_frame_so_every_sign_up_to_the_overlap_is_whole_in_one() -> None:
    tiles = tile_layout(1280, 720, tile_px=416, overlap_px=96)
    assert len(tiles) == 8  # 4 columns, 2 rows
    assert all(t.x >= 0 and t.y >= 0 and t.x + 416 <= 1280 and t.y + 416 <= 720 for t in tiles)
    rng = np.random.default_rng(1)
    for _ in range(500):
        side = int(rng.integers(4, 97))
        x, y = int(rng.integers(0, 1280 - side)), int(rng.integers(0, 720 - side))
        assert any(
            t.x <= x and t.y <= y and x + side <= t.x + t.width and y + side <= t.y + t.height
            for t in tiles
        ), (x, y, side)


def test_a_frame_that_fits_the_input_is_one_tile_and_a_bad_overlap_is_refused() -> None:
    [tile] = tile_layout(320, 240, tile_px=416, overlap_px=96)
    assert (tile.x, tile.y, tile.width, tile.height) == (0, 0, 320, 240)
    assert (tile.inner_left, tile.inner_right, tile.inner_top, tile.inner_bottom) == (False,) * 4
    with pytest.raises(ValueError, match="overlap_px"):
        tile_layout(1280, 720, tile_px=416, overlap_px=416)


def test_a_far_sign_the_whole_frame_loses_is_found_in_a_tile_at_frame_coordinates() -> None:
    frame = frame_with((901, 333, 22))  # 22 px: 7 px once 1280 is shrunk to 416
    whole, _ = looking(TilingPolicy(enabled=False))
    assert whole.detect(frame, confidence=0.25, iou_threshold=0.45) == []
    tiled, _ = looking(TilingPolicy())
    [found] = tiled.detect(frame, confidence=0.25, iou_threshold=0.45)
    assert found.box == pytest.approx((901, 333, 923, 355))


def test_a_sign_on_a_tile_border_is_one_sign_not_two_halves() -> None:
    tiles = tile_layout(1280, 720, tile_px=416, overlap_px=96)
    border = tiles[1].x  # the second column starts inside the first tile
    frame = frame_with((border - 30, 100, 60))
    tiled, _ = looking(TilingPolicy(coarse_pass=False))
    [found] = tiled.detect(frame, confidence=0.25, iou_threshold=0.45)
    assert found.box == pytest.approx((border - 30, 100, border + 30, 160))


def test_a_near_sign_larger_than_the_overlap_is_left_to_the_coarse_pass() -> None:
    tiles = tile_layout(1280, 720, tile_px=416, overlap_px=96)
    frame = frame_with((tiles[1].x - 150, 150, 300))  # cut by both borders of the overlap
    tiles_only, _ = looking(TilingPolicy(coarse_pass=False))
    assert tiles_only.detect(frame, confidence=0.25, iou_threshold=0.45) == []
    both, _ = looking(TilingPolicy())
    [found] = both.detect(frame, confidence=0.25, iou_threshold=0.45)
    x = tiles[1].x - 150
    assert found.box == pytest.approx((x, 150, x + 300, 450), abs=4)


def test_interleaved_frames_look_at_every_tile_once_per_cycle_and_a_still_at_all() -> None:
    tiles = tile_layout(1280, 720, tile_px=416, overlap_px=96)
    cycle = [t for phase in range(4) for t in tiles_of_phase(tiles, phase, 4)]
    assert sorted(cycle, key=lambda t: (t.y, t.x)) == tiles
    assert tiles_of_phase(tiles, None, 4) == tiles
    tiled, fake = looking(TilingPolicy(interleave=4))
    tiled.detect(frame_with(), confidence=0.25, iou_threshold=0.45, phase=7)
    assert fake.views == [(1280, 720), (416, 416), (416, 416)]  # the coarse pass and 2 tiles


def test_a_frame_the_whole_pass_shrinks_by_less_than_half_is_read_in_one_pass() -> None:
    tiled, fake = looking(TilingPolicy())
    tiled.detect(frame_with(width=640, height=480), confidence=0.25, iou_threshold=0.45)
    assert fake.views == [(640, 480)]
    lower, fake = looking(TilingPolicy(min_frame_px=640))
    lower.detect(frame_with(width=640, height=480), confidence=0.25, iou_threshold=0.45)
    assert len(fake.views) == 1 + 4  # the coarse pass and 2 x 2 tiles


def test_a_band_keeps_tiles_to_the_rows_where_signs_are_and_the_coarse_pass_sees_all() -> None:
    tiles = tile_layout(1280, 720, tile_px=416, overlap_px=96, band=(0.2, 0.77))
    assert len(tiles) == 4  # one row of 4 instead of two
    # The band (144-554 px) is lower than a tile: one tile high, centred on it.
    assert {(t.y, t.height) for t in tiles} == {(141, 416)}
    assert not any(t.inner_top or t.inner_bottom for t in tiles)
    # A band lower than a tile gets one whole tile, inside the frame.
    [row] = {t.y for t in tile_layout(1280, 720, tile_px=416, overlap_px=96, band=(0.9, 1.0))}
    assert row == 720 - 416
    banded, fake = looking(TilingPolicy(band=(0.2, 0.77)))
    frame = frame_with((600, 300, 22), (600, 660, 22))  # one far sign in the band, one below
    [found] = banded.detect(frame, confidence=0.25, iou_threshold=0.45)
    assert found.box == pytest.approx((600, 300, 622, 322))
    assert len(fake.views) == 1 + 4
    with pytest.raises(ValueError, match="band"):
        tile_layout(1280, 720, tile_px=416, overlap_px=96, band=(0.5, 0.5))
    with pytest.raises(ValueError, match="band_top"):
        DeviceProfile.model_validate(
            {"detector": {"tiling": {"band_top": 0.6, "band_bottom": 0.4}}}
        )


def test_merge_keeps_the_best_of_boxes_that_are_one_sign() -> None:
    whole = Detection((10, 10, 50, 50), "prohibitory", 0.8)
    part = Detection((10, 10, 30, 50), "warning", 0.9)
    elsewhere = Detection((200, 10, 240, 50), "prohibitory", 0.5)
    assert merge([whole, part, elsewhere], 0.45) == [part, elsewhere]


def test_the_profile_says_the_policy_and_defaults_to_tiles_with_a_coarse_pass() -> None:
    default = DeviceProfile().detector.tiling.policy()
    assert (default.enabled, default.coarse_pass, default.tile_px) == (True, True, None)
    assert default.interleave == 4
    custom = DeviceProfile.model_validate(
        {"detector": {"tiling": {"tile_px": 320, "overlap_px": 64, "interleave": 2}}}
    ).detector.tiling.policy()
    assert (custom.tile_px, custom.overlap_px, custom.interleave) == (320, 64, 2)
    with pytest.raises(ValueError, match="interleave"):
        DeviceProfile.model_validate({"detector": {"tiling": {"interleave": 0}}})
