"""``make demo``: the whole product on its embedded defaults, on one machine, live.

1. starts an MLflow server (SQLite store, local artifacts) and registers the shipped
   ``models/default`` bundle there with its lineage, aliased ``champion``;
2. starts a private Mosquitto on the configuration ``roadsign-fleet broker-config`` writes,
   whose accounts the fleet server manages through the dynamic-security plugin;
3. starts the fleet server (API and dashboard, SQLite, its TUF repository) and one ingestion
   worker, and publishes the registry's champion (``models publish --from-mlflow``);
4. enrols three devices through the API (dev-x86 variants, their own tags), renders each its
   own drive past road signs and runs ``roadsign-agent run`` on it in a loop, reporting over MQTT
   through the outbox, so the fleet stays live;
5. on stop prints the readings each device sent, the published model and where to look.

``DEMO_SECONDS=N`` stops it after N seconds of driving; otherwise it runs until Ctrl-C or
SIGTERM. Either way everything it started is stopped. Everything lives in ``.cache/demo``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages
from demo_fleet import BUNDLE, CARS, readings_per_device, start_agents
from demo_registry import (
    init_keys,
    publish_from_registry,
    register_bundle,
    start_mlflow,
    wait_mlflow,
)
from demo_stack import (
    ROOT,
    WORK,
    DemoError,
    Stack,
    free_port,
    port_open,
    wait_for,
)

FPS = 6.0  # frames each agent reads a second: three agents share two cores in CI


def start_broker(stack: Stack, config: Path, port: int) -> None:
    """Mosquitto on the configuration ``roadsign-fleet broker-config`` writes for the server."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise DemoError("mosquitto is not installed (run tools/install-system-deps.sh)")
    command = [sys.executable, "-m", "fleet_server.cli", "broker-config", "--config", str(config)]
    command += ["--out", str(WORK / "broker"), "--listen", f"127.0.0.1:{port}"]
    # A broker started as root runs as whoever runs the demo, who owns the files.
    command += ["--user", os.environ.get("USER") or _user()]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    log = stack.start("mosquitto", [binary, "-c", str(WORK / "broker" / "mosquitto.conf")])
    wait_for("mosquitto", lambda: port_open(port), 10, log)


def _user() -> str:
    import getpass

    return getpass.getuser()


def server_settings(
    broker_port: int, http_port: int, secret: dict[str, str], mlflow_url: str
) -> Path:
    """The fleet server's settings file: SQLite, the private broker, TUF keys, the registry."""
    broker = f"mqtt://127.0.0.1:{broker_port}"
    settings = {
        "http": {"port": http_port},
        "database": {"url": f"sqlite:///{WORK / 'fleet.db'}"},
        "broker": {"url": broker, "username": "fleet-server", "password": secret["broker"]},
        "auth": {"bootstrap_admin_token": secret["token"], "secret_key": secrets.token_urlsafe(32)},
        "ingest": {"batch_interval_s": 0.1, "metrics_port": 0},
        "enrolment": {
            "broker_public_url": broker,
            "broker_auth": "dynamic_security",
            "broker_admin_password": secrets.token_urlsafe(24),
        },
        "tuf": {
            "online_key_file": str(WORK / "keys" / "online.pem"),
            "online_key_passphrase": secret["online"],
            "mlflow_tracking_uri": mlflow_url,
        },
    }
    path = WORK / "fleet.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def drive(stack: Stack, base: str, token: str, seconds: float | None) -> None:
    """Keep the fleet driving for `seconds` (None: until Ctrl-C/SIGTERM); fail if an agent dies."""
    started = time.monotonic()
    next_report = started + 10
    try:
        while seconds is None or time.monotonic() - started < seconds:
            time.sleep(0.5)
            for car in CARS:
                if not stack.running(car.device_id):
                    log = (WORK / f"{car.device_id}.log").read_text(errors="replace")
                    raise DemoError(f"the agent of {car.device_id} exited\n{log[-2000:]}")
            if time.monotonic() >= next_report:
                next_report += 10
                counts = readings_per_device(base, token)
                print(f"{time.monotonic() - started:4.0f} s: readings {counts}", flush=True)
    except KeyboardInterrupt:
        print("\nstopping (Ctrl-C/SIGTERM)")


def summary(base: str, token: str, mlflow_url: str, published: dict[str, Any]) -> None:
    """What the fleet did, and where to look."""
    print("\nReadings per device:")
    for device_id, count in readings_per_device(base, token).items():
        print(f"  {device_id}: {count} readings")
    signed = published.get("lineage", {})
    lineage = ", ".join(
        f"{key} {signed[key]}"
        for key in ("registered_model", "registered_version", "mlflow_run_id")
        if signed.get(key)
    )
    print(f"Published model {published['name']} {published['version']} from MLflow ({lineage})")
    print(f"Dashboard: {base}/  (log in with the admin token {token})")
    print(f"MLflow: {mlflow_url}/")


def run() -> int:
    """Start the stack, drive, summarise, stop."""
    if not (BUNDLE / "bundle.json").is_file():
        raise DemoError(f"no model bundle in {BUNDLE}")
    seconds = float(os.environ["DEMO_SECONDS"]) if os.environ.get("DEMO_SECONDS") else None
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    # Nothing here may reach the internet, and MLflow's telemetry thread races its requests.
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "true"
    began = time.monotonic()

    def step(text: str) -> None:
        print(f"[{time.monotonic() - began:5.1f} s] {text}", flush=True)

    # SIGTERM stops it as Ctrl-C does: the summary, then the stack's stop.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stack = Stack()
    try:
        mlflow_url = start_mlflow(stack)
        secret = {k: secrets.token_urlsafe(24) for k in ("broker", "online", "offline")}
        secret["token"] = "rsf_" + secrets.token_urlsafe(24)
        broker_port = free_port()
        http_port = int(os.environ.get("DEMO_PORT", 0)) or free_port()
        settings_file = server_settings(broker_port, http_port, secret, mlflow_url)
        fleet = [sys.executable, "-m", "fleet_server.cli"]
        config = ["--config", str(settings_file)]
        subprocess.run([*fleet, "migrate", *config], check=True, cwd=ROOT)
        step("fleet database migrated")
        init_keys(settings_file, WORK / "keys", secret["offline"])
        start_broker(stack, settings_file, broker_port)
        log = stack.start("server", [*fleet, "serve", *config])
        stack.start("ingest", [*fleet, "ingest", *config, "--client-id", "demo-ingest"])
        wait_for("the fleet server", lambda: port_open(http_port), 60, log)
        step(f"fleet server up on port {http_port}")
        base = f"http://127.0.0.1:{http_port}"
        start_agents(stack, base, secret["token"], FPS)

        wait_mlflow(stack, mlflow_url)
        step(f"MLflow up at {mlflow_url}")
        version = register_bundle(mlflow_url, BUNDLE)
        published = publish_from_registry(settings_file, WORK / "keys", secret["offline"])
        step(
            f"registered {BUNDLE.relative_to(ROOT)} in MLflow as version {version}; "
            f"the TUF repository published {published['name']} {published['version']}"
        )
        drive(stack, base, secret["token"], seconds)
        summary(base, secret["token"], mlflow_url, published)
        return 0
    except KeyboardInterrupt:
        print("\nstopped before the fleet was up")
        return 130
    finally:
        stack.stop()


def main() -> int:
    """Entry point; a failed step prints what failed and exits 1."""
    try:
        return run()
    except (DemoError, subprocess.CalledProcessError, OSError) as e:
        print(f"make demo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
