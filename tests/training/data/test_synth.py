"""The scene synthesiser: deterministic by seed, exact boxes, and a YOLO dataset that reads back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.training.data.conftest import write_image
from training.data.categories import CATEGORIES, Category, category_of_record
from training.data.records import Box, LabeledImage
from training.data.synth import FacePool, SceneRenderer, SynthSettings, scene_rng, synthesise
from training.data.yolo import read_yolo_dataset
from training.exceptions import DatasetError

CLEAN = SynthSettings(
    width=320,
    height=240,
    min_sign_px=16,
    max_sign_px=80,
    effects=False,
    poles=False,
    plain_background=True,
    empty_fraction=0.0,
    closeup_fraction=0.0,
    real_face_fraction=0,
)


def _renderer(
    settings: SynthSettings = CLEAN,
    records: list[LabeledImage] | None = None,
    backgrounds: list[Path] | None = None,
) -> SceneRenderer:
    return SceneRenderer(settings, FacePool(records or [], category_of_record), backgrounds or [])


def test_a_scene_depends_only_on_seed_split_and_index() -> None:
    renderer = _renderer(SynthSettings(width=200, height=150))
    image, signs = renderer.render(scene_rng(5, "train", 3))
    _ = renderer.render(scene_rng(5, "train", 4))  # rendering others in between changes nothing
    again, signs_again = _renderer(SynthSettings(width=200, height=150)).render(
        scene_rng(5, "train", 3)
    )
    assert np.array_equal(image, again)
    assert signs == signs_again
    other, _ = renderer.render(scene_rng(5, "val", 3))
    assert not np.array_equal(image, other)


@pytest.mark.parametrize("index", range(12))
def test_boxes_are_exact_around_each_sign(index: int) -> None:
    image, signs = _renderer().render(scene_rng(1, "train", index))
    assert signs, "clean settings always place at least one sign"
    diff = np.abs(image.astype(int) - 128).max(axis=2)
    inside = np.zeros(diff.shape, bool)
    for sign in signs:
        x1, y1, x2, y2 = (round(v) for v in sign.box)
        inside[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = True
        patch = diff[y1:y2, x1:x2]
        # Every edge of the box touches the sign: the box is no larger than the sign.
        assert patch[0].max() > 20
        assert patch[-1].max() > 20
        assert patch[:, 0].max() > 20
        assert patch[:, -1].max() > 20
    # Nothing of any sign shows outside its box (beyond its anti-aliased rim).
    assert diff[~inside].max(initial=0) <= 100


def test_sign_sizes_stay_in_the_configured_range() -> None:
    renderer = _renderer()
    sizes = [
        max(s.box[2] - s.box[0], s.box[3] - s.box[1])
        for i in range(30)
        for s in renderer.render(scene_rng(2, "train", i))[1]
    ]
    assert min(sizes) >= CLEAN.min_sign_px * 0.5
    assert max(sizes) <= CLEAN.max_sign_px * 1.15
    assert np.median(sizes) < (CLEAN.min_sign_px + CLEAN.max_sign_px) / 2  # log-uniform


def test_close_ups_fill_the_frame_and_may_be_cut_off() -> None:
    settings = SynthSettings(
        width=320,
        height=240,
        closeup_fraction=1.0,
        effects=False,
        plain_background=True,
        real_face_fraction=0,
    )
    renderer = _renderer(settings)
    scenes = [renderer.render(scene_rng(3, "train", i))[1] for i in range(20)]
    assert [len(placed) for placed in scenes] == [1] * 20  # a close-up is its scene's one sign
    signs = [s for placed in scenes for s in placed]
    heights = [s.box[3] - s.box[1] for s in signs]
    assert min(heights) >= 0.3 * 240 * 0.5  # a third of the frame, at worst half cut off
    assert any(s.box[0] == 0 or s.box[1] == 0 or s.box[2] == 320 or s.box[3] == 240 for s in signs)


def test_real_faces_and_backgrounds_are_used_when_given(tmp_path: Path) -> None:
    crop = write_image(tmp_path / "crop.png", 40, 40)
    background = write_image(tmp_path / "bg.png", 64, 64, seed=3)
    records = [
        LabeledImage(crop, 40, 40, (Box(0, 0, 40, 40, str(i), gtsrb_id=i),), f"g{i}")
        for i in (1, 14, 13, 12, 6, 33, 18)
    ]  # every GTSRB-backed category
    settings = SynthSettings(
        width=160, height=120, real_face_fraction=1.0, real_background_fraction=1.0
    )
    renderer = _renderer(settings, records, [background])
    signs = [s for i in range(20) for s in renderer.render(scene_rng(0, "train", i))[1]]
    assert any(s.real for s in signs)
    assert all(
        s.real
        for s in signs
        if s.category
        in {
            c.value
            for c in (Category.PROHIBITORY, Category.STOP, Category.YIELD, Category.PRIORITY)
        }
    )


def test_category_weights_must_allow_something() -> None:
    with pytest.raises(DatasetError, match="positive weight"):
        _renderer(SynthSettings(category_weights={}))


def test_synthesised_dataset_reads_back_with_the_logged_boxes(tmp_path: Path) -> None:
    renderers = {"train": _renderer(), "val": _renderer()}
    data_yaml = synthesise(tmp_path, renderers, {"train": 6, "val": 2}, seed=4)
    splits = read_yolo_dataset(data_yaml)
    assert {k: len(v) for k, v in splits.items()} == {"train": 6, "val": 2}
    logged = {
        json.loads(line)["image"]: json.loads(line)["signs"]
        for line in (tmp_path / "scenes.jsonl").read_text().splitlines()
    }
    for record in splits["train"] + splits["val"]:
        signs = logged[record.path.relative_to(tmp_path.resolve()).as_posix()]
        assert [b.label for b in record.boxes] == [s["category"] for s in signs]
        for box, sign in zip(record.boxes, signs, strict=True):
            assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx(sign["box"], abs=0.01)
    assert [c.value for c in CATEGORIES] == list(
        __import__("yaml").safe_load(data_yaml.read_text())["names"].values()
    )
