"""``roadsign-agent``: the edge agent's command line.

Only the standard library and the protocol package load at start; each command imports what it
needs when it runs, so ``--help`` works on an edge-only install and imports neither torch nor
fastapi.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import BaseModel

from fleet_protocol.config_files import add_validate_config_command, run_command

DISTRIBUTION = "roadsign-fleet"


def agent_version() -> str:
    """The installed distribution's version."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


def _profile_schema() -> tuple[type[BaseModel], str]:
    from edge_agent.profile import ENV_PREFIX, DeviceProfile

    return DeviceProfile, ENV_PREFIX


def _config_schema(args: argparse.Namespace) -> int:
    model, _ = _profile_schema()
    sys.stdout.write(json.dumps(model.model_json_schema(), indent=2) + "\n")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from edge_agent.exceptions import AgentError
    from edge_agent.predict import predict_files
    from edge_agent.profile import read_profile
    from fleet_protocol.exceptions import ConfigFileError

    try:
        # The profile's detector settings, as `run` would read them; flags override them.
        detector = read_profile(args.config, os.environ).detector
        tiling = detector.tiling.policy(tiles=not args.no_tiles)
        for line in predict_files(
            args.images,
            model_dir=args.model or detector.model_dir,
            backend=args.backend or detector.backend,
            threads=detector.threads if args.threads is None else args.threads,
            confidence=(
                detector.confidence_threshold if args.confidence is None else args.confidence
            ),
            tiling=tiling,
        ):
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
    except (ConfigFileError, ValidationError, AgentError) as e:
        sys.stderr.write(f"roadsign-agent predict: {e}\n")
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    import logging
    import os

    from pydantic import ValidationError

    from edge_agent.exceptions import AgentError
    from edge_agent.profile import ENV_PREFIX, DeviceProfile
    from edge_agent.runner import apply_overrides, run_agent
    from fleet_protocol.config_files import load_config
    from fleet_protocol.exceptions import ConfigFileError

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        profile = load_config(DeviceProfile, args.config, env=os.environ, env_prefix=ENV_PREFIX)
        profile = apply_overrides(profile, source=args.source, sink=args.sink, output=args.output)
        summary = run_agent(profile, agent_version=agent_version(), max_frames=args.max_frames)
    except (ConfigFileError, ValidationError, AgentError) as e:
        sys.stderr.write(f"roadsign-agent run: {e}\n")
        return 1
    sys.stderr.write(json.dumps(summary) + "\n")
    return 0


