"""Small on-disk datasets in each format the importers read, written by the tests themselves."""

from __future__ import annotations

import tarfile
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


GtsdbSign = tuple[int, int, int, int, int]
"""A GTSDB label row's box in the original 1360x800 pixels (last pixel inside) and class id."""


def write_gtsdb_archive(
    shared: Path,
    signs: dict[int, list[GtsdbSign]],
    backgrounds: tuple[int, ...] = (),
    *,
    size: tuple[int, int] = (960, 565),
    original_columns: bool = True,
) -> Path:
    """``shared/gtsdb_scenes.tar.gz`` laid out as the real one: flat grey scenes of `size`,
    ``labels.csv`` with a row per sign (scaled boxes and, if asked, the original ones)."""
    root = shared / "build" / "gtsdb_scenes"
    sx, sy = size[0] / 1360, size[1] / 800
    header = "image,x1,y1,x2,y2,gtsrb_class_id" + (
        ",orig_x1,orig_y1,orig_x2,orig_y2" if original_columns else ""
    )
    lines = [header]
    for scene in sorted({*signs, *backgrounds}):
        name = f"{scene:05d}.jpg"
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (120, 120, 120)).save(root / "images" / name)
        for x1, y1, x2, y2, class_id in signs.get(scene, []):
            scaled = f"{round(x1 * sx)},{round(y1 * sy)},{round(x2 * sx)},{round(y2 * sy)}"
            original = f",{x1},{y1},{x2},{y2}" if original_columns else ""
            lines.append(f"{name},{scaled},{class_id}{original}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    (root / "README.md").write_text("tiny GTSDB-like archive written by a test\n")
    archive = shared / "gtsdb_scenes.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="gtsdb_scenes")
    return archive
