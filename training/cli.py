"""``roadsign-train``: the training pipeline's command line.

Only the standard library and the protocol package load at start; torch and ultralytics load inside
the stages that use them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import BaseModel

from fleet_protocol.config_files import add_validate_config_command, run_command


def _config_schema() -> tuple[type[BaseModel], str]:
    from training.config import ENV_PREFIX, TrainingConfig

    return TrainingConfig, ENV_PREFIX


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-train``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
