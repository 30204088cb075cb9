"""Golden images of a model bundle: readings recorded at export, reproduced before activation.

A bundle carries ``golden/golden.json`` and a handful of images beside it. Each entry names an
image, its sha256 and the readings the bundle's own `SignReader` made of it when the bundle was
exported (`record_golden`). Before a device activates a downloaded bundle, `check_golden` reads
the same images with the freshly loaded reader and compares: same sign types, values and units,
boxes overlapping by at least ``min_iou``, confidences within ``confidence_abs`` (INT8 runtimes
differ between CPUs and runtimes, so exact equality would refuse good bundles: ONNX Runtime 1.32
on an AVX2 CPU without VNNI read the shipped bundle's 45 mph plate at 0.76 where OpenVINO and an
AVX-512 VNNI CPU read 0.58-0.59, so the default is 0.25; a broken bundle misreads or loses signs,
which no tolerance admits).

Readings weaker than ``read_confidence + confidence_abs`` are neither recorded nor counted as
extra: on another CPU they may fall either side of the detector's threshold, so they say nothing
about the bundle. The check reads at ``read_confidence - confidence_abs`` so that a recorded
reading a little weaker on this CPU is still found and compared.

Every file is size-checked before a byte of it is read, every image's header before it is
decoded, and every image's bytes are hashed and decoded from one read, so what is checked is
what is compared. Matching (`compare_image`) is pure; the rest is file I/O around it.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.exceptions import ImageHeaderError, ModelError
from edge_agent.image_header import read_image_header
from edge_agent.reading.signs import SignReading
from fleet_protocol.taxonomy import SignType, SpeedUnit

GOLDEN_DIR = "golden"
GOLDEN_INDEX = "golden/golden.json"
MAX_INDEX_BYTES = 1 << 20
"""A golden.json above this is refused unread: a handful of images needs a few KB."""
MAX_IMAGE_BYTES = 4 << 20
"""A golden image above this is refused unread."""
MAX_IMAGE_SIDE = 4096
"""A golden image whose header declares a longer side is refused undecoded."""
MAX_DETAIL = 900
"""A result's detail is at most this long (an OtaStatus detail holds 1000 characters)."""
_CONFIDENCE_FLOOR = 0.01


class GoldenTolerance(BaseModel):
    """How closely a bundle must reproduce its golden readings."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    min_iou: float = Field(
        default=0.5, gt=0, le=1, description="Least overlap of a reading's box with the golden box."
    )
    confidence_abs: float = Field(
        default=0.25, ge=0, le=1, description="Most a reading's confidence may differ from golden."
    )
    min_recall: float = Field(
        default=1.0, gt=0, le=1, description="Share of the golden readings that must be matched."
    )
    max_extra: int = Field(
        default=0,
        ge=0,
        description="Confident readings per image beyond the golden ones that are tolerated.",
    )


class GoldenReading(BaseModel):
    """One reading the bundle made of a golden image when it was recorded."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    sign_type: SignType = Field(description="What the sign means.")
    value: float | None = Field(default=None, description="Speed value, where the sign has one.")
    unit: SpeedUnit | None = Field(default=None, description="Unit of the speed value.")
    bbox: tuple[float, float, float, float] = Field(
        description="Box [x1, y1, x2, y2] in pixels of the image."
    )
    confidence: float = Field(ge=0, le=1, description="The reading's confidence.")


class GoldenEntry(BaseModel):
    """One golden image and what was read on it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # One file directly in golden/: no folders, no "..", nothing outside the bundle.
    image: str = Field(
        pattern=r"^golden/[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}\.(jpg|jpeg|png)$",
        description="Image path, relative to the bundle folder.",
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the image's bytes.")
    readings: list[GoldenReading] = Field(
        max_length=100, description="Readings recorded on the image, most confident first."
    )


class GoldenSet(BaseModel):
    """``golden/golden.json``: the golden images of a bundle and how to compare them."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1] = Field(description="Format version of this file.")
    read_confidence: float = Field(
        default=0.25, gt=0, lt=1, description="Detector threshold the readings were recorded at."
    )
    tolerance: GoldenTolerance = Field(description="How closely readings must be reproduced.")
    entries: list[GoldenEntry] = Field(
        min_length=1, max_length=16, description="The golden images."
    )


