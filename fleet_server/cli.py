"""``roadsign-fleet``: the fleet server's command line.

Only the standard library and the protocol package load at start; each command imports its stack
when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from fleet_protocol.config_files import add_validate_config_command, run_command
from fleet_server.rollouts.cli import add_rollout_commands, run_rollouts

GRACEFUL_SHUTDOWN_S = 10
"""How long `serve` lets open requests finish on SIGTERM, inside a 30 s Kubernetes grace period."""

if TYPE_CHECKING:
    from fleet_server.settings import ServerSettings


def _settings_schema() -> tuple[type[BaseModel], str]:
    from fleet_server.settings import ENV_PREFIX, ServerSettings

    return ServerSettings, ENV_PREFIX


def _settings(args: argparse.Namespace) -> ServerSettings:
    from fleet_protocol.config_files import load_config
    from fleet_server.settings import ENV_PREFIX, ServerSettings

    return load_config(ServerSettings, args.config, env=os.environ, env_prefix=ENV_PREFIX)


def _command(
    run: Callable[[ServerSettings, argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    """Build the settings once, run; configuration and storage errors exit 1 with a message."""

    def handler(args: argparse.Namespace) -> int:
        from fleet_protocol.exceptions import ConfigFileError
        from fleet_server.exceptions import FleetError

        try:
            return run(_settings(args), args)
        except (ConfigFileError, FleetError) as e:
            sys.stderr.write(f"roadsign-fleet {args.command}: {e}\n")
            return 1

    return handler


def _migrate(settings: ServerSettings, args: argparse.Namespace) -> int:
    from fleet_server.migrate import upgrade

    upgrade(settings.database, args.revision)
    sys.stdout.write(f"database at {args.revision}\n")
    return 0


def _ingest(settings: ServerSettings, args: argparse.Namespace) -> int:
    import signal
    import socket
    import threading

    from prometheus_client import start_http_server

    from fleet_server.db import make_engine
    from fleet_server.ingest.metrics import IngestMetrics
    from fleet_server.ingest.worker import IngestWorker
    from fleet_server.observability import configure_logging

    configure_logging(settings.telemetry.log_level)
    metrics = IngestMetrics()
    if settings.ingest.metrics_port:
        start_http_server(settings.ingest.metrics_port, registry=metrics.registry)
    client_id = args.client_id or f"ingest-{socket.gethostname()}"
    worker = IngestWorker(
        settings, make_engine(settings.database), metrics, client_id=client_id
    ).start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    worker.stop()
    return 0


def _serve(settings: ServerSettings, args: argparse.Namespace) -> int:
    import uvicorn

    from fleet_server.api.main import create_app
    from fleet_server.db import make_engine
    from fleet_server.observability import configure_logging

    configure_logging(settings.telemetry.log_level)
    app = create_app(settings, make_engine(settings.database))
    # Open live feeds would otherwise hold a stopping server until it is killed: uvicorn waits
    # for every streaming response before it runs the app's shutdown.
    uvicorn.run(
        app,
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return 0


def _tail(settings: ServerSettings, args: argparse.Namespace) -> int:
    import json
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from fleet_protocol.codec import decode_as
    from fleet_protocol.exceptions import ProtocolError
    from fleet_protocol.messages import Reading
    from fleet_protocol.topics import FLEET_READINGS_TOPIC
    from fleet_server.exceptions import IngestError
    from fleet_server.ingest.mqtt_client import configure_client

    done = threading.Event()
    printed = 0

    def received(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal printed
        try:
            reading = decode_as(Reading, bytes(message.payload))
        except ProtocolError as e:
            sys.stderr.write(f"skipped a malformed message: {e}\n")
            return
        if args.device and reading.device_id != args.device:
            return
        sys.stdout.write(json.dumps(json.loads(reading.model_dump_json(exclude_none=True))) + "\n")
        sys.stdout.flush()
        printed += 1
        if args.count and printed >= args.count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    address = configure_client(client, settings.broker)
    client.on_message = received
    client.on_connect = lambda c, *_: c.subscribe(FLEET_READINGS_TOPIC, qos=1)
    try:
        client.connect(address.host, address.port)
    except OSError as e:  # refused, unreachable, or a failed TLS handshake
        raise IngestError(f"cannot reach the broker at {address.host}:{address.port}: {e}") from e
    client.loop_start()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a person stops tailing
        done.wait(args.timeout)
    client.loop_stop()
    client.disconnect()
    return 0


def _tokens(settings: ServerSettings, args: argparse.Namespace) -> int:
    """Issue, list or revoke API tokens in the configured database; one JSON line per token."""
    from pydantic import ValidationError

    from fleet_server import crud
    from fleet_server.db import make_engine, session_scope
    from fleet_server.exceptions import TokenError
    from fleet_server.models import ApiToken, ApiTokenCreate, ApiTokenPublic, utcnow
    from fleet_server.services.tokens import issue_token, revoke_token_and_issued

    def public(token: ApiToken) -> str:
        return ApiTokenPublic.model_validate(token, from_attributes=True).model_dump_json()

    engine = make_engine(settings.database)
    try:
        with session_scope(engine) as session:
            if args.action == "issue":
                try:
                    body = ApiTokenCreate(
                        name=args.name, role=args.role, expires_in_s=args.expires_in_s
                    )
                except ValidationError as e:
                    raise TokenError(str(e)) from e
                # The secret is printed this once; only its hash is stored.
                # An operator at the database issues it: no issuer bounds or revokes it.
                shown = [issue_token(session, body=body, issuer_id=None).model_dump_json()]
            elif args.action == "list":
                shown = [public(token) for token in crud.list_tokens(session)]
            else:
                revoked = revoke_token_and_issued(session, token_id=args.id, now=utcnow())
                if revoked is None:
                    raise TokenError(f"no token {args.id}")
                shown = [revoked.model_dump_json()]
    finally:
        engine.dispose()
    sys.stdout.write("".join(line + "\n" for line in shown))
    return 0


def _broker_config(settings: ServerSettings, args: argparse.Namespace) -> int:
    """Write mosquitto.conf and the committed fleet's broker accounts into `--out`."""
    from fleet_server.db import make_engine
    from fleet_server.services.broker_auth.config import (
        Listener,
        check_listener,
        write_broker_config,
    )
    from fleet_server.services.broker_auth.sync import committed_accounts

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        sys.stderr.write(
            f"roadsign-fleet broker-config: --listen {args.listen!r} is not HOST:PORT\n"
        )
        return 2
    # Absolute: Mosquitto resolves a relative path against its own working directory.
    certfile, keyfile = (path.resolve() if path else None for path in (args.certfile, args.keyfile))
    listener = Listener(host, int(port), certfile=certfile, keyfile=keyfile)
    check_listener(settings, listener)  # before the database is read
    engine = make_engine(settings.database)
    try:
        accounts = committed_accounts(settings, engine)
    finally:
        engine.dispose()
    written = write_broker_config(
        settings,
        accounts,
        listener=listener,
        out_dir=args.out.resolve(),
        run_as=args.user,
        dynsec_plugin=args.dynsec_plugin,
        force=args.force,
    )
    devices = len(accounts) - 1  # all but the server
    sys.stdout.write(
        f"broker configuration for {devices} devices: {', '.join(map(str, written))}\n"
    )
    return 0


