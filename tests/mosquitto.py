"""A private Mosquitto broker for tests that stop, restart or configure it.

The machine's broker on 1883 is shared; tests that take a broker down, or need auth, ACLs or TLS,
start their own on a free port with this.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """A Mosquitto process on 127.0.0.1:`port`, stoppable and restartable on the same port."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        *,
        extra_config: str = "",
        persistent: bool = False,
        config: Path | None = None,
        port: int | None = None,
    ) -> None:
        """A broker in `workdir`; with `config` (a generated file listening on `port`), as is."""
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed (tools/install-system-deps.sh)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        if config is not None:
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

    @property
    def url(self) -> str:
        """The broker's URL for a device profile."""
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        """Start and wait until the port accepts connections."""
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
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
