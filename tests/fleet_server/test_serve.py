"""``roadsign-fleet serve`` as a process: it stops on SIGTERM even while live feeds are open."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from tests.mosquitto import free_port
from tests.waiting import wait_until

ADMIN = "rsf_serve-test-admin-token"


def test_sigterm_stops_the_server_while_a_live_feed_is_open(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "fleet.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {"port": port},
                "database": {"url": f"sqlite:///{tmp_path / 'fleet.sqlite3'}"},
                "auth": {"bootstrap_admin_token": ADMIN},
            }
        )
    )
    cli = [sys.executable, "-m", "fleet_server.cli"]
    subprocess.run([*cli, "migrate", "--config", str(config)], check=True, timeout=120)
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*cli, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/healthz"), 30, "the server to answer")
        with (
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}) as http,
            http.stream("GET", "/api/v1/readings/stream", timeout=30) as feed,
        ):
            assert next(feed.iter_lines()) == ": connected"
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            returncode = server.wait(timeout=25)  # the feed stays open on our side throughout
            stopped_after = time.monotonic() - stopping
        # uvicorn shuts down cleanly, then raises the signal it caught again: the exit says so.
        assert returncode in (0, -signal.SIGTERM)
        assert "Finished server process" in (tmp_path / "serve.log").read_text()
        assert stopped_after < 20
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
