"""``make demo``'s process plumbing: ports, waits, the API client and the processes it starts.

Every process starts in a process group of its own, and stopping the stack signals whole groups:
servers that fork workers (MLflow's) go with their parent, and nothing the demo started is left.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".cache" / "demo"


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, ready: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
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

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Path:
        """Start `argv` in its own process group, output in ``WORK/<name>.log``; its log."""
        log = WORK / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )
        self.processes.append((name, process))
        return log

    def running(self, name: str) -> bool:
        """Whether the process started as `name` still runs."""
        return any(n == name and p.poll() is None for n, p in self.processes)

    def stop(self) -> None:
        """SIGTERM each group in reverse start order, then SIGKILL the groups that linger."""
        for _, process in reversed(self.processes):
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process in reversed(self.processes):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
            # Children that outlived their leader (forked workers) go too.
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return  # the whole group is gone already


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
