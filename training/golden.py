"""A bundle's golden set, written at export: rendered scenes and what the bundle reads on them.

Scenes are rendered deterministically from a seed with the project's own drawings (speed limits
in km/h and mph, stop and yield signs) on procedural streets, never from the real data sets, with
signs large enough for the INT8 detector to read (a golden image checks the bundle, not the
detector's far-sign recall). A candidate scene is kept only where every runtime the bundle ships
for reads it alike within half the golden tolerance: a scene the formats disagree on would make a
good bundle fail its own check on some devices, and the other half is left for CPUs other than
this one (INT8 kernels differ between CPUs as much as between runtimes). Scenes with readings
are preferred; a model too weak to read enough of them gets scenes it reads as empty, so that
every exported bundle has a golden set. The set is recorded with
`edge_agent.golden.record_golden`, then checked with every runtime before it is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_agent.bundle import load_bundle
from edge_agent.exceptions import ModelError
from edge_agent.golden import (
    GoldenTolerance,
    ReadsSigns,
    as_golden,
    check_golden,
    compare_image,
    record_golden,
)
from edge_agent.reading.signs import load_reader
from training.data.sign_art import draw_speed_round, draw_stop, draw_us_speed, draw_yield
from training.data.synth import procedural_background
from training.exceptions import TrainingError

WIDTH, HEIGHT = 640, 480
"""Golden scenes are frames of the size most devices' cameras deliver."""
JPEG_QUALITY = 80
SPEEDS_KMH = (30, 50, 60, 70, 80, 100, 120)
SPEEDS_MPH = (25, 35, 45, 55, 65)
KINDS = ("speed", "stop", "speed", "yield", "speed_mph")
MIN_SIGN_PX, MAX_SIGN_PX = 64, 112


@dataclass(frozen=True, slots=True)
class PlantedSign:
    """A sign drawn into a golden scene: what it says and where."""

    kind: str
    value: int | None
    box: tuple[int, int, int, int]


def _face(kind: str, value: int | None) -> np.ndarray:
    if kind == "stop":
        return draw_stop().rgba
    if kind == "yield":
        return draw_yield().rgba
    if kind == "speed_mph":
        return draw_us_speed(value or 55).rgba
    return draw_speed_round(value or 50).rgba


