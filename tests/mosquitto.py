"""A private Mosquitto broker for tests that stop, restart or configure it.

The machine's broker on 1883 is shared; tests that take a broker down, or need auth, ACLs or TLS,
start their own on a free port with this.
"""

from __future__ import annotations

import getpass
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener's files (see tests/tls.py); with `require_client_cert`, mutual TLS."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_client_cert: bool = False

    def listener_config(self, port: int) -> str:
        """Mosquitto lines for a TLS listener on 127.0.0.1:`port`."""
        return (
            f"listener {port} 127.0.0.1\ncafile {self.ca_file}\ncertfile {self.cert_file}\n"
            f"keyfile {self.key_file}\n"
            f"require_certificate {'true' if self.require_client_cert else 'false'}\n"
        )


class Broker:
    """A Mosquitto process on 127.0.0.1:`port`, stoppable and restartable on the same port.

    With `tls` it listens on `tls_port` too (`tls_url`); the plain port stays open, so a test's
    own observer need not speak TLS while the client under test must.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        extra_config: str = "",
        persistent: bool = False,
        tls: BrokerTls | None = None,
        config: Path | None = None,
        port: int | None = None,
    ) -> None:
        """A broker in `workdir`; with `config` (a generated file listening on `port`), as is.

        With `tls`, a TLS listener beside the plain one (not with a generated `config`).
        """
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (tools/install-system-deps.sh)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.tls_port: int | None = None
        if config is not None:
            if tls is not None:
                raise ValueError("a generated config brings its own listeners: no tls here")
            self.config = config
            return
        self.config = workdir / "mosquitto.conf"
        # Persistent: sessions (a subscriber's subscriptions and its queued QoS 1 messages)
        # and retained messages survive a restart, as a production broker keeps them.
        persistence = (
            f"persistence true\npersistence_location {workdir}/\n"
            if persistent
            else "persistence false\n"
        )
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{persistence}"
            # Run as whoever started it (root drops to "mosquitto", who cannot read test files).
            f"log_dest stderr\nuser {getpass.getuser()}\n{extra_config}"
        )
        if tls is not None:
            self.tls_port = free_port()
            with self.config.open("a") as tls_config:
                tls_config.write("\n" + tls.listener_config(self.tls_port))

    @property
    def url(self) -> str:
        """The broker's URL for a device profile."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """The TLS listener's URL (the broker must have been made with `tls`)."""
        if self.tls_port is None:
            raise RuntimeError("this broker has no TLS listener")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def listener_of(self, client_id: str) -> int | None:
        """The port the client last connected on, as the broker logged it (None: never)."""
        log = (self.workdir / "mosquitto.log").read_text()
        peers = dict(re.findall(r"New connection from (\S+) on port (\d+)\.", log))
        connected = re.findall(rf"New client connected from (\S+) as {re.escape(client_id)} ", log)
        return int(peers[connected[-1]]) if connected else None

    def start(self) -> Broker:
        """Start and wait until the port accepts connections."""
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                # Mosquitto opens every listener before it serves any: one up means all are.
                with socket.create_connection(("127.0.0.1", self.tls_port or self.port), 0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(
            f"mosquitto did not start: {(self.workdir / 'mosquitto.log').read_text()}"
        )

    def stop(self) -> None:
        """Stop the broker (clients see their connection drop)."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
