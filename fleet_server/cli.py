"""``roadsign-fleet``: the fleet server's command line.

Only the standard library loads at start; each command imports its stack when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence


def _validate_config(args: argparse.Namespace) -> int:
    from fleet_protocol.config_files import validate_config_file
    from fleet_server.settings import ENV_PREFIX, ServerSettings

    return validate_config_file(
        ServerSettings, args.file, env=os.environ, env_prefix=ENV_PREFIX, out=sys.stdout
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="roadsign-fleet",
        description="RoadSign fleet server: ingestion, device registry, model rollouts, dashboard.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = commands.add_parser(
        "validate-config",
        help="Check a server settings file (with ROADSIGN_FLEET__* overrides); exit 1 naming "
        "each bad field and its line.",
    )
    validate.add_argument("file", help="settings YAML")
    validate.set_defaults(handler=_validate_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-fleet``."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
