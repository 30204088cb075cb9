"""The chart's fleet-server containers run as real processes, with the environment helm rendered.

No K3s node here, so each rendered container (migrate, broker-config, Mosquitto, ingest, serve) runs
as a local process in order, against a private PostgreSQL and Mosquitto: their commands, flags and
settings variables are the chart's; only what differs between a pod and this machine is mapped
(`Pod`): host names and ports to 127.0.0.1, mounted files to temporary ones, Secrets to generated
values. Each long-running one must then pass the probe the chart gives it.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fleet_server.services.broker_auth.config import find_dynsec_plugin
from tests.k3s.manifests import Manifest, find, parse, server_containers
from tests.mosquitto import free_port
from tests.postgres import SUPERUSER, Postgres
from tests.tls import Pki
from tests.waiting import wait_until

CLI = [sys.executable, "-m", "fleet_server.cli"]


@dataclass
class Pod:
    """What a pod has that this machine lacks, and the mapping of rendered values onto it."""

    postgres: Postgres
    pki: Pki
    workdir: Path
    broker_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    generated: dict[tuple[str, str], str] = field(default_factory=dict)

    def secret(self, ref: Manifest) -> str:
        """One value per Secret key, the same in every container (a broker password must match)."""
        key = (ref["name"], ref["key"])
        if key == ("roadsign-fleet-db", "password"):
            return self.postgres.password
        return self.generated.setdefault(key, secrets.token_urlsafe(32))

    def env(self, container: Manifest) -> dict[str, str]:
        mapped = {
            # No password in the URL: libpq takes PGPASSWORD, as in the pod.
            "ROADSIGN_FLEET__DATABASE__URL": (
                f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.postgres.port}/postgres"
            ),
            "ROADSIGN_FLEET__BROKER__URL": f"mqtts://127.0.0.1:{self.broker_port}",
            "ROADSIGN_FLEET__BROKER__CA_FILE": str(self.pki.ca),
            "ROADSIGN_FLEET__ENROLMENT__CA_FILE": str(self.pki.ca),
            "ROADSIGN_FLEET__HTTP__HOST": "127.0.0.1",
            "ROADSIGN_FLEET__HTTP__PORT": str(self.http_port),
            "ROADSIGN_FLEET__INGEST__METRICS_PORT": str(self.metrics_port),
            "HOME": str(self.workdir),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROADSIGN_FLEET")}
        for var in container["env"]:
            if "valueFrom" in var:
                env[var["name"]] = self.secret(var["valueFrom"]["secretKeyRef"])
            else:
                env[var["name"]] = mapped.get(var["name"], var["value"])
        return env

    def args(self, container: Manifest) -> list[str]:
        files = {
            "--out": str(self.workdir / "broker"),
            "--listen": f"127.0.0.1:{self.broker_port}",
            "--certfile": str(self.pki.server_cert),
            "--keyfile": str(self.pki.server_key),
            "--dynsec-plugin": str(find_dynsec_plugin()),
        }
        args = []
        for arg in container["args"]:
            flag, _, value = arg.partition("=")
            args.append(f"{flag}={files[flag]}" if value and flag in files else arg)
        if args[0] == "broker-config" and os.geteuid() == 0:
            args.append("--user=root")  # Mosquitto started as root would drop to its own user
        return args

    def run(self, container: Manifest) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *self.args(container)],
            env=self.env(container),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("wb") as log:
            return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_server(self, container: Manifest) -> subprocess.Popen[bytes]:
        """A long-running roadsign-fleet container, logging to its subcommand's name."""
        args = self.args(container)
        return self.start(args[0], [*CLI, *args], self.env(container))

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with Postgres() as server:
        yield server


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def test_rendered_containers_start_in_order_and_pass_their_probes(
    rendered: dict[str, str], postgres: Postgres, pki: Pki, tmp_path: Path
) -> None:
    docs = parse(rendered["defaults"])
    containers = server_containers(docs)
    pod = Pod(postgres, pki, tmp_path)

    migrated = pod.run(containers["migrate"])
    assert migrated.returncode == 0, migrated.stderr
    configured = pod.run(containers["broker-config"])
    assert configured.returncode == 0, configured.stderr

    (broker,) = find(docs, "StatefulSet", "-broker")
    mosquitto = broker["spec"]["template"]["spec"]["containers"][0]
    conf = Path(mosquitto["command"][-1].replace("/mosquitto/data", str(tmp_path / "broker")))
    running = [pod.start("mosquitto", [*mosquitto["command"][:-1], str(conf)], os.environ.copy())]
    try:
        wait_until(lambda: _accepts(pod.broker_port), 10, "Mosquitto to listen (its tcp probe)")
        running += [pod.start_server(containers["ingest"]), pod.start_server(containers["serve"])]
        metrics = f"http://127.0.0.1:{pod.metrics_port}/metrics"
        # The worker's probe answers, and it logged in to the broker over TLS with the server's
        # account, which broker-config wrote from the database.
        wait_until(
            lambda: (
                (r := _get(metrics)) is not None
                and "roadsign_ingest_broker_connected 1.0" in r.text
            ),
            60,
            f"the ingest worker to connect: {pod.log('ingest')}{pod.log('mosquitto')}",
        )
        healthz = f"http://127.0.0.1:{pod.http_port}/healthz"
        wait_until(
            lambda: (r := _get(healthz)) is not None and r.status_code == 200,
            60,
            f"serve to answer its probe: {pod.log('serve')}",
        )
    finally:
        for process in reversed(running):
            process.terminate()
        for process in running:
            process.wait(timeout=30)
