"""``roadsign-train``: the training pipeline's command line, one command per stage.

Only the standard library and the protocol package load at start; each stage imports its stack
(OpenCV, torch, ultralytics) when it runs. Every stage builds the one `TrainingConfig` from
``--config`` plus ``ROADSIGN_TRAIN__*`` variables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel

from fleet_protocol.config_files import add_validate_config_command, load_config, run_command
from fleet_protocol.exceptions import ConfigFileError

DEFAULT_CONFIG = Path("training/configs/default.yaml")


def _config_schema() -> tuple[type[BaseModel], str]:
    from training.config import ENV_PREFIX, TrainingConfig

    return TrainingConfig, ENV_PREFIX


def _stage(run: Callable[[BaseModel], dict[str, object]]) -> Callable[[argparse.Namespace], int]:
    """Wrap a stage: build the config, run, print its summary; known failures exit 1."""

    def handler(args: argparse.Namespace) -> int:
        from training.exceptions import TrainingError

        model, env_prefix = _config_schema()
        try:
            config = load_config(model, args.config, env=os.environ, env_prefix=env_prefix)
            summary = run(config)
        except (ConfigFileError, TrainingError) as e:
            sys.stderr.write(f"roadsign-train {args.command}: {e}\n")
            return 1
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return 0

    return handler


def _data(config: BaseModel) -> dict[str, object]:
    from training.config import TrainingConfig
    from training.data.build import build_datasets

    assert isinstance(config, TrainingConfig)
    return build_datasets(config.data, config.data.out_dir / config.name).summary()


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
    stages: dict[str, tuple[Callable[[BaseModel], dict[str, object]], str]] = {
        "data": (
            _data,
            "Unpack the real sets, split them without leaks, write manifests and "
            "render the synthetic detector scenes.",
        ),
    }
    for name, (run, text) in stages.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="training config")
        sub.set_defaults(handler=_stage(run))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-train``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