def render_scene(seed: int, index: int) -> tuple[np.ndarray, list[PlantedSign]]:
    """Golden candidate `index` of `seed`: an RGB street with two signs, one per half."""
    rng = np.random.default_rng([seed, index])
    canvas = procedural_background(rng, WIDTH, HEIGHT).astype(np.float32)
    planted = []
    for half in range(2):
        kind = KINDS[(index * 2 + half) % len(KINDS)]
        value = (
            int(rng.choice(SPEEDS_KMH))
            if kind == "speed"
            else int(rng.choice(SPEEDS_MPH))
            if kind == "speed_mph"
            else None
        )
        face = _face(kind, value)
        height = int(rng.integers(MIN_SIGN_PX, MAX_SIGN_PX + 1))
        width = round(height * face.shape[1] / face.shape[0])
        x0 = half * WIDTH // 2 + int(rng.integers(16, WIDTH // 2 - width - 16))
        y0 = int(rng.integers(24, int(HEIGHT * 0.55)))
        small = cv2.resize(face, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = small[..., 3:] / 255
        region = canvas[y0 : y0 + height, x0 : x0 + width]
        canvas[y0 : y0 + height, x0 : x0 + width] = region * (1 - alpha) + small[..., :3] * alpha
        planted.append(PlantedSign(kind, value, (x0, y0, x0 + width, y0 + height)))
    canvas += rng.normal(0, 3, canvas.shape)  # sensor noise, as in the rendered drives
    return np.clip(canvas, 0, 255).astype(np.uint8), planted


def _as_stored(rgb: np.ndarray) -> np.ndarray:
    """The image as the check will see it: through the JPEG the golden set stores."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise TrainingError("a golden scene does not survive JPEG encoding")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def bundle_readers(bundle: Path, *, threads: int) -> dict[str, ReadsSigns]:
    """A reader per runtime the bundle has a detector for, OpenVINO first."""
    index = load_bundle(bundle)
    backends = [
        name
        for name, prefix in (("openvino", "openvino_"), ("onnxruntime", "onnx_"))
        if any(f.startswith(prefix) for f in index.detector)
    ]
    return {name: load_reader(bundle, backend=name, threads=threads) for name in backends}


def agreed_readings(
    image: np.ndarray,
    readers: Sequence[ReadsSigns],
    tolerance: GoldenTolerance,
    *,
    read_confidence: float,
) -> int | None:
    """How many readings the first reader records on `image`, or None where another reader
    (or the first, at the check's looser threshold) would not reproduce them within half of
    `tolerance`'s confidence margin."""
    floor = read_confidence + tolerance.confidence_abs
    margin = tolerance.model_copy(update={"confidence_abs": tolerance.confidence_abs / 2})
    recorded = [
        as_golden(r)
        for r in readers[0].read(image, confidence=read_confidence)
        if r.confidence >= floor
    ]
    looser = max(read_confidence - tolerance.confidence_abs, 0.01)
    for reader in readers:
        actual = [as_golden(r) for r in reader.read(image, confidence=looser)]
        check = compare_image("candidate", recorded, actual, margin, extra_floor=floor)
        if check.problems:
            return None
    return len(recorded)


def write_golden_set(
    bundle: Path,
    *,
    count: int = 6,
    seed: int = 0,
    threads: int = 2,
    max_candidates: int = 60,
    tolerance: GoldenTolerance | None = None,
    read_confidence: float = 0.25,
) -> dict[str, object]:
    """(Re)write the golden set of `bundle` from `count` rendered scenes; return a summary."""
    tolerance = tolerance or GoldenTolerance()
    if count < 1:
        raise TrainingError(f"a golden set needs at least one image, not {count}")
    try:
        readers = bundle_readers(bundle, threads=threads)
    except ModelError as e:
        raise TrainingError(f"cannot load bundle {bundle} for its golden set: {e}") from e
    if not readers:
        raise TrainingError(f"bundle {bundle} has no detector a runtime here can run")
    # Scenes with readings first; scenes every runtime reads as empty only where too few have
    # readings (a weak model still gets a golden set: it loads and reads nothing spurious).
    read: list[tuple[np.ndarray, list[PlantedSign]]] = []
    empty: list[tuple[np.ndarray, list[PlantedSign]]] = []
    tried = 0
    while len(read) < count and tried < max_candidates:
        rgb, signs = render_scene(seed, tried)
        tried += 1
        agreed = agreed_readings(
            _as_stored(rgb), list(readers.values()), tolerance, read_confidence=read_confidence
        )
        if agreed is not None:
            (read if agreed else empty).append((rgb, signs))
    chosen = (read + empty)[:count]
    if len(chosen) < count:
        raise TrainingError(
            f"only {len(chosen)} of {tried} rendered scenes read alike on "
            f"{', '.join(readers)}; {count} needed for a golden set"
        )
    recorder = next(iter(readers.values()))
    try:
        golden = record_golden(
            recorder,
            bundle,
            [rgb for rgb, _ in chosen],
            tolerance,
            read_confidence=read_confidence,
            jpeg_quality=JPEG_QUALITY,
        )
        results = {name: check_golden(reader, bundle) for name, reader in readers.items()}
    except ModelError as e:
        raise TrainingError(f"cannot write the golden set of {bundle}: {e}") from e
    failed = {name: r.detail for name, r in results.items() if not r.passed}
    if failed:
        raise TrainingError(f"the golden set just written fails its own check: {failed}")
    return {
        "golden": str(bundle / "golden"),
        "images": len(golden.entries),
        "images_with_readings": sum(bool(e.readings) for e in golden.entries),
        "readings": sum(len(e.readings) for e in golden.entries),
        "scenes_tried": tried,
        "checked_with": {name: r.detail for name, r in results.items()},
        "planted": [[asdict(s) for s in signs] for _, signs in chosen],
    }
