"""The shipped model bundle: detector and classifier artifacts, measured, with a model card.

`assemble_bundle` copies the INT8 detectors (and, if asked, the FP32 ones) and the classifier
into one folder with a ``bundle.json`` index (its golden set, ``training/golden.py``, is written
from the assembled bundle). `measure_bundle` scores the bundle exactly as a
device runs it (the edge agent's `SignReader`) on real images no training step saw, and
`measure_scenes` reads the GTSDB evaluation scenes with each INT8 detector through
``roadsign-agent predict``'s code and draws the precision-recall curve into the bundle folder;
`write_model_card` records those numbers, the data and its licences, and the command.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from edge_agent.bundle import BUNDLE_INDEX, BundleIndex, ModelFormat, load_bundle
from edge_agent.golden import GOLDEN_DIR
from edge_agent.profile import DeviceProfile
from edge_agent.reading.signs import load_reader
from fleet_protocol.taxonomy import SignType
from training.classifier.evaluate import evaluate_classifier
from training.data.records import LabeledImage
from training.data.shared_sets import RealWorldPhoto
from training.data.sign_art import load_rgb
from training.detector.scene_eval import SWEEP_CONFIDENCE, evaluate_scenes, write_pr_plot
from training.exceptions import TrainingError

SHIPPED_FORMATS: tuple[ModelFormat, ...] = ("openvino_int8", "onnx_int8")
INT8_BACKENDS: tuple[tuple[str, ModelFormat], ...] = (
    ("openvino", "openvino_int8"),
    ("onnxruntime", "onnx_int8"),
)
"""The runtimes a bundle is measured on, the device default (OpenVINO) first, and their detector."""
SCENES_PR_CURVE = "gtsdb_scenes_pr_curve.png"
"""The precision-recall curve on the GTSDB evaluation scenes, in the bundle folder."""


def assemble_bundle(
    out_dir: Path,
    *,
    name: str,
    version: str,
    detector_exports: Mapping[ModelFormat, Path],
    classifier: Path,
    formats: Iterable[ModelFormat] = SHIPPED_FORMATS,
    training_weights: Path | None = None,
) -> Path:
    """Copy the chosen artifacts (with sidecars and companions) into `out_dir`; write its index.

    `training_weights` (the detector's PyTorch checkpoint) goes to ``training/detector.pt``:
    devices never load it, but fine-tuning and the ultralytics comparison in
    ``bench/agent_throughput.py`` start from exactly the weights the exports came from.
    """
    detector: dict[ModelFormat, str] = {}
    out_dir.mkdir(parents=True, exist_ok=True)
    # Like each artifact folder below, replaced whole: a checkpoint left from an earlier bundle
    # would pass for the one these exports came from.
    shutil.rmtree(out_dir / "training", ignore_errors=True)
    # So is the golden set: one left from an earlier bundle records another detector's readings.
    shutil.rmtree(out_dir / GOLDEN_DIR, ignore_errors=True)
    # And the scene PR curve: without the scene archive none is drawn for these exports.
    (out_dir / SCENES_PR_CURVE).unlink(missing_ok=True)
    if training_weights is not None:
        (out_dir / "training").mkdir()
        shutil.copy2(training_weights, out_dir / "training" / "detector.pt")
    for model_format in formats:
        artifact = detector_exports.get(model_format)
        if artifact is None:
            raise TrainingError(f"no {model_format} detector export to bundle")
        target = out_dir / "detector" / model_format
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(artifact.parent, target)
        detector[model_format] = f"detector/{model_format}/{artifact.name}"
    classifier_dir = out_dir / "classifier"
    shutil.rmtree(classifier_dir, ignore_errors=True)
    classifier_dir.mkdir(parents=True)
    for path in (classifier, classifier.with_suffix(".json")):
        shutil.copy2(path, classifier_dir / path.name)
    index = BundleIndex(
        name=name, version=version, detector=detector, classifier=f"classifier/{classifier.name}"
    )
    (out_dir / BUNDLE_INDEX).write_text(json.dumps(index.model_dump(mode="json"), indent=2) + "\n")
    load_bundle(out_dir)  # what was written must read back
    return out_dir


def real_world_correct(
    bundle: Path, photos: Iterable[RealWorldPhoto], *, backend: str, threads: int
) -> tuple[int, list[dict[str, object]]]:
    """Photos whose most confident speed-limit reading has the right value, and the details."""
    reader = load_reader(bundle, backend=backend, threads=threads)
    correct, details = 0, []
    for photo in photos:
        readings = [
            r for r in reader.read(load_rgb(photo.path)) if r.sign_type is SignType.SPEED_LIMIT
        ]
        read = readings[0].value if readings else None
        correct += read == photo.speed_kmh
        details.append({"photo": photo.path.name, "speed": photo.speed_kmh, "read": read})
    return correct, details


def measure_bundle(
    bundle: Path,
    parts: dict[str, list[LabeledImage]],
    photos: list[RealWorldPhoto],
    *,
    threads: int,
) -> dict[str, object]:
    """The shipped numbers, measured with the bundle's own artifacts and the agent's code."""
    index = load_bundle(bundle)
    crops = evaluate_classifier(
        bundle / index.classifier, parts, backend="openvino", threads=threads
    )
    correct: dict[str, int] = {}
    details: dict[str, list[dict[str, object]]] = {}
    for backend, model_format in INT8_BACKENDS:
        if model_format in index.detector:
            correct[backend], details[backend] = real_world_correct(
                bundle, photos, backend=backend, threads=threads
            )
    if not correct:
        raise TrainingError(f"bundle {bundle} has no INT8 detector to measure")
    metrics: dict[str, object] = {
        **{k: round(v, 4) for k, v in crops.metrics.items() if not np.isnan(v)},
        "gtsdb_realworld_correct": correct.get("openvino", next(iter(correct.values()))),
        "gtsdb_realworld_total": len(photos),
        "gtsdb_realworld_correct_by_backend": correct,
        "gtsdb_realworld_readings": details,
    }
    return metrics


def _headline(metrics: Mapping[str, object]) -> dict[str, object]:
    """Recall, precision and reading accuracy of one `evaluate_scenes` result."""
    everything, speed = metrics["all_signs"], metrics["speed_limit"]
    assert isinstance(everything, dict)
    assert isinstance(speed, dict)
    return {
        "all_signs": {k: everything[k] for k in ("recall", "precision", "class_top1")},
        "speed_limit": {k: speed[k] for k in ("recall", "precision", "value_exact")},
    }


def measure_scenes(
    bundle: Path, scenes_root: Path, *, threads: int, limit: int | None = None
) -> dict[str, object]:
    """The bundle on the GTSDB evaluation scenes (00600-00899; the first `limit` of them), read
    by ``roadsign-agent predict``'s code under a default profile's tiling, with each INT8
    detector. The first runtime's numbers are the headline; its precision-recall curve is drawn
    into the bundle folder (`SCENES_PR_CURVE`)."""
    index = load_bundle(bundle)
    backends = [backend for backend, fmt in INT8_BACKENDS if fmt in index.detector]
    if not backends:
        raise TrainingError(f"bundle {bundle} has no INT8 detector to measure")
    tiling = DeviceProfile().detector.tiling.policy()
    results = {
        # Only the headline runtime's curve is drawn: the other skips the sweep run.
        backend: evaluate_scenes(
            bundle,
            scenes_root,
            backend=backend,
            threads=threads,
            tiling=tiling,
            limit=limit,
            sweep_confidence=None if backend != backends[0] else SWEEP_CONFIDENCE,
        )
        for backend in backends
    }
    headline = results[backends[0]]
    write_pr_plot(headline, bundle / SCENES_PR_CURVE)
    return {
        "backend": backends[0],
        **{k: headline[k] for k in ("scenes", "detection_confidence", "min_iou", "tiling")},
        **{k: headline[k] for k in ("all_signs", "speed_limit", "per_category")},
        "by_backend": {backend: _headline(result) for backend, result in results.items()},
        "pr_curve_png": SCENES_PR_CURVE,
    }


def scene_metric_values(scenes: Mapping[str, object]) -> dict[str, float]:
    """The headline scene numbers of `measure_scenes` as flat MLflow metrics
    (``gtsdb_scenes.all_signs.recall``, ``gtsdb_scenes.onnxruntime.speed_limit.recall``...);
    rates with nothing to count (None) are left out."""
    by_backend = scenes["by_backend"]
    assert isinstance(by_backend, dict)
    values: dict[str, float] = {}
    for backend, numbers in by_backend.items():
        prefix = "gtsdb_scenes" if backend == scenes["backend"] else f"gtsdb_scenes.{backend}"
        for group, rates in numbers.items():
            values |= {
                f"{prefix}.{group}.{name}": float(value)
                for name, value in rates.items()
                if isinstance(value, int | float)
            }
    return values


DATA_SOURCES = """\
| data | used for | licence |
|---|---|---|
| GTSRB training set (German, 43 classes; 32x32 copies and native-size speed crops) | classifier training and validation (split by track); real sign faces in rendered detector scenes | research use (Stallkamp et al. 2012) |
| GTSRB official test set (12,630 images) | classifier test only | research use |
| GTSDB speed-limit crops and 17 real-world photos | test only | GTSDB research use; repository Apache-2.0 |
| TT100K sign crops and background crops (Chinese street views) | classifier and scene faces (train split by street-view id); held-out test split | research use; repository MIT |
| US "SPEED LIMIT" plates (95 web images) | classifier and scene faces (train split); held-out test split | unknown (web images) |
| procedurally drawn signs | speed values and sign kinds the real sets lack | ours |
"""


def _size_mb(artifact: Path) -> float:
    """Size of an artifact with its companion files (OpenVINO's .bin), in MB."""
    from edge_agent.bundle import load_metadata

    companions = load_metadata(artifact, verify=False).companions
    return (
        sum((artifact.parent / name).stat().st_size for name in [artifact.name, *companions]) / 1e6
    )


SCENES_HEADING = "\n## GTSDB evaluation scenes (00600-00899)"
DATA_HEADING = "\n## Data"


def _rate_cell(rates: Mapping[str, object], key: str) -> str:
    value = rates.get(key)
    return f"{value:.3f}" if isinstance(value, int | float) else "n/a"


def scenes_section(scenes: Mapping[str, object] | None) -> str:
    """The model card's section on the GTSDB evaluation scenes (`measure_scenes`'s numbers)."""
    if scenes is None:
        return ""
    by_backend = scenes["by_backend"]
    everything, speed = scenes["all_signs"], scenes["speed_limit"]
    assert isinstance(by_backend, dict)
    assert isinstance(everything, dict)
    assert isinstance(speed, dict)
    rows = [
        ("all signs, recall", "all_signs", "recall"),
        ("all signs, precision", "all_signs", "precision"),
        ("class top-1 on matched signs", "all_signs", "class_top1"),
        ("speed limits, recall", "speed_limit", "recall"),
        ("speed limits, precision", "speed_limit", "precision"),
        ("speed value exact on matched speed limits", "speed_limit", "value_exact"),
    ]
    backends = list(by_backend)
    table = "\n".join(
        f"| {label} | " + " | ".join(_rate_cell(by_backend[b][group], key) for b in backends) + " |"
        for label, group, key in rows
    )
    sizes = everything["recall_by_size"]
    speed_sizes = speed["recall_by_size"]
    assert isinstance(sizes, dict)
    assert isinstance(speed_sizes, dict)
    size_rows = "\n".join(
        f"| {size} | {row['signs']} | {_rate_cell(row, 'recall')} | "
        f"{speed_sizes[size]['signs']} | {_rate_cell(speed_sizes[size], 'recall')} |"
        for size, row in sizes.items()
    )
    return f"""{SCENES_HEADING}

{scenes["scenes"]} real German street scenes no training step saw, read by `roadsign-agent
predict`'s code at its detection threshold {scenes["detection_confidence"]}, tiled as a default
profile tiles; a reading matches a sign at IoU >= {scenes["min_iou"]} (`metrics.json`:
`gtsdb_scenes`, with per-category numbers; precision-recall curve of {scenes["backend"]}:
`{scenes["pr_curve_png"]}`):

| metric | {" | ".join(backends)} |
|---|{"---:|" * len(backends)}
{table}

Recall by sign size ({scenes["backend"]}; larger side, px at 960x565):

| size | signs | recall | speed limits | recall |
|---|---:|---:|---:|---:|
{size_rows}
"""


def record_scenes(bundle: Path, scenes: Mapping[str, object]) -> None:
    """Put `measure_scenes`'s numbers into an existing bundle's ``metrics.json`` and model card
    (its scenes section replaced, or added before "Data"), leaving every other number as it is:
    a shipped bundle is scored again without assembling it again."""
    metrics_file = bundle / "metrics.json"
    record = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    record["gtsdb_scenes"] = dict(scenes)
    metrics_file.write_text(json.dumps(record, indent=2, default=str) + "\n")
    card_file = bundle / "model_card.md"
    if not card_file.is_file():
        return
    card = card_file.read_text()
    start, end = card.find(SCENES_HEADING), card.find(DATA_HEADING)
    if 0 <= start < end:
        card = card[:start] + card[end:]
    end = card.find(DATA_HEADING)
    end = len(card) if end < 0 else end
    card_file.write_text(card[:end] + scenes_section(scenes) + card[end:])


def write_model_card(
    bundle: Path,
    metrics: Mapping[str, object],
    *,
    detector: Mapping[str, object],
    command: str,
    runs: Mapping[str, str],
) -> Path:
    """Write ``model_card.md`` and ``metrics.json`` beside the bundle's index."""
    index = load_bundle(bundle)
    shipped = {k: v for k, v in metrics.items() if k != "gtsdb_realworld_readings"}
    record = {
        **shipped,
        **{k: v for k, v in detector.items() if k.startswith("int8_map50_drop")},
        "detector_map50_synthetic_val": detector.get("onnx_fp32.map50"),
        "runs": dict(runs),
    }
    (bundle / "metrics.json").write_text(json.dumps(record, indent=2, default=str) + "\n")

    def pct(key: str) -> str:
        value = metrics.get(key)
        return f"{100 * float(value):.1f}%" if isinstance(value, int | float) else "n/a"

    readings = metrics.get("gtsdb_realworld_readings", {})
    assert isinstance(readings, dict)
    scenes = metrics.get("gtsdb_scenes")
    assert scenes is None or isinstance(scenes, dict)
    backends = sorted(readings)
    photo_rows = "\n".join(
        f"| {row['photo']} | {row['speed']} | "
        + " | ".join(str(readings[b][i]["read"]) for b in backends)
        + " |"
        for i, row in enumerate(readings[backends[0]] if backends else [])
    )
    sizes = "\n".join(
        f"| `{path}` | {_size_mb(bundle / path):.1f} MB |"
        for path in [*index.detector.values(), index.classifier]
    )
    checkpoint = bundle / "training" / "detector.pt"
    weights_line = (
        "`training/detector.pt` is the detector's PyTorch checkpoint the exports came from "
        f"({checkpoint.stat().st_size / 1e6:.1f} MB), for fine-tuning and comparisons; devices "
        "never load it.\n"
        if checkpoint.is_file()
        else ""
    )
    card = f"""# Model card: {index.name} {index.version}

Road-sign reading for RoadSign Fleet devices: a YOLOv8 detector finds signs by shape and colour
category, a small CNN classifies each crop into the 43 GTSRB classes (or "other") and reads the
speed value printed on it (5-130, km/h or mph).

## Artifacts

| artifact | size |
|---|---|
{sizes}

Every artifact has a JSON sidecar (labels, input size, pre-processing, sha256, source run).
{weights_line}
## Measured on real images no training step saw

Measured with the edge agent's own code and this bundle's artifacts:

| metric | value |
|---|---|
| GTSRB official test set, 43-class top-1 (`gtsrb_test32_top1`) | {pct("gtsrb_test32_top1")} |
| GTSDB speed crops >= 30 px, speed read exactly (`gtsdb_speed_crops_exact`) | {pct("gtsdb_speed_crops_exact")} |
| TT100K held-out speed-limit crops >= 30 px, exact (`tt100k_speed_crops_exact`) | {pct("tt100k_speed_crops_exact")} |
| US held-out mph plates >= 30 px, exact (`us_speed_crops_exact`) | {pct("us_speed_crops_exact")} |
| GTSDB real-world photos, sign found and speed right (`gtsdb_realworld_correct`) | {metrics.get("gtsdb_realworld_correct")} of {metrics.get("gtsdb_realworld_total")} |
| INT8 mAP50 drop vs FP32, ONNX / OpenVINO (points, synthetic validation scenes) | {detector.get("int8_map50_drop_onnx", "n/a")} / {detector.get("int8_map50_drop_openvino", "n/a")} |

Speed read on each real-world photo (the most confident speed-limit reading; None: none):

| photo | true speed | {" | ".join(backends)} |
|---|---|{"---|" * len(backends)}
{photo_rows}
{scenes_section(scenes)}
{DATA_HEADING.lstrip()}

{DATA_SOURCES}
The detector learns from rendered scenes only: real and drawn sign faces composited onto
procedural streets and real sign-free street-view crops (see `training/data/synth.py`). Splits
never share a physical sign (GTSRB by track, TT100K by street-view image id).

## Intended use

Reading traffic signs from vehicle and roadside cameras for fleet telemetry and map updates. Not
a driver-assistance or safety function: readings are advisory and carry a confidence.

## Known limits

- The detector has never seen a real photo with labelled boxes: its real-world recall is what
  the 17-photo check and the GTSDB evaluation scenes above say, not its synthetic mAP.
- Classes GTSRB lacks are "other" to the classifier; only the speed value generalises.
- Supplementary plates and the text on them are detected, not read (OCR is the agent's).
- Night, heavy rain and glare are only simulated.

## Reproduce

    {command.replace(chr(10), chr(10) + "    ")}

Runs: {", ".join(f"{k} `{v}`" for k, v in runs.items())}
"""
    path = bundle / "model_card.md"
    path.write_text(card)
    return path
