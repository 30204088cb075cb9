"""``make demo``: the whole product on its embedded defaults, on one machine, in about a minute.

1. starts a private Mosquitto on the configuration ``roadsign-fleet broker-config`` writes,
   whose accounts the fleet server manages through the dynamic-security plugin;
2. starts the fleet server (API and dashboard, SQLite) and one ingestion worker;
3. enrols a device through the API, which installs its broker credentials;
4. renders a drive past road signs and runs ``roadsign-agent run`` on it with the shipped
   ``models/default`` bundle, reporting over MQTT through the outbox;
5. reads the readings back from the API and sets them beside the signs that were in the video.

With a terminal attached it then keeps everything running for the dashboard until Ctrl-C;
``DEMO_HOLD=0`` stops at once, ``DEMO_HOLD=1`` always holds. Everything lives in ``.cache/demo``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "demo"
BUNDLE = ROOT / "models" / "default"
DEVICE = "demo-car-0001"
SIGNS = 6


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, ready: Any, timeout: float, log: Path | None = None) -> None:
    """Poll `ready()` until it is true; fail naming `what` (and its log) after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise DemoError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Stack:
    """The processes the demo starts; all stopped on exit, whatever happens."""

    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> Path:
        """Start `argv` with its output in ``WORK/<name>.log``; return the log's path."""
        log = WORK / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.processes.append((name, process))
        return log

    def stop(self) -> None:
        """SIGTERM in reverse start order, then SIGKILL what lingers."""
        for _, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.processes):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def api(base: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    """One JSON request to the fleet API."""
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise DemoError(f"{request.method} {path}: HTTP {e.code} {e.read().decode()}") from e


def start_broker(stack: Stack, config: Path, port: int) -> None:
    """Mosquitto on the configuration ``roadsign-fleet broker-config`` writes for the server."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise DemoError("mosquitto is not installed (run tools/install-system-deps.sh)")
    command = [sys.executable, "-m", "fleet_server.cli", "broker-config", "--config", str(config)]
    command += ["--out", str(WORK / "broker"), "--listen", f"127.0.0.1:{port}"]
    # A broker started as root runs as whoever runs the demo, who owns the files.
    command += ["--user", getpass.getuser()]
    subprocess.run(command, check=True, cwd=ROOT)
    log = stack.start("mosquitto", [binary, "-c", str(WORK / "broker" / "mosquitto.conf")])
    wait_for("mosquitto", lambda: port_open(port), 10, log)


def server_settings(broker_port: int, http_port: int, password: str, token: str) -> Path:
    """The fleet server's settings file: SQLite, the private broker, fresh secrets."""
    broker = f"mqtt://127.0.0.1:{broker_port}"
    settings = {
        "http": {"port": http_port},
        "database": {"url": f"sqlite:///{WORK / 'fleet.db'}"},
        "broker": {"url": broker, "username": "fleet-server", "password": password},
        "auth": {"bootstrap_admin_token": token, "secret_key": secrets.token_urlsafe(32)},
        "ingest": {"batch_interval_s": 0.1, "metrics_port": 0},
        "enrolment": {
            "broker_public_url": broker,
            "broker_auth": "dynamic_security",
            "broker_admin_password": secrets.token_urlsafe(24),
        },
    }
    path = WORK / "fleet.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def device_profile(enrolled: dict[str, Any], video: Path) -> Path:
    """The dev-x86 profile pointed at the drive video and the enrolled identity."""
    profile = yaml.safe_load((ROOT / "firmware_configs" / "dev-x86.yaml").read_text())
    (WORK / "device-password").write_text(enrolled["password"])
    profile["identity"] = {**profile.get("identity", {}), "device_id": DEVICE}
    profile["detector"] = {**profile["detector"], "model_dir": str(BUNDLE)}
    profile["camera"] = {**profile["camera"], "source": str(video), "kind": "auto"}
    profile["broker"] = {
        **profile["broker"],
        "url": enrolled["broker_url"],
        "username": enrolled["username"],
        "password_file": str(WORK / "device-password"),
    }
    profile["reporting"] = {**profile["reporting"], "sink": "mqtt"}
    profile["outbox"] = {**profile["outbox"], "path": str(WORK / "outbox.sqlite3")}
    profile["api"] = {**profile["api"], "enabled": False}
    path = WORK / "device.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def show(signs: list[Any], readings: list[dict[str, Any]]) -> None:
    """The signs the drive passed beside what the fleet stored."""
    print(f"\nThe drive passed {len(signs)} signs:")
    for sign in signs:
        print(f"  {sign.distance_m:6.0f} m  {sign.kind}{f' {sign.value}' if sign.value else ''}")
    print(f"The fleet server stored {len(readings)} readings from {DEVICE}:")
    for r in sorted(readings, key=lambda r: r["observed_at"]):
        value = f" {r['value']:g} {r['unit'] or ''}" if r["value"] is not None else ""
        text = f" {r['text']!r}" if r["text"] else ""
        print(
            f"  {r['observed_at'][11:19]}  {r['sign_type']}{value}{text}"
            f"  (confidence {r['confidence']:.2f}, {r['frames_seen']} frames)"
        )


def run() -> int:
    """Start the stack, drive, show, hold or stop."""
    from training.data.drive import render_drive

    if not (BUNDLE / "bundle.json").is_file():
        raise DemoError(f"no model bundle in {BUNDLE}")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    stack = Stack()
    try:
        password, token = secrets.token_urlsafe(24), "rsf_" + secrets.token_urlsafe(24)
        broker_port = free_port()
        http_port = int(os.environ.get("DEMO_PORT", 0)) or free_port()
        settings_file = server_settings(broker_port, http_port, password, token)
        config = str(settings_file)
        fleet = [sys.executable, "-m", "fleet_server.cli"]
        subprocess.run([*fleet, "migrate", "--config", config], check=True, cwd=ROOT)
        start_broker(stack, settings_file, broker_port)
        log = stack.start("server", [*fleet, "serve", "--config", config])
        wait_for("the fleet server", lambda: port_open(http_port), 60, log)
        stack.start("ingest", [*fleet, "ingest", "--config", config, "--client-id", "demo-ingest"])
        base = f"http://127.0.0.1:{http_port}"
        enrolled = api(base, "/api/v1/devices", token, {"device_id": DEVICE, "profile": "dev-x86"})
        print(f"enrolled {DEVICE}: broker user {enrolled['username']} at {enrolled['broker_url']}")

        video = WORK / "drive.mp4"
        signs = render_drive(video, SIGNS, seed=3)
        print(f"rendered {video.relative_to(ROOT)}: a drive past {len(signs)} signs")
        agent = [sys.executable, "-m", "edge_agent.cli", "run"]
        started = time.monotonic()
        result = subprocess.run(
            [*agent, "--config", str(device_profile(enrolled, video))], cwd=ROOT, check=False
        )
        if result.returncode != 0:
            raise DemoError(f"roadsign-agent run exited {result.returncode}")
        print(f"the agent read the drive in {time.monotonic() - started:.1f} s")

        def stored() -> list[dict[str, Any]]:
            page = api(base, f"/api/v1/readings?device_id={DEVICE}&limit=1000", token)
            return list(page["items"])

        readings: list[dict[str, Any]] = []

        def settled() -> bool:
            nonlocal readings
            before, readings = len(readings), stored()
            return bool(readings) and len(readings) == before

        wait_for("readings in the fleet server", settled, 30, WORK / "ingest.log")
        show(signs, readings)
        print(f"\nDashboard: {base}/  (log in with the admin token {token})")
        hold = os.environ.get("DEMO_HOLD", "tty")
        if hold == "1" or (hold == "tty" and sys.stdin.isatty()):
            print("Everything keeps running; Ctrl-C stops it.")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
        return 0
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
