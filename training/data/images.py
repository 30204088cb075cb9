"""Reading image sizes without decoding pixels, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from training.exceptions import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".webp", ".tif", ".tiff"})


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of the image at `path`, from its header alone."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"{path}: not a readable image: {e}") from e
    return int(width), int(height)


def is_image(path: Path) -> bool:
    """Whether `path` has an image suffix we read."""
    return path.suffix.lower() in IMAGE_SUFFIXES
