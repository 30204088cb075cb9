"""Splits that never share a physical sign, and removal of training images that leak test images.

Records are split by `LabeledImage.group` (a GTSRB track, a TT100K street view), stratified by
each group's class, deterministically by seed: the same inputs and seed give the same split on any
machine, and adding a group moves no other group across splits.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from training.data.manifest import file_sha256
from training.data.records import LabeledImage
from training.exceptions import DatasetError

BACKGROUND = "(background)"


def _group_class(images: Sequence[LabeledImage]) -> str:
    labels = [box.label for image in images for box in image.boxes]
    return max(sorted(set(labels)), key=labels.count) if labels else BACKGROUND


def _rank(seed: int, group: str) -> str:
    # A hash rather than a shuffled list: a group's place depends on itself and the seed only.
    return hashlib.sha256(f"{seed}\0{group}".encode()).hexdigest()


def split_by_group(
    images: Iterable[LabeledImage], fractions: Mapping[str, float], *, seed: int
) -> dict[str, list[LabeledImage]]:
    """Split `images` into named parts by group, each class's groups shared out by `fractions`.

    Within every class the groups are ordered by a seeded hash and cut at the cumulative
    fractions (rounded), so each part gets its share of every class that has enough groups.
    """
    if not fractions or any(f < 0 for f in fractions.values()):
        raise DatasetError(f"split fractions must be non-negative: {dict(fractions)}")
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise DatasetError(f"split fractions must add up to 1, not {total}")
    by_group: dict[str, list[LabeledImage]] = defaultdict(list)
    for image in images:
        by_group[image.group].append(image)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, members in by_group.items():
        by_class[_group_class(members)].append(group)
    part_of: dict[str, str] = {}
    names = list(fractions)
    for groups in by_class.values():
        ordered = sorted(groups, key=lambda g: _rank(seed, g))
        start, cumulative = 0, 0.0
        for name in names:
            cumulative += fractions[name]
            end = len(ordered) if name == names[-1] else round(cumulative * len(ordered))
            for group in ordered[start:end]:
                part_of[group] = name
            start = max(start, end)
    parts: dict[str, list[LabeledImage]] = {name: [] for name in names}
    for group, members in by_group.items():
        parts[part_of[group]].extend(members)
    return parts


def drop_leaked_groups(
    train: Iterable[LabeledImage], held_out: Iterable[LabeledImage]
) -> tuple[list[LabeledImage], set[str]]:
    """Drop every training group holding an image byte-identical to a held-out image.

    Returns the kept records and the dropped groups. The whole group goes: its other frames are
    near-copies of the leaked one.
    """
    held_out_hashes = {file_sha256(image.path) for image in held_out}
    records = list(train)
    leaked = {image.group for image in records if file_sha256(image.path) in held_out_hashes}
    return [image for image in records if image.group not in leaked], leaked
