"""``roadsign-train``: the training pipeline's command line, one command per stage.

Only the standard library and the protocol package load at start; each stage imports its stack
(OpenCV, torch, ultralytics) when it runs. Every stage builds the one `TrainingConfig` from
``--config`` plus ``ROADSIGN_TRAIN__*`` variables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from fleet_protocol.config_files import add_validate_config_command, load_config, run_command
from fleet_protocol.exceptions import ConfigFileError

if TYPE_CHECKING:
    from edge_agent.reading.tiling import TilingPolicy
    from training.data.build import DatasetBuild

DEFAULT_CONFIG = Path("training/configs/default.yaml")


def _config_schema() -> tuple[type[BaseModel], str]:
    from training.config import ENV_PREFIX, TrainingConfig

    return TrainingConfig, ENV_PREFIX


Stage = Callable[[BaseModel, argparse.Namespace], dict[str, object]]


def _stage(run: Stage) -> Callable[[argparse.Namespace], int]:
    """Wrap a stage: build the config, run, print its summary; known failures exit 1."""

    def handler(args: argparse.Namespace) -> int:
        from training.exceptions import TrainingError

        model, env_prefix = _config_schema()
        try:
            config = load_config(model, args.config, env=os.environ, env_prefix=env_prefix)
            if getattr(args, "tracking_uri", None):
                mlflow = config.mlflow.model_copy(update={"tracking_uri": args.tracking_uri})  # type: ignore[attr-defined]
                config = config.model_copy(update={"mlflow": mlflow})
            # Libraries (ultralytics, NNCF) print progress to stdout; stdout carries only the
            # JSON summary, so their output goes to stderr with ours.
            with contextlib.redirect_stdout(sys.stderr):
                summary = run(config, args)
        except (ConfigFileError, TrainingError) as e:
            sys.stderr.write(f"roadsign-train {args.command}: {e}\n")
            return 1
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return 0

    return handler


def _data(config: BaseModel, args: argparse.Namespace) -> dict[str, object]:
    from training.config import TrainingConfig
    from training.data.build import build_datasets

    assert isinstance(config, TrainingConfig)
    return build_datasets(config.data, config.data.out_dir / config.name).summary()


def _classifier(
    config: BaseModel, args: argparse.Namespace, build: DatasetBuild | None = None
) -> dict[str, object]:
    from training.classifier.stage import run_classifier_stage
    from training.config import TrainingConfig
    from training.data.build import build_datasets

    assert isinstance(config, TrainingConfig)
    if build is None:
        build = build_datasets(config.data, config.data.out_dir / config.name, scenes=False)
    return run_classifier_stage(config, build, resume=args.resume)


def _detector(
    config: BaseModel, args: argparse.Namespace, build: DatasetBuild | None = None
) -> dict[str, object]:
    from training.config import TrainingConfig
    from training.data.build import build_datasets
    from training.detector.stage import run_detector_stage

    assert isinstance(config, TrainingConfig)
    if build is None or build.data_yaml is None:
        build = build_datasets(config.data, config.data.out_dir / config.name)
    return run_detector_stage(config, build, resume=args.resume)


def _bundle(
    config: BaseModel, args: argparse.Namespace, build: DatasetBuild | None = None
) -> dict[str, object]:
    from edge_agent.bundle import load_metadata
    from training.bundle import (
        SCENES_PR_CURVE,
        assemble_bundle,
        measure_bundle,
        measure_scenes,
        scene_metric_values,
        write_model_card,
    )
    from training.config import TrainingConfig
    from training.data.build import build_datasets
    from training.data.shared_sets import ensure_unpacked, read_gtsdb_real_world
    from training.detector.export import ARTIFACTS
    from training.exceptions import TrainingError
    from training.golden import write_golden_set
    from training.registry import run_params
    from training.tracking import log_to_run

    assert isinstance(config, TrainingConfig)
    work = config.data.out_dir / config.name
    exports = {
        fmt: work / "detector" / "export" / fmt / name
        for fmt, name in ARTIFACTS.items()
        if (work / "detector" / "export" / fmt / name).is_file()
    }
    classifier = work / "classifier" / "export" / "classifier.onnx"
    report = work / "detector" / "export" / "detector_metrics.json"
    if not exports or not classifier.is_file() or not report.is_file():
        raise TrainingError(f"run the classifier and detector stages first (nothing in {work})")
    detector_meta = load_metadata(next(iter(exports.values())))
    out = args.out or Path("models") / config.name
    weights = work / "detector" / "train" / "weights" / "best.pt"
    bundle = assemble_bundle(
        out,
        name=f"roadsign-{config.name}",
        version=detector_meta.version,
        detector_exports=exports,
        classifier=classifier,
        training_weights=weights if weights.is_file() else None,
    )
    if build is None:
        build = build_datasets(config.data, work, scenes=False)
    photos = read_gtsdb_real_world(
        ensure_unpacked(config.data.shared_data_dir, "gtsdb_speed", config.data.cache_dir)
    )
    metrics = measure_bundle(bundle, build.parts, photos, threads=config.export.threads)
    if (config.data.shared_data_dir / "gtsdb_scenes.tar.gz").is_file():
        metrics["gtsdb_scenes"] = measure_scenes(
            bundle,
            ensure_unpacked(config.data.shared_data_dir, "gtsdb_scenes", config.data.cache_dir),
            threads=config.export.threads,
            limit=config.export.gtsdb_eval_scenes,
        )
    detector = {k: v for k, v in json.loads(report.read_text()).items() if not isinstance(v, dict)}
    detector["onnx_fp32.map50"] = json.loads(report.read_text())["onnx_fp32"]["map50"]
    runs = {
        "detector": str(detector_meta.source_run_id),
        "classifier": str(load_metadata(classifier).source_run_id),
    }
    command = f"roadsign-train pipeline --config {args.config} --out {out}"
    params = run_params(config.mlflow.tracking_uri, runs["detector"])
    continued = params.get("detector.init_weights", "None") != "None"
    epochs, warmup = params.get("detector.epochs"), params.get("detector.warmup_epochs")
    if continued and epochs == "0" and weights.is_file():
        # Exported again, not trained: the checkpoint's own training is the recipe (its
        # exports now come from the current exporter either way).
        from training.detector.train import checkpoint_train_args

        trained_with = checkpoint_train_args(weights)
        continued = isinstance(trained_with.get("pretrained"), str)
        epochs, warmup = trained_with.get("epochs"), trained_with.get("warmup_epochs")
    if continued:
        # The shipped detector continued the pipeline's from its checkpoint: say how.
        command += (
            f"\nROADSIGN_TRAIN__DETECTOR__INIT_WEIGHTS={out}/training/detector.pt "
            f"ROADSIGN_TRAIN__DETECTOR__EPOCHS={epochs} "
            f"ROADSIGN_TRAIN__DETECTOR__WARMUP_EPOCHS={warmup} \\\n"
            f"    roadsign-train detector --config {args.config}"
            f"\nroadsign-train bundle --config {args.config} --out {out}"
        )
    write_model_card(bundle, metrics, detector=detector, command=command, runs=runs)
    scenes = metrics.get("gtsdb_scenes")
    if isinstance(scenes, dict) and detector_meta.source_run_id is not None:
        log_to_run(
            config.mlflow.tracking_uri,
            runs["detector"],
            metrics=scene_metric_values(scenes),
            artifacts={bundle / SCENES_PR_CURVE: "gtsdb_scenes"},
        )
    golden = write_golden_set(bundle, threads=config.export.threads)
    return {
        "bundle": str(bundle),
        "golden_images": golden["images"],
        "golden_readings": golden["readings"],
        **{k: v for k, v in metrics.items() if k != "gtsdb_realworld_readings"},
    }


def _pipeline(config: BaseModel, args: argparse.Namespace) -> dict[str, object]:
    from training.config import TrainingConfig
    from training.data.build import build_datasets

    assert isinstance(config, TrainingConfig)
    # Split and manifest the real sets once for every stage (a minute or more on the full sets).
    build = build_datasets(config.data, config.data.out_dir / config.name)
    return {
        "classifier": _classifier(config, args, build),
        "detector": _detector(config, args, build),
        "bundle": _bundle(config, args, build),
    }


def _scene_tiling(args: argparse.Namespace) -> TilingPolicy:
    """How evaluate-scenes looks at a scene: the profile's ``detector.tiling`` (a default
    profile's without one), or whole scenes with --no-tiles."""
    from edge_agent.profile import read_profile

    return read_profile(args.profile, os.environ).detector.tiling.policy(tiles=not args.no_tiles)


