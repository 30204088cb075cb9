"""Importer of crops sorted into one folder per class: ``root/<class name>/<image>``.

The whole crop is the sign. Crops of one physical sign (frames of a track, crops of one photo)
must share a split group: `group_pattern` takes it from the file name (its first regex group);
without one each crop is its own group.
"""

from __future__ import annotations

import re
from pathlib import Path

from training.data.images import image_size, is_image
from training.data.records import Box, LabeledImage
from training.exceptions import DatasetError


def read_crop_folders(
    root: Path, *, source: str = "crop_folders", group_pattern: str | None = None
) -> list[LabeledImage]:
    """Every image in the class folders directly below `root`, labelled by its folder name."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    pattern = re.compile(group_pattern) if group_pattern else None
    images = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in class_dir.iterdir() if p.is_file() and is_image(p)):
            group = f"{source}:{path.relative_to(root)}"
            if pattern is not None:
                match = pattern.search(path.name)
                if match is None or not match.groups():
                    raise DatasetError(
                        f"{path}: name does not match group pattern {group_pattern!r}"
                    )
                group = f"{source}:{match.group(1)}"
            width, height = image_size(path)
            box = Box(0.0, 0.0, float(width), float(height), class_dir.name)
            images.append(LabeledImage(path, width, height, (box,), group, source))
    if not images:
        raise DatasetError(f"{root}: no images in class folders")
    return images
