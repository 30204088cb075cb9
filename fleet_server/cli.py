"""``roadsign-fleet``: the fleet server's command line.

Only the standard library and the protocol package load at start; each command imports its stack
when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import BaseModel

from fleet_protocol.config_files import add_validate_config_command, run_command


def _settings_schema() -> tuple[type[BaseModel], str]:
    from fleet_server.settings import ENV_PREFIX, ServerSettings

    return ServerSettings, ENV_PREFIX


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="roadsign-fleet",
        description="RoadSign fleet server: ingestion, device registry, model rollouts, dashboard.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_validate_config_command(
        commands, _settings_schema, what="a server settings file", example="fleet.yaml"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-fleet``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