def _keys(settings: ServerSettings, args: argparse.Namespace) -> int:
    """Generate the repository's keys and initialise it, or replace one key (a new root)."""
    from fleet_server.db import make_engine
    from fleet_server.repository import commands

    passphrase = commands.offline_passphrase(args.passphrase_file, os.environ)
    engine = make_engine(settings.database)
    try:
        if args.action == "init":
            done = commands.keys_init(
                settings,
                engine,
                directory=args.dir,
                root_keys=args.root_keys,
                root_threshold=args.root_threshold,
                passphrase=passphrase,
            )
            sys.stdout.write(
                f"TUF repository initialised (root threshold {done.root_threshold}); wrote "
                + ", ".join(map(str, done.files))
                + "\n"
            )
        else:
            version, path = commands.keys_rotate(
                settings,
                engine,
                directory=args.dir,
                role=args.role,
                replace=args.replace,
                passphrase=passphrase,
            )
            sys.stdout.write(f"root v{version} stored; new {args.role} key {path}\n")
    finally:
        engine.dispose()
    return 0


def _models(settings: ServerSettings, args: argparse.Namespace) -> int:
    """Publish a model bundle folder as the next release (signed with the targets key)."""
    from fleet_server.db import make_engine
    from fleet_server.repository import commands

    passphrase = commands.offline_passphrase(args.passphrase_file, os.environ)
    engine = make_engine(settings.database)
    try:
        model = commands.models_publish(
            settings,
            engine,
            bundle_dir=args.bundle,
            from_mlflow=args.from_mlflow,
            keys_dir=args.keys_dir,
            passphrase=passphrase,
            min_agent_version=args.min_agent_version,
        )
    finally:
        engine.dispose()
    sys.stdout.write(model.model_dump_json(exclude={"id"}) + "\n")
    return 0


