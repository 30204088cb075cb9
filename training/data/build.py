"""The data stage: real sets unpacked, split without leaks, manifested, and scenes synthesised.

Splits: GTSRB training tracks (32x32 and native-size copies together) into train/val by track,
after dropping every track that holds a copy of an official test image; TT100K into
train/val/test by street-view image id; US signs into train/val/test. The official GTSRB test set,
the GTSDB crops and photos, and the test parts stay out of every training step. Scenes for the
detector are rendered from the train part (train scenes) and the val part (val scenes) only.

With ``data.gtsdb_scenes`` the real GTSDB training scenes (00000-00599, split train/val by scene)
join the rendered ones in the detector's dataset; the evaluation scenes (00600-00899) never do,
and never feed the renderer or the classifier (`training.data.gtsdb_scenes` refuses them).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from training.config import DataConfig
from training.data.categories import CATEGORIES, category_of_record
from training.data.gtsdb_scenes import (
    read_gtsdb_scenes,
    refuse_evaluation_scenes,
    write_yolo_scenes,
)
from training.data.manifest import DatasetManifest, build_manifest
from training.data.records import LabeledImage
from training.data.shared_sets import ensure_unpacked, read_shared_set
from training.data.splits import drop_leaked_groups, split_by_group
from training.data.synth import FacePool, SceneRenderer, SynthSettings, synthesise
from training.data.yolo import write_data_yaml

SHARED_SETS = (
    "gtsrb_train32",
    "gtsrb_test32",
    "gtsrb_train_speed",
    "gtsdb_speed",
    "tt100k_train",
    "us_speed",
)


@dataclass(frozen=True)
class DatasetBuild:
    """What the data stage produced."""

    out_dir: Path
    data_yaml: Path | None
    """The YOLO dataset of rendered scenes; None when the build skipped scenes."""
    parts: dict[str, list[LabeledImage]]
    """Real records by ``<set>/<split>``: ``gtsrb/train``, ``tt100k/test``, ``gtsdb/test``..."""
    manifests: dict[str, DatasetManifest]
    dropped_groups: frozenset[str]
    real_scenes: dict[str, list[LabeledImage]] = field(default_factory=dict)
    """Real detector scenes by ``<set>/<split>`` (``gtsdb_scenes/train``); empty unless asked."""

    def summary(self) -> dict[str, object]:
        """Counts and hashes, for logs and MLflow."""
        return {
            "data_yaml": str(self.data_yaml) if self.data_yaml else None,
            "dropped_groups": sorted(self.dropped_groups),
            "manifests": {k: m.manifest_sha256 for k, m in sorted(self.manifests.items())},
            "images": {k: len(v) for k, v in sorted({**self.parts, **self.real_scenes}.items())},
        }


def split_real_sets(config: DataConfig) -> tuple[dict[str, list[LabeledImage]], set[str]]:
    """Unpack and read the shared sets; return their parts and the groups dropped as leaks."""
    records = {
        name: read_shared_set(name, ensure_unpacked(config.shared_data_dir, name, config.cache_dir))
        for name in SHARED_SETS
    }
    gtsrb_test = records["gtsrb_test32"]
    gtsrb_train, dropped = drop_leaked_groups(
        records["gtsrb_train32"] + records["gtsrb_train_speed"], gtsrb_test
    )
    train_share = 1 - config.val_fraction - config.test_fraction
    parts: dict[str, list[LabeledImage]] = {
        "gtsrb_test/test": gtsrb_test,
        "gtsdb/test": records["gtsdb_speed"],
    }
    for split, members in split_by_group(
        gtsrb_train,
        {"train": 1 - config.val_fraction, "val": config.val_fraction},
        seed=config.seed,
    ).items():
        parts[f"gtsrb/{split}"] = members
    for name, key in (("tt100k_train", "tt100k"), ("us_speed", "us")):
        fractions = {"train": train_share, "val": config.val_fraction, "test": config.test_fraction}
        for split, members in split_by_group(records[name], fractions, seed=config.seed).items():
            parts[f"{key}/{split}"] = members
    return parts, dropped


def split_real_scenes(config: DataConfig) -> dict[str, list[LabeledImage]]:
    """The GTSDB training scenes split train/val by scene; empty unless ``gtsdb_scenes`` is on."""
    if not config.gtsdb_scenes:
        return {}
    root = ensure_unpacked(config.shared_data_dir, "gtsdb_scenes", config.cache_dir)
    training = refuse_evaluation_scenes(read_gtsdb_scenes(root)["training"])
    fractions = {"train": 1 - config.val_fraction, "val": config.val_fraction}
    return {
        f"gtsdb_scenes/{split}": members
        for split, members in split_by_group(training, fractions, seed=config.seed).items()
    }


def _renderer(
    config: DataConfig, parts: dict[str, list[LabeledImage]], split: str
) -> SceneRenderer:
    records = refuse_evaluation_scenes(
        r
        for key, rs in parts.items()
        if key.endswith(f"/{split}") and not key.startswith(("gtsrb_test", "gtsdb"))
        for r in rs
    )
    settings = SynthSettings(
        width=config.scene_width,
        height=config.scene_height,
        min_sign_px=config.min_sign_px,
        max_sign_px=config.max_sign_px,
    )
    faces = FacePool([r for r in records if r.boxes], category_of_record)
    backgrounds = [r.path for r in records if not r.boxes]
    return SceneRenderer(settings, faces, backgrounds)


def build_datasets(config: DataConfig, out_dir: Path, *, scenes: bool = True) -> DatasetBuild:
    """Run the data stage into `out_dir`; scenes are re-rendered only when their inputs changed.

    Without `scenes` only the real sets are split and manifested (what the classifier needs).
    """
    parts, dropped = split_real_sets(config)
    real_scenes = split_real_scenes(config) if scenes else {}
    manifests = {
        key: build_manifest(key, config.cache_dir, records)
        for key, records in {**parts, **real_scenes}.items()
    }
    for key, manifest in manifests.items():
        manifest.write(out_dir / "manifests" / f"{key.replace('/', '.')}.json")
    if not scenes:
        return DatasetBuild(out_dir, None, parts, manifests, frozenset(dropped))
    counts = {"train": config.synthetic_scenes, "val": config.synthetic_val_scenes}
    # Left out of the key while off, so the caches of recipes without real scenes stay valid.
    unkeyed = set() if config.gtsdb_scenes else {"gtsdb_scenes"}
    key_source = json.dumps(
        {
            "config": config.model_dump(mode="json", exclude=unkeyed),
            "counts": counts,
            "manifests": {k: m.manifest_sha256 for k, m in sorted(manifests.items())},
            "settings": asdict(SynthSettings()),
        },
        sort_keys=True,
        default=str,
    )
    build_key = hashlib.sha256(key_source.encode()).hexdigest()
    scenes_dir = out_dir / "scenes"
    stamp = scenes_dir / "build_key.txt"
    data_yaml = scenes_dir / "data.yaml"
    if not (stamp.is_file() and stamp.read_text() == build_key and data_yaml.is_file()):
        shutil.rmtree(scenes_dir, ignore_errors=True)
        renderers = {split: _renderer(config, parts, split) for split in counts}
        data_yaml = synthesise(scenes_dir, renderers, counts, seed=config.seed)
        if real_scenes:
            folders = write_yolo_scenes(
                scenes_dir / "gtsdb_scenes",
                {key.split("/")[1]: records for key, records in real_scenes.items()},
            )
            more = {split: [folder] for split, folder in folders.items()}
            data_yaml = write_data_yaml(
                scenes_dir, [c.value for c in CATEGORIES], list(counts), more
            )
        stamp.write_text(build_key)
    return DatasetBuild(out_dir, data_yaml, parts, manifests, frozenset(dropped), real_scenes)