def _evaluate_scenes(config: BaseModel, args: argparse.Namespace) -> dict[str, object]:
    from training.config import TrainingConfig
    from training.data.shared_sets import ensure_unpacked
    from training.detector.scene_eval import evaluate_scenes, write_metrics, write_pr_plot

    assert isinstance(config, TrainingConfig)
    root = ensure_unpacked(config.data.shared_data_dir, "gtsdb_scenes", config.data.cache_dir)
    if args.into_bundle:
        from training.bundle import measure_scenes, record_scenes
        from training.exceptions import TrainingError

        if args.out or args.profile or args.no_tiles:
            raise TrainingError(
                "--into-bundle scores as the bundle stage does: no --out, --profile or --no-tiles"
            )

        scenes = measure_scenes(
            args.bundle, root, threads=args.threads, limit=config.export.gtsdb_eval_scenes
        )
        record_scenes(args.bundle, scenes)
        return scenes
    metrics = evaluate_scenes(
        args.bundle,
        root,
        backend=args.backend,
        threads=args.threads,
        confidence=args.confidence,
        tiling=_scene_tiling(args),
    )
    if args.out:
        metrics["files"] = {
            "metrics": str(args.out),
            "pr_curve": str(write_pr_plot(metrics, args.out.with_suffix(".pr_curve.png"))),
        }
        write_metrics(metrics, args.out)
    return metrics