def _add_repository_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    unlock_help = (
        "file whose first line is the offline keys' passphrase "
        "(default: the ROADSIGN_FLEET_KEYS_PASSPHRASE variable)"
    )
    keys = commands.add_parser(
        "keys",
        help="Generate the TUF repository's keys and initialise it, or rotate a key.",
        description="Offline keys (root, targets) are written encrypted with the operator's "
        "passphrase; the online key with tuf.online_key_passphrase.",
    )
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = key_actions.add_parser("init", help="New keys, root v1 and the rest of the repository.")
    init.add_argument("--root-keys", type=int, default=3, help="number of root keys")
    init.add_argument("--root-threshold", type=int, default=2, help="root signatures needed")
    rotate = key_actions.add_parser("rotate", help="Replace one key: root N+1 signs it in.")
    rotate.add_argument("--role", choices=["root", "targets", "online"], required=True)
    rotate.add_argument("--replace", help="root and targets: the key file replaced, e.g. root-2")
    for sub in key_actions.choices.values():
        sub.add_argument("--dir", type=Path, required=True, help="the operator's key folder")
        sub.add_argument("--passphrase-file", type=Path, help=unlock_help)
        sub.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
        sub.set_defaults(handler=_command(_keys))
    models = commands.add_parser("models", help="Publish model versions to the TUF repository.")
    model_actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    publish = model_actions.add_parser(
        "publish",
        help="Check a bundle's hashes, tar it and sign it in as the next release.",
    )
    source = publish.add_mutually_exclusive_group(required=True)
    source.add_argument("--bundle", type=Path, help="the bundle folder")
    source.add_argument(
        "--from-mlflow",
        metavar="NAME@ALIAS",
        help="the bundle of a registered model version (tuf.mlflow_tracking_uri)",
    )
    publish.add_argument(
        "--keys-dir", type=Path, required=True, help="the key folder with the targets key"
    )
    publish.add_argument(
        "--min-agent-version", default="0.1.0", help="oldest agent that can run it"
    )
    publish.add_argument("--passphrase-file", type=Path, help=unlock_help)
    publish.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
    publish.set_defaults(handler=_command(_models))


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
    migrate = commands.add_parser("migrate", help="Bring the database schema up to date.")
    migrate.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
    migrate.add_argument("--revision", default="head", help="target revision")
    migrate.set_defaults(handler=_command(_migrate))
    ingest = commands.add_parser(
        "ingest",
        help="Run an ingestion worker: MQTT (shared subscription) into the database.",
        description="Consume readings, health and status from the broker into the database; "
        "run several for more throughput (they share one MQTT v5 subscription group).",
    )
    ingest.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
    ingest.add_argument("--client-id", help="MQTT client id; stable ids keep sessions")
    ingest.set_defaults(handler=_command(_ingest))
    serve = commands.add_parser("serve", help="Serve the API and dashboard over HTTP.")
    serve.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
    serve.set_defaults(handler=_command(_serve))
    tail = commands.add_parser("tail", help="Print live readings of the fleet, one JSON line each.")
    tail.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
    tail.add_argument("--device", help="only this device's readings")
    tail.add_argument("--count", type=int, help="stop after this many readings")
    tail.add_argument("--timeout", type=float, default=None, help="stop after this many seconds")
    tail.set_defaults(handler=_command(_tail))
    tokens = commands.add_parser(
        "tokens",
        help="Issue, list or revoke API tokens (in the configured database).",
        description="Admin and reader API tokens. issue prints the new token's secret once.",
    )
    token_actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    issue = token_actions.add_parser(
        "issue",
        help="Issue a token with no issuer (it outlives bootstrap rotations); prints its "
        "secret once.",
    )
    issue.add_argument("--name", required=True, help="who or what holds the token")
    issue.add_argument("--role", choices=["admin", "reader"], default="reader")
    issue.add_argument("--expires-in-s", type=int, help="seconds until it stops working")
    token_actions.add_parser(
        "list", help="Every token, without secrets, with the id of the token that issued it."
    )
    revoke = token_actions.add_parser(
        "revoke", help="Revoke a token at once, and every token it issued."
    )
    revoke.add_argument("id", type=int, help="the token's id (from list)")
    for sub in token_actions.choices.values():
        sub.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
        sub.set_defaults(handler=_command(_tokens))
    broker = commands.add_parser(
        "broker-config",
        help="Write the Mosquitto configuration and the fleet's broker accounts.",
        description="Write mosquitto.conf (no anonymous clients, a maximum packet size, "
        "persistence, one listener: TLS with --certfile and --keyfile) and the broker's "
        "accounts from the database: the dynamic-security plugin's file, or the password and "
        "ACL files.",
    )
    broker.add_argument("--config", type=Path, help="settings YAML (default: built-in)")
    broker.add_argument("--out", type=Path, required=True, help="directory for the broker's files")
    broker.add_argument("--listen", default="127.0.0.1:1883", help="HOST:PORT of the listener")
    broker.add_argument(
        "--certfile",
        type=Path,
        help="PEM server certificate (with its chain): the listener speaks TLS only; "
        "production mode requires it",
    )
    broker.add_argument("--keyfile", type=Path, help="the certificate's PEM private key")
    broker.add_argument("--user", help="user a broker started as root runs as")
    broker.add_argument("--dynsec-plugin", type=Path, help="mosquitto_dynamic_security.so")
    broker.add_argument(
        "--force", action="store_true", help="replace an existing dynamic-security file"
    )
    broker.set_defaults(handler=_command(_broker_config))
    _add_repository_commands(commands)
    add_rollout_commands(commands, _command(run_rollouts))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``roadsign-fleet``."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
