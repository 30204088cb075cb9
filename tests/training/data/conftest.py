"""Small on-disk datasets in each format the importers read, written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A random RGB image of width x height, in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_gtsrb_training(root: Path, tracks: dict[int, int], frames: int = 3) -> Path:
    """GTSRB training layout: ``tracks[class_id]`` tracks of `frames` 32x32 images each.

    The CSV claims 64x64 originals with ROI 8..55, as the resized GTSRB copies do.
    """
    for class_id, count in tracks.items():
        folder = root / f"{class_id:05d}"
        lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
        for track in range(count):
            for frame in range(frames):
                name = f"{track:05d}_{frame:05d}.ppm"
                write_image(folder / name, 32, 32, seed=class_id * 1000 + track * 10 + frame)
                lines.append(f"{name};64;64;8;8;55;55;{class_id}")
        (folder / f"GT-{class_id:05d}.csv").write_text("\n".join(lines) + "\n")
    return root
