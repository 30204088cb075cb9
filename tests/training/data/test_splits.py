"""Splits keep every group whole, follow the fractions per class, and are stable by seed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.training.data.conftest import write_image
from training.data.records import Box, LabeledImage
from training.data.splits import drop_leaked_groups, split_by_group
from training.exceptions import DatasetError


def _records(classes: dict[str, int], frames: int = 3) -> list[LabeledImage]:
    out = []
    for label, groups in classes.items():
        for g in range(groups):
            for f in range(frames):
                box = Box(0, 0, 10, 10, label)
                out.append(
                    LabeledImage(Path(f"{label}/{g}_{f}.png"), 10, 10, (box,), f"{label}:{g}")
                )
    return out


FRACTIONS = {"train": 0.7, "val": 0.2, "test": 0.1}


def test_no_group_is_split_apart_and_every_record_lands_once() -> None:
    records = _records({"a": 40, "b": 20, "c": 10})
    parts = split_by_group(records, FRACTIONS, seed=3)
    groups = {name: {r.group for r in part} for name, part in parts.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(p) for p in parts.values()) == len(records)


def test_each_class_is_shared_out_by_the_fractions() -> None:
    parts = split_by_group(_records({"a": 40, "b": 20, "c": 10}), FRACTIONS, seed=0)
    groups = {name: Counter(r.boxes[0].label for r in part) for name, part in parts.items()}
    assert groups["val"] == {"a": 8 * 3, "b": 4 * 3, "c": 2 * 3}
    assert groups["test"] == {"a": 4 * 3, "b": 2 * 3, "c": 1 * 3}


def test_split_depends_on_seed_and_groups_not_on_record_order() -> None:
    records = _records({"a": 50})

    def groups(parts: dict[str, list[LabeledImage]]) -> dict[str, set[str]]:
        return {name: {r.group for r in part} for name, part in parts.items()}

    first = groups(split_by_group(records, FRACTIONS, seed=7))
    assert groups(split_by_group(list(reversed(records)), FRACTIONS, seed=7)) == first
    assert groups(split_by_group(records, FRACTIONS, seed=8))["val"] != first["val"]


def test_adding_groups_moves_few_old_groups() -> None:
    old = _records({"a": 50})
    first = {r.group for r in split_by_group(old, FRACTIONS, seed=7)["train"]}
    grown = split_by_group(_records({"a": 60}), FRACTIONS, seed=7)
    # A group's rank depends on itself only; only groups near a moved cut can change parts.
    assert len(first & {r.group for r in grown["train"]}) >= 0.9 * len(first)


def test_background_images_are_split_as_their_own_class() -> None:
    backgrounds = [LabeledImage(Path(f"bg{i}.png"), 5, 5, (), f"bg:{i}") for i in range(10)]
    parts = split_by_group(backgrounds, {"train": 0.5, "val": 0.5}, seed=0)
    assert (len(parts["train"]), len(parts["val"])) == (5, 5)


@pytest.mark.parametrize("fractions", [{"a": 0.5, "b": 0.4}, {"a": 1.2, "b": -0.2}, {}])
def test_fractions_must_be_a_partition(fractions: dict[str, float]) -> None:
    with pytest.raises(DatasetError, match="fractions"):
        split_by_group(_records({"a": 3}), fractions, seed=0)


def test_a_training_group_holding_a_test_image_is_dropped_whole(tmp_path: Path) -> None:
    test_image = write_image(tmp_path / "test" / "00001.ppm", 8, 8, seed=99)
    leaked = write_image(tmp_path / "train" / "t1_f0.ppm", 8, 8, seed=99)  # same bytes
    sibling = write_image(tmp_path / "train" / "t1_f1.ppm", 8, 8, seed=1)
    clean = write_image(tmp_path / "train" / "t2_f0.ppm", 8, 8, seed=2)
    box = (Box(0, 0, 8, 8, "14"),)
    train = [
        LabeledImage(leaked, 8, 8, box, "t1"),
        LabeledImage(sibling, 8, 8, box, "t1"),
        LabeledImage(clean, 8, 8, box, "t2"),
    ]
    kept, dropped = drop_leaked_groups(train, [LabeledImage(test_image, 8, 8, box, "x")])
    assert dropped == {"t1"}
    assert [r.path for r in kept] == [clean]
