"""Crops are the box widened by the margin, edge-padded past the frame, squashed to a square."""

from __future__ import annotations

import numpy as np

from edge_agent.reading.crops import crop_square, to_batch


def _frame() -> np.ndarray:
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[40:60, 90:110] = 255  # a 20 x 20 white sign
    return frame


def test_margin_widens_the_box_on_every_side() -> None:
    crop = crop_square(_frame(), (90, 40, 110, 60), size=24, margin=0.1)
    assert crop.shape == (24, 24, 3)
    # 20 px box + 2 px each side = 24 px: the white square sits 2 px in from every edge.
    assert (crop[2:22, 2:22] == 255).all()
    assert (crop[:2] == 0).all()
    assert (crop[:, :2] == 0).all()


def test_box_past_the_frame_is_padded_with_edge_pixels() -> None:
    frame = np.zeros((50, 50, 3), np.uint8)
    frame[:, :10] = 200
    crop = crop_square(frame, (-10, 0, 10, 20), size=20, margin=0.0)
    assert (crop[:, :10] == 200).all()  # the left half repeats the frame's edge column


def test_degenerate_box_gives_a_blank_crop_not_an_error() -> None:
    crop = crop_square(_frame(), (500, 500, 400, 400), size=16, margin=0.1)
    assert crop.shape == (16, 16, 3)


def test_batch_is_float_nchw_scaled() -> None:
    batch = to_batch([np.full((4, 4, 3), 255, np.uint8)] * 2, 1 / 255)
    assert batch.shape == (2, 3, 4, 4)
    assert batch.dtype == np.float32
    assert batch.max() == 1.0
