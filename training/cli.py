"""``roadsign-train``: the training pipeline's command line.

Only the standard library loads at start; torch and ultralytics load inside the stages using them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


def _validate_config(args: argparse.Namespace) -> int:
    from fleet_protocol.config_files import validate_config_file
    from training.config import ENV_PREFIX, TrainingConfig

    return validate_config_file(
        TrainingConfig, args.file, env=os.environ, env_prefix=ENV_PREFIX, out=sys.stdout
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="roadsign-train",
        description="RoadSign training: datasets, YOLOv8 training, quantised export, registry.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = commands.add_parser(
        "validate-config",
        help="Check a training config (with ROADSIGN_TRAIN__* overrides); exit 1 naming each "
        "bad field and its line.",
    )
    validate.add_argument("file", help="config YAML, e.g. training/configs/smoke.yaml")
    validate.set_defaults(handler=_validate_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-train``."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
