"""``roadsign-agent``: the edge agent's command line.

Only argparse and the standard library load at start; each command imports what it needs when it
runs, so ``--help`` works on an edge-only install and imports neither torch nor fastapi.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "roadsign-fleet"


def agent_version() -> str:
    """The installed distribution's version."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


def _validate_config(args: argparse.Namespace) -> int:
    from edge_agent.profile import ENV_PREFIX, DeviceProfile
    from fleet_protocol.config_files import validate_config_file

    return validate_config_file(
        DeviceProfile, args.file, env=os.environ, env_prefix=ENV_PREFIX, out=sys.stdout
    )


def _config_schema(args: argparse.Namespace) -> int:
    from edge_agent.profile import DeviceProfile

    sys.stdout.write(json.dumps(DeviceProfile.model_json_schema(), indent=2) + "\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="roadsign-agent",
        description="RoadSign edge agent: reads road signs from a camera and reports them to "
        "the fleet.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    validate = command(
        "validate-config",
        _validate_config,
        "Check a device profile (with ROADSIGN_AGENT__* overrides applied); exit 1 naming each "
        "bad field and its line.",
    )
    validate.add_argument("file", help="profile YAML, e.g. firmware_configs/dev-x86.yaml")
    command("config-schema", _config_schema, "Print the device-profile JSON schema.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-agent``."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