class ReadsSigns(Protocol):
    """What the check needs of a reader: `edge_agent.reading.signs.SignReader` is one."""

    def read(self, image: np.ndarray, *, confidence: float = ...) -> list[SignReading]:
        """Every sign read in one RGB image, most confident first."""
        ...


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """How one golden image was reproduced."""

    image: str
    expected: int
    matched: int
    extra: int
    problems: tuple[str, ...]
    """One line per golden reading not reproduced, and one for too many extra readings."""


@dataclass(frozen=True, slots=True)
class GoldenResult:
    """The verdict of a golden check, with what it is made of."""

    passed: bool
    detail: str
    matched: int
    expected: int
    per_image: tuple[ImageCheck, ...]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def as_golden(reading: SignReading) -> GoldenReading:
    """A reading in the golden file's shape (boxes to 0.1 px, confidence to 4 places)."""
    return GoldenReading(
        sign_type=reading.sign_type,
        value=reading.value,
        unit=reading.unit,
        bbox=(
            round(reading.box[0], 1),
            round(reading.box[1], 1),
            round(reading.box[2], 1),
            round(reading.box[3], 1),
        ),
        confidence=round(min(max(reading.confidence, 0.0), 1.0), 4),
    )


def _same_sign(a: GoldenReading, b: GoldenReading) -> bool:
    return (a.sign_type, a.value, a.unit) == (b.sign_type, b.value, b.unit)


def _says(reading: GoldenReading) -> str:
    if reading.value is None:
        return reading.sign_type.value
    value = int(reading.value) if reading.value.is_integer() else reading.value
    return f"{reading.sign_type.value} {value} {reading.unit or ''}".rstrip()


def _box(reading: GoldenReading) -> str:
    return "[" + ", ".join(f"{v:.0f}" for v in reading.bbox) + "]"


def compare_image(
    image: str,
    expected: Sequence[GoldenReading],
    actual: Sequence[GoldenReading],
    tolerance: GoldenTolerance,
    *,
    extra_floor: float,
) -> ImageCheck:
    """Match the golden readings of one image with what was read now (pure).

    Each golden reading takes the unmatched reading of the same type, value and unit whose box
    overlaps it most, if that overlap and its confidence are within tolerance. A golden reading
    left unmatched is explained by the reading nearest to it (a misread, not an extra one);
    the other unmatched readings at or above `extra_floor` are extra.
    """
    free = list(range(len(actual)))
    missed: list[GoldenReading] = []
    for want in sorted(expected, key=lambda r: -r.confidence):
        fits = [
            i
            for i in free
            if _same_sign(actual[i], want)
            and iou(actual[i].bbox, want.bbox) >= tolerance.min_iou
            and abs(actual[i].confidence - want.confidence) <= tolerance.confidence_abs
        ]
        if fits:
            free.remove(max(fits, key=lambda i: iou(actual[i].bbox, want.bbox)))
        else:
            missed.append(want)
    problems: list[str] = []
    explained: set[int] = set()
    for want in missed:
        near = [i for i in free if iou(actual[i].bbox, want.bbox) > 0]
        nearest = max(near, key=lambda i: iou(actual[i].bbox, want.bbox)) if near else None
        if nearest is not None:
            explained.add(nearest)
        found = actual[nearest] if nearest is not None else None
        problems.append(f"{image}: {_miss(want, found, tolerance)}")
    extras = [actual[i] for i in free if i not in explained and actual[i].confidence >= extra_floor]
    if len(extras) > tolerance.max_extra:
        listed = ", ".join(
            f"{_says(r)} at {_box(r)} (confidence {r.confidence:.2f})" for r in extras
        )
        problems.append(
            f"{image}: {len(extras)} extra reading(s), {tolerance.max_extra} tolerated: {listed}"
        )
    matched = len(expected) - len(missed)
    return ImageCheck(image, len(expected), matched, len(extras), tuple(problems))