def _install_bundle(args: argparse.Namespace) -> int:
    from edge_agent.device_install import install_bundle
    from edge_agent.exceptions import InstallError

    try:
        files = install_bundle(
            args.bundle,
            args.base_profile,
            root=args.root,
            fleet_url=args.fleet_url,
            dry_run=args.dry_run,
        )
    except InstallError as e:
        sys.stderr.write(f"roadsign-agent install-bundle: {e}\n")
        return 1
    verb = "would write" if args.dry_run else "wrote"
    for planned in files:
        sys.stdout.write(f"{verb} {planned.path} ({planned.mode:04o})\n")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from edge_agent.exceptions import AgentError
    from edge_agent.simulate import SimulationSettings, simulate

    settings = SimulationSettings(
        devices=args.devices,
        broker_url=args.broker,
        rate=args.rate,
        duration_s=args.duration,
        health_interval_s=args.health_interval,
        outbox_dir=args.outbox_dir,
        prefix=args.prefix,
        devices_per_process=args.devices_per_process,
    )
    try:
        summary = simulate(settings)
    except AgentError as e:
        sys.stderr.write(f"roadsign-agent simulate: {e}\n")
        return 1
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0 if summary["all_delivered"] else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="roadsign-agent",
        description="RoadSign edge agent: reads road signs from a camera and reports them to "
        "the fleet.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {agent_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_validate_config_command(
        commands, _profile_schema, what="a device profile", example="firmware_configs/dev-x86.yaml"
    )
    schema = commands.add_parser(
        "config-schema",
        help="Print the device-profile JSON schema.",
        description="Print the device-profile JSON schema.",
    )
    schema.set_defaults(handler=_config_schema)
    predict = commands.add_parser(
        "predict",
        help="Read the signs in image files; one JSON line per image.",
        description="Read the signs in image files with a model bundle; print one JSON line per "
        'image: {"source": PATH, "readings": [...]}, boxes in pixels of the original image.',
    )
    predict.add_argument("images", nargs="+", type=Path, help="image files")
    predict.add_argument(
        "--model",
        type=Path,
        help="model bundle folder (default: the bundle shipped with the agent, models/default)",
    )
    predict.add_argument(
        "--config",
        type=Path,
        help="device profile whose detector settings (bundle, backend, threads, threshold, "
        "tiling) to read with, as `run` would (default: a default profile's)",
    )
    predict.add_argument("--backend", choices=["auto", "openvino", "onnxruntime"])
    predict.add_argument("--threads", type=int, help="inference threads (default: profile's, 2)")
    predict.add_argument(
        "--confidence", type=float, help="detection score threshold (default: profile's, 0.25)"
    )
    predict.add_argument(
        "--no-tiles",
        action="store_true",
        help="look at each whole image in one pass, shrunk to the detector's input",
    )
    predict.set_defaults(handler=_predict)
    run = commands.add_parser(
        "run",
        help="Run the agent: camera or video to readings, reported to the fleet.",
        description="Run the agent with a device profile until SIGTERM/SIGINT (or the end of a "
        "recorded source); SIGTERM flushes the outbox and publishes the offline status.",
    )
    run.add_argument("--config", type=Path, required=True, help="device profile YAML")
    run.add_argument("--source", help="override camera.source (index, URL, file or folder)")
    run.add_argument("--sink", choices=["mqtt", "stdout", "file"], help="override reporting.sink")
    run.add_argument("--output", type=Path, help="JSON-lines file for --sink file")
    run.add_argument("--max-frames", type=int, help="stop after this many frames")
    run.set_defaults(handler=_run)
    install = commands.add_parser(
        "install-bundle",
        help="Write a device's profile, broker password, CA and TUF root from its enrolment "
        "bundle.",
        description="Check an enrolment bundle (the JSON POST /api/v1/devices answers) and a "
        "base profile, then write /etc/roadsign/profile.yaml, broker-password (0600), tls/ca.pem "
        "and /var/lib/roadsign/tuf-root.json; deploy/device/install.sh runs it.",
    )
    install.add_argument("bundle", type=Path, help="enrolment bundle JSON")
    install.add_argument(
        "--base-profile", type=Path, required=True, help="device profile YAML to start from"
    )
    install.add_argument(
        "--root", type=Path, default=Path("/"), help="write under this folder instead of /"
    )
    install.add_argument(
        "--fleet-url", help="fleet server base URL: turns on signed updates from its /tuf"
    )
    install.add_argument(
        "--dry-run", action="store_true", help="check and list the files, write nothing"
    )
    install.set_defaults(handler=_install_bundle)
    sim = commands.add_parser(
        "simulate",
        help="Run N virtual devices (real outbox, MQTT link and health; synthetic readings).",
        description="Run N virtual devices against a broker: each with its own "
        "outbox, MQTT link and health reports, sending synthetic readings at --rate per second.",
    )
    sim.add_argument("--devices", type=int, required=True, help="how many devices")
    sim.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL")
    sim.add_argument("--rate", type=float, default=1.0, help="readings per second per device")
    sim.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    sim.add_argument("--health-interval", type=float, default=5.0, help="seconds between reports")
    sim.add_argument("--outbox-dir", type=Path, default=Path(".cache/simulate"))
    sim.add_argument("--prefix", default="sim", help="device ids are <prefix>-00000...")
    sim.add_argument(
        "--devices-per-process",
        type=int,
        default=100,
        help="split larger fleets over processes (paho's select() sees at most 1023 files)",
    )
    sim.set_defaults(handler=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-agent``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
