"""Alerts over a real PostgreSQL, through their URLs: each raised exactly when its condition holds.

Every device below is set up on one side of one alert's threshold, with the rest of its state
healthy, so any alert raised for the wrong reason, or missed, shows up as a difference.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.ingest.worker import health_row
from tests.conftest import make_health
from tests.fleet_server.auth_support import ADMIN
from tests.fleet_server.ingest_rig import enrol

JUST_NOW = timedelta(0)

# device id -> (status, last seen how long ago, its health samples oldest first: overrides of
# make_health). A device goes offline after 5 minutes unseen; low fps is under 5; hot, over 85 C.
Fleet = dict[str, tuple[str, timedelta | None, list[dict[str, object]]]]
FLEET: Fleet = {
    "ok": ("online", JUST_NOW, [{}]),
    "went-offline": ("offline", JUST_NOW, [{}]),
    "silent-6-min": ("online", timedelta(minutes=6), [{}]),
    "quiet-4-min": ("online", timedelta(minutes=4), [{}]),
    "never-reported": ("unknown", None, []),
    "retired": ("decommissioned", None, [{"outbox_dropped": 5, "camera_state": "failed"}]),
    "dropping": ("online", JUST_NOW, [{"outbox_dropped": 3}]),
    "recovered": ("online", JUST_NOW, [{"outbox_dropped": 4}, {"outbox_dropped": 0}]),
    "slow": ("online", JUST_NOW, [{"fps": 4.9}]),
    "at-five-fps": ("online", JUST_NOW, [{"fps": 5.0}]),
    "camera-stopped": ("online", JUST_NOW, [{"fps": 0.0, "camera_state": "stopped"}]),
    "camera-failed": ("online", JUST_NOW, [{"fps": 0.0, "camera_state": "failed"}]),
    "camera-reconnecting": ("online", JUST_NOW, [{"camera_state": "reconnecting"}]),
    "hot": ("online", JUST_NOW, [{"temperature_c": 90.0}]),
    "at-85-c": ("online", JUST_NOW, [{"temperature_c": 85.0}]),
}

# (device, severity, what its message names): every alert the fleet above should raise.
EXPECTED = [
    ("camera-failed", "critical", "camera failed"),
    ("camera-reconnecting", "critical", "camera reconnecting"),
    ("dropping", "warning", "outbox dropped 3 messages"),
    ("hot", "warning", "hot: 90"),
    ("silent-6-min", "critical", "offline"),
    ("slow", "warning", "low frame rate 4.9 fps"),
    ("went-offline", "critical", "offline"),
]


def _seed(engine: Engine, fleet: Fleet) -> None:
    now = datetime.now(UTC)
    enrol(engine, *fleet)
    with session_scope(engine) as session:
        changes = [
            crud.StatusChange(device_id, status, now - ago)
            for device_id, (status, ago, _) in fleet.items()
            if ago is not None and status != "decommissioned"
        ]
        crud.set_statuses(session, changes=changes)
        for device_id, (status, _, _) in fleet.items():
            if status == "decommissioned":
                crud.decommission(session, device_id=device_id)
        rows = [
            health_row(
                make_health(
                    device_id=device_id,
                    seq=i,
                    timestamp=now - timedelta(seconds=30 * (len(samples) - i)),
                    **overrides,
                )
            )
            for device_id, (_, _, samples) in fleet.items()
            for i, overrides in enumerate(samples)
        ]
        crud.insert_health(session, rows=rows)


def _alerts(client: TestClient) -> list[dict[str, str]]:
    response = client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    return list(response.json())


def _log_in(client: TestClient) -> None:
    response = client.post("/login", data={"token": ADMIN})
    assert response.status_code == 200
    assert response.url.path == "/"


def test_each_alert_is_raised_exactly_when_its_condition_holds(
    client: TestClient, engine: Engine
) -> None:
    _seed(engine, FLEET)
    alerts = sorted(_alerts(client), key=lambda a: (a["device_id"], a["message"]))
    assert [(a["device_id"], a["severity"]) for a in alerts] == [(d, s) for d, s, _ in EXPECTED]
    for alert, (_, _, named) in zip(alerts, EXPECTED, strict=True):
        assert named in alert["message"], alert


def test_the_alerts_page_lists_the_same_alerts(client: TestClient, engine: Engine) -> None:
    _seed(engine, FLEET)
    _log_in(client)
    page = client.get("/alerts").text
    for device_id in FLEET:
        raised = [e for e in EXPECTED if e[0] == device_id]
        assert (f"<td>{device_id}</td>" in page) == bool(raised), device_id
    for _, _, named in EXPECTED:
        assert named in page


def test_a_healthy_fleet_has_no_alerts(client: TestClient, engine: Engine) -> None:
    _seed(engine, {name: FLEET[name] for name in ("ok", "quiet-4-min", "never-reported")})
    assert _alerts(client) == []
    assert client.get("/api/v1/alerts").status_code == 401  # a reader token at least
    _log_in(client)
    assert "No alerts." in client.get("/alerts").text
