"""The real sign sets of ``../shared/data``: unpacked into the git-ignored cache, one reader each.

The archives are read in place and unpacked under ``.cache/data`` (never into git). Each reader
returns records with split groups that keep a physical sign whole: GTSRB by track (the same group
names for the 32x32 and the native-size copies of a track), TT100K by street-view image id.
"""

from __future__ import annotations

import csv
import fcntl
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fleet_protocol.taxonomy import SpeedUnit
from training.data.gtsrb import read_gtsrb_test, read_gtsrb_training, track_group
from training.data.labelled_csv import CropLabel, CsvCropSpec, Row, read_csv_crops
from training.data.records import LabeledImage
from training.exceptions import DatasetError

TT100K_NEGATIVE = "negative"
# Signs whose number is a speed: limits, ends of limits and minimum speeds (blue discs).
_TT100K_SPEED_KINDS = frozenset({"speed_limit", "end_speed_limit", "min_speed"})
TT100K_SPEED_LIMIT_PREFIX = "pl"


def ensure_unpacked(shared_dir: Path, name: str, cache_dir: Path) -> Path:
    """Unpack ``shared_dir/<name>.tar.gz`` into ``cache_dir`` once; return its folder.

    A marker written after a complete extraction (holding the archive's size and mtime) makes a
    half-finished or outdated unpack start over instead of being used. An exclusive lock beside
    it makes concurrent callers (two training runs, parallel test workers) unpack it once: the
    others wait, then find the marker.
    """
    archive = shared_dir / f"{name}.tar.gz"
    if not archive.is_file():
        raise DatasetError(f"{archive} does not exist: is ../shared/data present?")
    stat = archive.stat()
    stamp = f"{stat.st_size}:{int(stat.st_mtime)}\n"
    target = cache_dir / name
    marker = cache_dir / f".{name}.unpacked"
    if target.is_dir() and marker.is_file() and marker.read_text() == stamp:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f".{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir() and marker.is_file() and marker.read_text() == stamp:
            return target  # unpacked by whoever held the lock before
        marker.unlink(missing_ok=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(cache_dir, filter="data")
        except (OSError, tarfile.TarError) as e:
            raise DatasetError(f"cannot unpack {archive}: {e}") from e
        if not target.is_dir():
            raise DatasetError(f"{archive} did not unpack into a folder named {name}")
        marker.write_text(stamp)
    return target


def _speed(value: str, unit: SpeedUnit) -> tuple[float | None, SpeedUnit | None]:
    number = float(value) if value else 0.0
    return (number, unit) if number > 0 else (None, None)


def _gtsrb_speed_crop(row: Row) -> CropLabel:
    class_id = int(row["gtsrb_class_id"])
    value, unit = _speed(row["speed_kmh"], "km/h")
    # Roi x2/y2 are the last pixel inside the sign, as in GTSRB's own CSVs.
    roi = (
        float(row["roi_x1"]),
        float(row["roi_y1"]),
        float(row["roi_x2"]) + 1,
        float(row["roi_y2"]) + 1,
    )
    return CropLabel(str(class_id), class_id, value, unit, roi)


def _gtsrb_speed_group(row: Row, path: Path) -> str:
    class_text, track_text, _frame = path.stem.split("_")
    return track_group(int(class_text), int(track_text))


def _gtsdb_crop(row: Row) -> CropLabel:
    value, unit = _speed(row["speed_kmh"], "km/h")
    return CropLabel(row["gtsrb_class_id"], int(row["gtsrb_class_id"]), value, unit)


def _tt100k_crop(row: Row) -> CropLabel:
    code = row["tt100k_class"]
    if code == TT100K_NEGATIVE:
        return CropLabel(None)
    if row["number_kind"] in _TT100K_SPEED_KINDS:
        value, unit = _speed(row["number"], "km/h")
        return CropLabel(code, _TT100K_TO_GTSRB.get(code), value, unit)
    return CropLabel(code, _TT100K_TO_GTSRB.get(code))


def _tt100k_group(row: Row, path: Path) -> str:
    # Crops are named <street-view image id>_<n>: the crops of one view are held out together.
    return f"tt100k:{path.stem.split('_', 1)[0]}"


def _us_crop(row: Row) -> CropLabel:
    value, unit = _speed(row["speed_mph"], "mph")
    return CropLabel("us_speed_limit", None, value, unit)


def _own_group(source: str) -> Callable[[Row, Path], str]:
    return lambda row, path: f"{source}:{path.name}"


# From ../shared/data/class_map_to_gtsrb.csv; speed-limit values GTSRB lacks map to no class.
_TT100K_TO_GTSRB: dict[str, int] = {
    "pl20": 0,
    "pl30": 1,
    "pl50": 2,
    "pl60": 3,
    "pl70": 4,
    "pl80": 5,
    "pl100": 7,
    "pl120": 8,
    "p1": 9,
    "pne": 17,
    "pb": 15,
    "p26": 16,
    "ps": 14,
    "pg": 13,
    "i3": 40,
    "i5": 38,
    "i10": 33,
    "i12": 34,
    "i13": 35,
    "i14": 36,
    "i15": 37,
    "w32": 25,
    "w55": 28,
    "w57": 27,
    "w63": 18,
}

CSV_SETS: dict[str, CsvCropSpec] = {
    "gtsrb_train_speed": CsvCropSpec(
        "gtsrb_train_speed", "labels.csv", "path", _gtsrb_speed_crop, _gtsrb_speed_group
    ),
    "gtsdb_speed": CsvCropSpec(
        "gtsdb_speed", "labels_crops.csv", "path", _gtsdb_crop, _own_group("gtsdb_speed")
    ),
    "tt100k_train": CsvCropSpec("tt100k", "labels.csv", "path", _tt100k_crop, _tt100k_group),
    "us_speed": CsvCropSpec("us_speed", "labels.csv", "path", _us_crop, _own_group("us_speed")),
}


@dataclass(frozen=True, slots=True)
class RealWorldPhoto:
    """A real-world photo with the speed limit it shows, but no box (for end-to-end checks)."""

    path: Path
    speed_kmh: int


def read_shared_set(name: str, root: Path) -> list[LabeledImage]:
    """Records of the unpacked shared set `name` at `root`."""
    if name == "gtsrb_train32":
        return read_gtsrb_training(root, source="gtsrb_train32")
    if name == "gtsrb_test32":
        return read_gtsrb_test(root, source="gtsrb_test32")
    if name in CSV_SETS:
        return read_csv_crops(root, CSV_SETS[name])
    raise DatasetError(
        f"unknown shared set {name!r}; known: gtsrb_train32, gtsrb_test32, "
        f"{', '.join(sorted(CSV_SETS))}"
    )


def read_gtsdb_real_world(root: Path) -> list[RealWorldPhoto]:
    """The 17 real-world photos of the GTSDB speed set, with their speeds."""
    csv_path = root / "labels_real_world.csv"
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            return [
                RealWorldPhoto(root / row["path"], int(row["speed_kmh"]))
                for row in csv.DictReader(f)
            ]
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(f"cannot read {csv_path}: {e}") from e