def _promote(config: BaseModel, args: argparse.Namespace) -> dict[str, object]:
    from training.config import TrainingConfig
    from training.registry import promote, registered_name

    assert isinstance(config, TrainingConfig)
    floors = {}
    for item in args.min or []:
        key, sep, value = item.partition("=")
        if not sep:
            from training.exceptions import TrainingError

            raise TrainingError(f"--min takes METRIC=VALUE, got {item!r}")
        floors[key] = float(value)
    name = registered_name(config.mlflow.registered_model, args.format)
    version = promote(
        config.mlflow.tracking_uri, name, args.version, floors=floors, tolerance=args.tolerance
    )
    return {"promoted": f"{version.name}/{version.version}", "metrics": version.metrics}


def _golden(args: argparse.Namespace) -> int:
    """``roadsign-train golden``: (re)write an existing bundle's golden set; needs no config."""
    from training.exceptions import TrainingError
    from training.golden import write_golden_set

    try:
        with contextlib.redirect_stdout(sys.stderr):
            summary = write_golden_set(
                args.bundle, count=args.count, seed=args.seed, threads=args.threads
            )
    except TrainingError as e:
        sys.stderr.write(f"roadsign-train golden: {e}\n")
        return 1
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="roadsign-train",
        description="RoadSign training: datasets, YOLOv8 training, quantised export, registry.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_validate_config_command(
        commands, _config_schema, what="a training config", example="training/configs/smoke.yaml"
    )
    stages: dict[str, tuple[Stage, str]] = {
        "data": (
            _data,
            "Unpack the real sets, split them without leaks, write manifests and "
            "render the synthetic detector scenes.",
        ),
        "classifier": (
            _classifier,
            "Train the crop classifier (sign class and speed value), export it to ONNX and "
            "score it on held-out real crops with the edge runtime; tracked in MLflow.",
        ),
        "detector": (
            _detector,
            "Train the YOLOv8 detector on the rendered scenes, export ONNX and OpenVINO in FP32 "
            "and INT8, score them with the edge runtime, gate INT8, register the versions.",
        ),
        "bundle": (
            _bundle,
            "Assemble the model bundle (INT8 detectors and the classifier), measure it with the "
            "edge agent's code on held-out real images and the GTSDB evaluation scenes, write "
            "metrics.json, model_card.md and the scenes' PR curve, log them to the detector's run.",
        ),
        "pipeline": (
            _pipeline,
            "Run every stage: data, classifier, detector (export, gate, register), bundle.",
        ),
        "evaluate-scenes": (
            _evaluate_scenes,
            "Read the GTSDB evaluation scenes 00600-00899 with a bundle exactly as "
            "`roadsign-agent predict` reads a photo; print recall and precision (all signs, "
            "per category, speed limits), speed value and class accuracy, recall by sign size "
            "and a precision-recall curve as JSON.",
        ),
        "promote": (
            _promote,
            "Move the champion alias of one format's registered model to a version whose "
            "metrics pass the floors and do not trail the current champion.",
        ),
    }
    for name, (run, text) in stages.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config")
        sub.add_argument("--tracking-uri", help="MLflow store or server (overrides the config)")
        if name == "promote":
            sub.add_argument(
                "--format",
                required=True,
                choices=["onnx_fp32", "onnx_int8", "openvino_fp32", "openvino_int8"],
                help="which export",
            )
            sub.add_argument("--version", default="candidate", help="version number or alias")
            sub.add_argument(
                "--min",
                action="append",
                metavar="METRIC=VALUE",
                help="floor a metric must reach, e.g. map50=0.8 (repeatable)",
            )
            sub.add_argument(
                "--tolerance",
                type=float,
                default=0.0,
                help="how far a metric may trail the current champion's",
            )
        elif name == "evaluate-scenes":
            sub.add_argument("--bundle", type=Path, required=True, help="model bundle folder")
            sub.add_argument(
                "--out",
                type=Path,
                help="also write the JSON here, and the PR curve beside it (.pr_curve.png)",
            )
            sub.add_argument(
                "--backend", default="auto", choices=["auto", "openvino", "onnxruntime"]
            )
            sub.add_argument("--threads", type=int, default=2, help="inference threads")
            sub.add_argument(
                "--confidence",
                type=float,
                default=0.25,
                help="detection threshold of the headline numbers (predict's default)",
            )
            sub.add_argument(
                "--profile",
                type=Path,
                help="device profile whose detector.tiling to look with (default: a default "
                "profile's)",
            )
            sub.add_argument(
                "--no-tiles", action="store_true", help="look at each whole scene in one pass"
            )
            sub.add_argument(
                "--into-bundle",
                action="store_true",
                help="score as `roadsign-train bundle` does (each INT8 runtime, a default "
                "profile's tiling, export.gtsdb_eval_scenes) and record it in the bundle's "
                "metrics.json, model card and PR curve, the rest left as it is (--backend, "
                "--confidence, --profile, --no-tiles and --out do not apply)",
            )
        else:
            sub.add_argument(
                "--resume", action="store_true", help="continue from the last checkpoint, if any"
            )
        if name in {"bundle", "pipeline"}:
            sub.add_argument("--out", type=Path, help="bundle folder (default models/<name>)")
        sub.set_defaults(handler=_stage(run))
    text = (
        "Rewrite a bundle's golden set (golden/: images rendered from a seed and the bundle's "
        "own readings of them, which a device reproduces before it activates the bundle)."
    )
    golden = commands.add_parser("golden", help=text, description=text)
    golden.add_argument("--bundle", type=Path, required=True, help="model bundle folder")
    golden.add_argument("--count", type=int, default=6, help="golden images (default 6)")
    golden.add_argument("--seed", type=int, default=0, help="scene seed (default 0)")
    golden.add_argument("--threads", type=int, default=2, help="inference threads")
    golden.set_defaults(handler=_golden)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-train``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
