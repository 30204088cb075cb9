"""The dashboard's pages, rendered from Jinja2 templates: each answers a logged-in viewer, every
value from a device or an operator is escaped, and the static files are served from the
package."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update

from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.ingest.worker import health_row, reading_row
from fleet_server.models import Device
from tests.conftest import make_health, make_reading
from tests.fleet_server.auth_support import ADMIN, cookie, issue, login
from tests.fleet_server.ingest_rig import enrol

HOSTILE = "<script>alert('owned')</script>"
T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
PAGES = ["/", "/devices/veh-1", "/models", "/rollouts", "/live", "/alerts"]


def seed(engine: Engine, device_id: str = "veh-1", *, samples: int = 3) -> None:
    """A device with `samples` health reports a minute apart and two readings."""
    enrol(engine, device_id)
    with session_scope(engine) as session:
        crud.insert_health(
            session,
            rows=[
                health_row(
                    make_health(
                        device_id=device_id,
                        seq=i,
                        timestamp=T0 + timedelta(minutes=i),
                        fps=20.0 + i,
                    )
                )
                for i in range(samples)
            ],
        )
        crud.insert_readings(
            session,
            rows=[
                reading_row(make_reading(device_id=device_id, seq=100 + i, value=v, timestamp=T0))
                for i, v in enumerate((50, 80))
            ],
        )


def reader_cookie(client: TestClient) -> dict[str, str]:
    """The headers of a logged-in reader (not an admin)."""
    return cookie(login(client, str(issue(client, role="reader")["token"])))


@pytest.mark.parametrize("path", PAGES)
def test_each_page_answers_a_logged_in_viewer_with_the_nav_and_the_stylesheet(
    client: TestClient, engine: Engine, path: str
) -> None:
    seed(engine)
    page = client.get(path, headers=reader_cookie(client))
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in page.text
    assert '<a href="/rollouts">Rollouts</a>' in page.text
    assert "action='/logout'" in page.text
    # Nobody logged in: the login form instead.
    away = client.get(path, follow_redirects=False)
    assert (away.status_code, away.headers["location"]) == (303, "/login")


def test_the_login_and_api_pages_render_without_a_session(client: TestClient) -> None:
    form = client.get("/login")
    assert form.status_code == 200
    assert 'name="token"' in form.text
    assert "action='/logout'" not in form.text  # no session, no logout
    assert "not valid" in client.get("/login?error=1").text
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "<code>GET /api/v1/devices</code>" in docs.text


def test_static_files_are_served_from_the_package_to_anyone(client: TestClient) -> None:
    css = client.get("/static/dashboard.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    script = client.get("/static/live.js")
    assert script.status_code == 200
    assert "EventSource('/api/v1/readings/stream')" in script.text


def test_a_hostile_profile_and_model_version_are_escaped_on_every_page(
    client: TestClient, engine: Engine
) -> None:
    seed(engine)
    with session_scope(engine) as session:
        session.execute(
            update(Device).values(profile=HOSTILE, model_version=HOSTILE, tags=[HOSTILE])
        )
    headers = cookie(login(client, ADMIN))
    for path in ("/", "/devices/veh-1"):
        text = client.get(path, headers=headers).text
        assert HOSTILE not in text, path
        assert "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;" in text, path


@pytest.mark.parametrize("path", ["/devices/nobody", "/rollouts/r-nobody"])
def test_a_page_of_something_unknown_is_a_404(client: TestClient, path: str) -> None:
    page = client.get(path, headers=cookie(login(client, ADMIN)))
    assert page.status_code == 404


def _polylines(page: str) -> list[int]:
    """How many points each polyline of `page` has."""
    return [len(points.split()) for points in re.findall(r'<polyline [^>]*points="([^"]*)"', page)]


@pytest.mark.parametrize("samples", [1, 4])
def test_a_device_page_draws_each_health_chart_from_its_samples(
    client: TestClient, engine: Engine, samples: int
) -> None:
    seed(engine, samples=samples)
    page = client.get("/devices/veh-1", headers=cookie(login(client, ADMIN))).text
    for label in ("frames per second", "CPU", "memory", "outbox depth", "temperature"):
        assert f'aria-label="{label}"' in page, label
    # fps, CPU, memory and outbox depth are in every report; temperature and latency are not.
    if samples > 1:
        assert _polylines(page) == [samples] * 4
        assert "<circle" not in page
    else:
        assert _polylines(page) == []
        assert page.count("<circle") == 4
    assert page.count("no samples") == 2
    assert f"frames per second: {20.0 + samples - 1:.1f} fps" in page