def _miss(want: GoldenReading, best: GoldenReading | None, tolerance: GoldenTolerance) -> str:
    """Why `want` found no match, given the reading nearest to it: what differs."""
    expected = f"expected {_says(want)} at {_box(want)} (confidence {want.confidence:.2f})"
    if best is None:
        return f"{expected}, nothing read there"
    overlap = iou(best.bbox, want.bbox)
    if not _same_sign(best, want):
        why = f"read {_says(best)} instead"
    elif overlap < tolerance.min_iou:
        why = f"box overlap IoU {overlap:.2f} < {tolerance.min_iou}"
    else:
        why = f"confidence {best.confidence:.2f} differs by more than {tolerance.confidence_abs}"
    return (
        f"{expected}, nearest read {_says(best)} at {_box(best)} "
        f"(IoU {overlap:.2f}, confidence {best.confidence:.2f}): {why}"
    )


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    """The bytes of `path`, refused by size before any is read."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise ModelError(f"{what} is {size} bytes, over the {limit}-byte limit; not read")
        with path.open("rb") as f:
            data = f.read(limit + 1)  # the file may have grown since stat
    except OSError as e:
        raise ModelError(f"{what} cannot be read: {e}") from e
    if len(data) > limit:
        raise ModelError(f"{what} is over the {limit}-byte limit; not read")
    return data


def load_golden(bundle_dir: Path) -> GoldenSet:
    """The golden set of the bundle in `bundle_dir`; ModelError if it has none or it is invalid."""
    path = bundle_dir / GOLDEN_INDEX
    if not path.is_file():
        raise ModelError(f"bundle {bundle_dir} has no golden set ({GOLDEN_INDEX} is missing)")
    data = _read_limited(path, MAX_INDEX_BYTES, f"golden set {path}")
    try:
        golden = GoldenSet.model_validate_json(data)
    except ValidationError as e:
        raise ModelError(f"invalid golden set {path}: {e}") from e
    images = [entry.image for entry in golden.entries]
    if len(set(images)) != len(images):
        raise ModelError(f"invalid golden set {path}: an image is listed twice")
    return golden


def golden_image_bytes(bundle_dir: Path, entry: GoldenEntry) -> bytes:
    """The bytes of a golden image, its place, size, sha256 and header checked."""
    path = bundle_dir / entry.image
    root = (bundle_dir / GOLDEN_DIR).resolve()
    if path.resolve().parent != root:  # a symlink out of the bundle
        raise ModelError(f"golden image {entry.image} lies outside {bundle_dir / GOLDEN_DIR}")
    data = _read_limited(path, MAX_IMAGE_BYTES, f"golden image {entry.image}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ModelError(
            f"golden image {entry.image} has sha256 {digest[:12]}... but golden.json says "
            f"{entry.sha256[:12]}...: tampered or corrupt"
        )
    try:
        header = read_image_header(data)
    except ImageHeaderError as e:
        raise ModelError(f"golden image {entry.image} is not a readable image: {e}") from e
    if max(header.width, header.height) > MAX_IMAGE_SIDE:
        raise ModelError(
            f"golden image {entry.image} is {header.width}x{header.height}, over "
            f"{MAX_IMAGE_SIDE} px a side; not decoded"
        )
    return data


def decode_golden_image(entry: GoldenEntry, data: bytes) -> np.ndarray:
    """The checked bytes of a golden image (`golden_image_bytes`) as RGB pixels."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ModelError(f"golden image {entry.image} does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_golden_image(bundle_dir: Path, entry: GoldenEntry) -> np.ndarray:
    """A golden image as RGB, its size, sha256 and header checked before it is decoded."""
    return decode_golden_image(entry, golden_image_bytes(bundle_dir, entry))


def _read(reader: ReadsSigns, image: np.ndarray, confidence: float) -> list[GoldenReading]:
    return [as_golden(r) for r in reader.read(image, confidence=confidence)]


