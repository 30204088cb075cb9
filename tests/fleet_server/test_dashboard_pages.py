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
PAGES = ["/", "/devices/veh-1", "/map", "/models", "/rollouts", "/live", "/alerts"]


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
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "<script>" not in page.text  # no inline script: the policy would block it
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


def _markers(page: str) -> list[str]:
    """The title of each reading marker on the map page."""
    return re.findall(r'<circle class="marker"[^>]*>\s*<title>([^<]*)</title>', page)


def test_the_map_draws_positioned_readings_and_filters_by_type_value_device_and_time(
    client: TestClient, engine: Engine
) -> None:
    enrol(engine, "veh-1", "veh-2")
    rows = [
        ("veh-1", 1, "speed_limit", 50, T0, (48.10, 11.50)),
        ("veh-1", 2, "speed_limit", 80, T0 + timedelta(hours=1), (48.11, 11.52)),
        ("veh-2", 3, "stop", None, T0 + timedelta(hours=2), (48.12, 11.51)),
        ("veh-2", 4, "speed_limit", 50, T0, None),  # no position: not on the map
    ]
    with session_scope(engine) as session:
        crud.insert_readings(
            session,
            rows=[
                reading_row(
                    make_reading(
                        device_id=device_id,
                        seq=seq,
                        sign_type=sign_type,
                        value=value,
                        unit="km/h" if value else None,
                        text=None,
                        gtsrb_class_id=None,
                        timestamp=when,
                        location={"lat": where[0], "lon": where[1]} if where else None,
                    )
                )
                for device_id, seq, sign_type, value, when, where in rows
            ],
        )
    headers = cookie(login(client, ADMIN))

    def shown(**query: str) -> list[str]:
        page = client.get("/map", params=query, headers=headers)
        assert page.status_code == 200, page.text
        return sorted(title.split(" · ")[0] for title in _markers(page.text))

    assert shown() == ["speed_limit 50 km/h", "speed_limit 80 km/h", "stop"]
    assert shown(sign_type="speed_limit") == ["speed_limit 50 km/h", "speed_limit 80 km/h"]
    assert shown(value="80") == ["speed_limit 80 km/h"]
    assert shown(device_id="veh-2") == ["stop"]
    # The form's datetime-local fields carry no zone: UTC, as every time on the dashboard.
    assert shown(since="2026-12-03T08:30", until="2026-12-03T09:30") == ["speed_limit 80 km/h"]
    assert shown(sign_type="", device_id="", value="", since="", until="") == shown()
    nothing = client.get("/map", params={"sign_type": "yield"}, headers=headers).text
    assert "no readings with a position match" in nothing
    bad = client.get("/map", params={"since": "yesterday"}, headers=headers)
    assert bad.status_code == 422
