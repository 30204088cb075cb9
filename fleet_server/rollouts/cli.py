"""``roadsign-fleet rollouts ...``: the argument parsing and the handler (the command bodies
are in `fleet_server.rollouts.commands`). Only the standard library loads until a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleet_server.settings import ServerSettings


def run_rollouts(settings: ServerSettings, args: argparse.Namespace) -> int:
    """Create, list, show or command staged rollouts in the configured database."""
    from fleet_server.db import make_engine
    from fleet_server.rollouts import commands
    from fleet_server.rollouts.values import RolloutCommand

    engine = make_engine(settings.database)
    try:
        if args.action == "create":
            shown = commands.create(
                settings,
                engine,
                model_name=args.model,
                model_version=args.version,
                rollout_id=args.id,
                select_all=args.all,
                tags=args.tag or [],
                profile=args.profile,
                device_ids=args.device or [],
                stages=args.stages,
                soak_s=args.soak_s,
                policy_file=args.policy_file,
                start=not args.draft,
            )
        elif args.action == "list":
            shown = commands.list_all(engine)
        elif args.action == "show":
            shown = commands.show(engine, args.rollout_id)
        else:
            shown = commands.command(settings, engine, args.rollout_id, RolloutCommand(args.action))
    finally:
        engine.dispose()
    sys.stdout.write(shown + "\n")
    return 0


def add_rollout_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    handler: Callable[[argparse.Namespace], int],
) -> None:
    """The ``rollouts`` command and its actions, each run by `handler`."""
    rollouts = commands.add_parser(
        "rollouts",
        help="Staged model rollouts: create, list, show, start, pause, resume, abort, rollback.",
        description="Works on the configured database; the rollout driver of a serve process "
        "(rollouts.enabled) signs and nudges what a command decided, on its next tick.",
    )
    actions = rollouts.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="Roll a published model version out in stages.")
    create.add_argument("--model", required=True, help="bundle name of the published model")
    create.add_argument("--version", required=True, help="its version")
    create.add_argument("--id", help="rollout id (default: r-VERSION-TIME)")
    create.add_argument("--all", action="store_true", help="every enrolled device")
    create.add_argument("--tag", action="append", help="devices with this tag (repeatable)")
    create.add_argument("--profile", help="devices of this profile")
    create.add_argument("--device", action="append", help="this device (repeatable)")
    create.add_argument(
        "--stages", default="1%,10%,50%,100%", help="cumulative stages: shares (5%%) or counts"
    )
    create.add_argument("--soak-s", type=float, default=3600, help="soak seconds per stage")
    create.add_argument("--policy-file", type=Path, help="JSON file of gate thresholds")
    create.add_argument("--draft", action="store_true", help="store it without starting")
    actions.add_parser("list", help="Every rollout, newest first.")
    for name, what in (
        ("show", "A rollout: status, verdicts, progress, every device."),
        ("start", "Start a draft (created with --draft)."),
        ("pause", "Stop advancing."),
        ("resume", "Go on; a stage rolled back by a failed gate is assigned afresh."),
        ("abort", "Stop for good; devices keep what they were assigned."),
        ("rollback", "Return every device the rollout moved to what it ran before."),
    ):
        sub = actions.add_parser(name, help=what)
        sub.add_argument("rollout_id", help="the rollout's id")
    for sub in actions.choices.values():
        sub.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
        sub.set_defaults(handler=handler)