def check_golden(reader: ReadsSigns, bundle_dir: Path) -> GoldenResult:
    """Read the bundle's golden images with `reader` and compare with the recorded readings.

    Raises ModelError when the bundle has no golden set or an invalid, oversized or tampered
    one; a bundle that reads its images differently gets ``passed=False`` and a detail naming
    each image and what differs.
    """
    golden = load_golden(bundle_dir)
    tolerance = golden.tolerance
    # Every file is checked before the first is read, so a tampered set is refused as such
    # whatever the reader would make of it; each is decoded only when its turn comes.
    images = [(entry, golden_image_bytes(bundle_dir, entry)) for entry in golden.entries]
    confidence = max(golden.read_confidence - tolerance.confidence_abs, _CONFIDENCE_FLOOR)
    floor = golden.read_confidence + tolerance.confidence_abs
    checks = tuple(
        compare_image(
            entry.image,
            entry.readings,
            _read(reader, decode_golden_image(entry, data), confidence),
            tolerance,
            extra_floor=floor,
        )
        for entry, data in images
    )
    expected = sum(c.expected for c in checks)
    matched = sum(c.matched for c in checks)
    recall_ok = matched >= math.ceil(tolerance.min_recall * expected - 1e-9)
    extra_ok = all(c.extra <= tolerance.max_extra for c in checks)
    passed = recall_ok and extra_ok
    summary = f"{matched} of {expected} golden readings on {len(checks)} images reproduced"
    problems = [p for c in checks for p in c.problems]
    if passed:
        head = summary + (" (within tolerance: " if problems else "")
        detail = _bounded(head, problems) + (")" if problems else "")
    else:
        need = math.ceil(tolerance.min_recall * expected - 1e-9)
        detail = _bounded(f"golden check failed: {summary}, {need} needed; ", problems)
    return GoldenResult(passed, detail, matched, expected, checks)


def _bounded(head: str, problems: Sequence[str]) -> str:
    """`head` and as many problems as fit in `MAX_DETAIL` characters, then how many more."""

    def more(left: int) -> str:
        return f" ... and {left} more (see per_image)" if left else ""

    text = head
    for shown, problem in enumerate(problems):
        longer = text + ("; " if shown else "") + problem
        if len(longer) + len(more(len(problems) - shown - 1)) > MAX_DETAIL:
            return text + more(len(problems) - shown)
        text = longer
    return text


def record_golden(
    reader: ReadsSigns,
    bundle_dir: Path,
    images: Sequence[np.ndarray],
    tolerance: GoldenTolerance | None = None,
    *,
    read_confidence: float = 0.25,
    jpeg_quality: int = 85,
) -> GoldenSet:
    """Write the bundle's golden set: `images` (RGB) as JPEG files and what `reader` reads on them.

    Each image is read from its written file's bytes, as the check will read it. Readings below
    ``read_confidence + tolerance.confidence_abs`` are left out (see the module docstring). A
    previous golden set is replaced whole.
    """
    tolerance = tolerance or GoldenTolerance()
    if not images:
        raise ModelError("a golden set needs at least one image")
    floor = read_confidence + tolerance.confidence_abs
    staging = bundle_dir / f".{GOLDEN_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        entries = []
        for number, rgb in enumerate(images, start=1):
            name = f"{number:04d}.jpg"
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            if not ok or encoded.size > MAX_IMAGE_BYTES:
                raise ModelError(f"golden image {number} does not encode within the limit")
            data = encoded.tobytes()
            (staging / name).write_bytes(data)
            decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
            if decoded is None:
                raise ModelError(f"golden image {number} does not decode after encoding")
            decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
            readings = [r for r in _read(reader, decoded, read_confidence) if r.confidence >= floor]
            entries.append(
                GoldenEntry(
                    image=f"{GOLDEN_DIR}/{name}",
                    sha256=hashlib.sha256(data).hexdigest(),
                    readings=readings,
                )
            )
        golden = GoldenSet(
            version=1, read_confidence=read_confidence, tolerance=tolerance, entries=entries
        )
        text = golden.model_dump_json(indent=2) + "\n"
        if len(text.encode()) > MAX_INDEX_BYTES:
            raise ModelError(f"the golden set would be over {MAX_INDEX_BYTES} bytes")
        (staging / "golden.json").write_text(text)
        shutil.rmtree(bundle_dir / GOLDEN_DIR, ignore_errors=True)
        staging.rename(bundle_dir / GOLDEN_DIR)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    load_golden(bundle_dir)  # what was written must read back
    return golden
