"""Enrol -> a device publishes -> rows in PostgreSQL -> the API -> the dashboard in Chromium
(the fleet, a device's readings and health chart, the map, the live feed).

Everything is real: Mosquitto, PostgreSQL, the agent's outbox and MQTT link, the ingestion
worker, the HTTP server, and Debian's Chromium driven by Playwright. Screenshots are kept under
``.cache/test-artifacts/``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from edge_agent.agent import OutboxSink
from edge_agent.mqtt_link import LinkSettings, MqttLink
from edge_agent.outbox import Outbox
from fleet_protocol.codec import encode
from fleet_protocol.messages import DeviceState, StatusMessage, StatusReason
from fleet_protocol.topics import MessageKind
from fleet_server.api.main import create_app
from fleet_server.db import make_engine
from fleet_server.ingest.metrics import IngestMetrics
from fleet_server.ingest.worker import IngestWorker
from fleet_server.settings import (
    AuthSettings,
    BrokerSettings,
    DatabaseSettings,
    IngestSettings,
    ServerSettings,
)
from tests.conftest import REPO_ROOT, make_health, make_reading
from tests.mosquitto import Broker, free_port
from tests.waiting import wait_until

ADMIN = "rsf_e2e-admin-token"
DEVICE = "rsu-e2e-01"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / ".cache" / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def stack(
    database: DatabaseSettings, tmp_path: Path
) -> Iterator[tuple[ServerSettings, Engine, Broker, str]]:
    broker = Broker(tmp_path / "broker").start()
    settings = ServerSettings(
        database=database,
        broker=BrokerSettings(url=broker.url),
        auth=AuthSettings(bootstrap_admin_token=SecretStr(ADMIN)),
        ingest=IngestSettings(batch_size=20, batch_interval_s=0.05, metrics_port=0),
    )
    engine = make_engine(database)
    app = create_app(settings, engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 30, "the HTTP server")
    worker = IngestWorker(settings, engine, IngestMetrics(), client_id="e2e-ingest").start()
    assert worker.wait_ready(10)
    yield settings, engine, broker, f"http://127.0.0.1:{port}"
    worker.stop()
    server.should_exit = True
    thread.join(10)
    engine.dispose()
    broker.stop()


def _crop() -> bytes:
    image = np.full((48, 48, 3), 255, np.uint8)
    cv2.circle(image, (24, 24), 22, (30, 30, 200), 5)
    cv2.putText(image, "50", (10, 32), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")
def test_enrol_publish_store_query_and_see_it_on_the_dashboard(
    stack: tuple[ServerSettings, Engine, Broker, str], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    settings, engine, broker, base = stack
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with TestClient(create_app(settings, engine)) as api:
        enrolled = api.post(
            "/api/v1/devices",
            headers=admin,
            json={"device_id": DEVICE, "profile": "roadside-intel", "tags": ["a9"]},
        )
        assert enrolled.status_code == 201

        outbox = Outbox(tmp_path / "device-outbox.sqlite3", max_messages=1000, max_bytes=10**7)

        def status(reason: StatusReason) -> bytes:
            state = DeviceState.ONLINE if reason == "connected" else DeviceState.OFFLINE
            return encode(
                StatusMessage(
                    device_id=DEVICE,
                    seq=outbox.next_seq(),
                    timestamp=datetime.now(UTC),
                    state=state,
                    reason=reason,
                    agent_version="0.1.0",
                    profile="roadside-intel",
                )
            )

        link = MqttLink(LinkSettings(url=broker.url, device_id=DEVICE), outbox, status)
        link.start()
        sink = OutboxSink(outbox, link, DEVICE)
        crop = _crop()
        for i, value in enumerate((50, 80, 120)):
            sink.emit(
                MessageKind.READINGS,
                make_reading(
                    device_id=DEVICE,
                    seq=sink.next_seq(),
                    timestamp=datetime.now(UTC),
                    value=value,
                    gtsrb_class_id=None,
                    crop_jpeg=crop,
                    location={"lat": 48.137 + i * 0.001, "lon": 11.575 + i * 0.002},
                ),
            )
        for i, fps in enumerate((28.0, 30.0)):
            sink.emit(
                MessageKind.HEALTH,
                make_health(
                    device_id=DEVICE,
                    seq=sink.next_seq(),
                    timestamp=datetime.now(UTC) + timedelta(seconds=i),
                    fps=fps,
                ),
            )
        assert link.wait_drained(20)

        def stored() -> list[dict[str, object]]:
            page = api.get("/api/v1/readings", params={"device_id": DEVICE}, headers=admin).json()
            return list(page["items"])

        wait_until(lambda: len(stored()) == 3, 30, "the 3 readings through the API")
        assert sorted(float(str(r["value"])) for r in stored()) == [50.0, 80.0, 120.0]
        wait_until(
            lambda: (
                api.get(f"/api/v1/devices/{DEVICE}", headers=admin).json()["status"] == "online"
            ),
            30,
            "the device online",
        )

        wait_until(
            lambda: len(api.get(f"/api/v1/devices/{DEVICE}/health", headers=admin).json()) == 2,
            30,
            "the 2 health reports through the API",
        )

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page()
            page.goto(f"{base}/")
            assert page.url.endswith("/login")
            page.fill("input[name=token]", "rsf_wrong")
            page.click("button")
            assert "not valid" in page.content()
            page.fill("input[name=token]", ADMIN)
            page.click("button")
            page.wait_for_selector(f"text={DEVICE}")
            overview = page.inner_text("main")
            assert DEVICE in overview
            assert "online" in overview
            page.screenshot(path=str(ARTIFACTS / "dashboard-fleet.png"), full_page=True)

            page.click(f"text={DEVICE}")
            page.wait_for_selector("text=Recent readings")
            assert page.locator("img.crop").count() == 3
            # The crops load after the page: wait until the browser has each (a refused or
            # broken one would be complete with no width, and time this out).
            page.wait_for_function(
                "() => [...document.querySelectorAll('img.crop')]"
                ".every(img => img.complete && img.naturalWidth > 0)",
                timeout=15_000,
            )
            assert page.locator("img.crop").first.evaluate("img => img.naturalWidth") == 48
            body = page.inner_text("main")
            assert "120 km/h" in body
            # The two health reports draw a line of two points, not an empty box.
            page.wait_for_selector("svg[aria-label='frames per second'] polyline")
            fps_line = page.locator("svg[aria-label='frames per second'] polyline")
            assert len(str(fps_line.get_attribute("points")).split()) == 2
            page.screenshot(path=str(ARTIFACTS / "dashboard-device.png"), full_page=True)

            page.goto(f"{base}/map")
            assert page.locator("circle.marker").count() == 3
            page.screenshot(path=str(ARTIFACTS / "dashboard-map.png"), full_page=True)

            page.goto(f"{base}/live")
            # The feed starts after what is stored when it opens: wait until it is open.
            page.wait_for_function("() => source.readyState === EventSource.OPEN")
            sink.emit(
                MessageKind.READINGS,
                make_reading(
                    device_id=DEVICE,
                    seq=sink.next_seq(),
                    timestamp=datetime.now(UTC),
                    value=30,
                    gtsrb_class_id=None,
                ),
            )
            page.wait_for_selector("#feed tr:nth-child(2)", timeout=20_000)
            assert DEVICE in page.inner_text("#feed")
            page.screenshot(path=str(ARTIFACTS / "dashboard-live.png"))
            browser.close()
        link.stop()
        assert (ARTIFACTS / "dashboard-fleet.png").stat().st_size > 5000
