"""The HTTP API over a real PostgreSQL: tokens and roles, devices, readings, health, export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from fleet_protocol.messages import CameraState, GeoPoint, HealthReport
from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.ingest.worker import health_row, reading_row
from fleet_server.models import DeviceCreate, Rollout
from fleet_server.security import generate_token, hash_token
from tests.conftest import make_reading
from tests.fleet_server.auth_support import ADMIN

T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def _auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _reader_token(engine: Engine) -> str:
    token = generate_token()
    with session_scope(engine) as session:
        crud.create_token(session, name="viewer", role="reader", token_hash=hash_token(token))
    return token


def _seed(engine: Engine) -> None:
    with session_scope(engine) as session:
        for device_id, tags in (("veh-1", ["munich"]), ("veh-2", ["berlin"])):
            crud.create_device(
                session, device=DeviceCreate(device_id=device_id, profile="vehicle-rpi", tags=tags)
            )
        rows = []
        for i in range(30):
            device = "veh-1" if i % 3 else "veh-2"
            rows.append(
                reading_row(
                    make_reading(
                        device_id=device,
                        seq=i,
                        timestamp=T0 + timedelta(minutes=i),
                        value=50 if i % 2 else 80,
                        location=GeoPoint(lat=48.1 + i * 0.01, lon=11.5),
                    )
                )
            )
        crud.insert_readings(session, rows=rows)
        crud.insert_health(
            session,
            rows=[
                health_row(
                    HealthReport(
                        device_id="veh-1",
                        seq=100 + i,
                        timestamp=T0 + timedelta(minutes=i),
                        agent_version="0.1.0",
                        uptime_s=60.0 * i,
                        fps=30.0,
                        cpu_percent=90,
                        rss_mb=180,
                        disk_free_mb=900,
                        camera_state=CameraState.OK,
                        outbox_depth=0,
                        outbox_dropped=0,
                    )
                )
                for i in range(5)
            ],
        )


def test_tokens_are_required_and_roles_enforced(client: TestClient, engine: Engine) -> None:
    assert client.get("/api/v1/devices").status_code == 401
    assert client.get("/api/v1/devices", headers=_auth("rsf_wrong")).status_code == 401
    reader = _reader_token(engine)
    assert client.get("/api/v1/devices", headers=_auth(reader)).status_code == 200
    created = client.post("/api/v1/devices", json={"device_id": "veh-9"}, headers=_auth(reader))
    assert created.status_code == 403
    assert (
        client.post("/api/v1/devices", json={"device_id": "veh-9"}, headers=_auth()).status_code
        == 201
    )
    assert (
        client.post("/api/v1/devices", json={"device_id": "veh-9"}, headers=_auth()).status_code
        == 409
    )
    bad = client.post("/api/v1/devices", json={"device_id": "veh/9"}, headers=_auth())
    assert bad.status_code == 422


def test_devices_filter_tag_and_decommission(client: TestClient, engine: Engine) -> None:
    _seed(engine)
    listed = client.get("/api/v1/devices", params={"tag": "munich"}, headers=_auth()).json()
    assert [d["device_id"] for d in listed] == ["veh-1"]
    tagged = client.put(
        "/api/v1/devices/veh-2/tags", json={"tags": ["berlin", "night"]}, headers=_auth()
    ).json()
    assert tagged["tags"] == ["berlin", "night"]
    gone = client.post("/api/v1/devices/veh-2/decommission", headers=_auth()).json()
    assert gone["status"] == "decommissioned"
    assert client.get("/api/v1/devices/none", headers=_auth()).status_code == 404
    with session_scope(engine) as session:
        statuses = crud.device_statuses(session)
    assert {d for d, s in statuses.items() if s != "decommissioned"} == {"veh-1"}


def test_readings_filter_and_page_through_every_row_once(
    client: TestClient, engine: Engine
) -> None:
    _seed(engine)
    seen, cursor = [], None
    while True:
        params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/readings", params=params, headers=_auth()).json()
        seen += [(r["device_id"], r["seq"]) for r in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 30
    assert len(set(seen)) == 30
    newest = client.get("/api/v1/readings", params={"limit": 1}, headers=_auth()).json()
    assert newest["items"][0]["seq"] == 29
    only = client.get(
        "/api/v1/readings",
        headers=_auth(),
        params={
            "device_id": "veh-2",
            "value": 80,
            "since": (T0 + timedelta(minutes=5)).isoformat(),
        },
    ).json()
    # veh-2 has every third reading, 80 every second one: seq 0, 6, 12 ... of which 6 on are late.
    assert [r["seq"] for r in only["items"]] == [24, 18, 12, 6]
    assert {(r["device_id"], r["value"]) for r in only["items"]} == {("veh-2", 80.0)}
    area = client.get(
        "/api/v1/readings", headers=_auth(), params={"bbox": "11.4,48.095,11.6,48.125"}
    ).json()
    assert sorted(r["seq"] for r in area["items"]) == [0, 1, 2]
    assert (
        client.get("/api/v1/readings", params={"bbox": "1,2,3"}, headers=_auth()).status_code == 400
    )
    assert (
        client.get("/api/v1/readings", params={"cursor": "garbage"}, headers=_auth()).status_code
        == 400
    )


def test_export_as_csv_and_ndjson(client: TestClient, engine: Engine) -> None:
    _seed(engine)
    response = client.get("/api/v1/readings/export", params={"device_id": "veh-1"}, headers=_auth())
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 20
    assert rows[0]["sign_type"] == "speed_limit"
    ndjson = client.get("/api/v1/readings/export", params={"format": "ndjson"}, headers=_auth())
    assert len([json.loads(line) for line in ndjson.text.splitlines()]) == 30


def test_health_series_in_time_order(client: TestClient, engine: Engine) -> None:
    _seed(engine)
    series = client.get("/api/v1/devices/veh-1/health", headers=_auth()).json()
    assert [h["seq"] for h in series] == [100, 101, 102, 103, 104]
    assert client.get("/api/v1/devices/nope/health", headers=_auth()).status_code == 404


def test_metrics_count_devices_by_status(client: TestClient, engine: Engine) -> None:
    _seed(engine)
    text = client.get("/metrics").text
    assert 'roadsign_devices{status="unknown"} 2.0' in text
    assert 'roadsign_devices{status="online"} 0.0' in text  # every status, none missing


def test_metrics_count_rollouts_by_status_and_a_count_falls_back_to_zero(
    client: TestClient, engine: Engine
) -> None:
    with session_scope(engine) as session:
        for rollout_id, status in (("r1", "paused"), ("r2", "paused"), ("r3", "completed")):
            crud.add_rollout(
                session,
                rollout=Rollout(
                    id=rollout_id,
                    model_name="roadsign",
                    model_version="1.0.0",
                    target_path="roadsign/1.0.0.tar",
                    status=status,
                    stage=0,
                    state="{}",
                ),
            )
    text = client.get("/metrics").text
    assert 'roadsign_rollouts{status="paused"} 2.0' in text
    assert 'roadsign_rollouts{status="completed"} 1.0' in text
    assert 'roadsign_rollouts{status="rolled_back"} 0.0' in text
    with session_scope(engine) as session:
        for rollout_id in ("r1", "r2"):
            rollout = crud.get_rollout(session, rollout_id=rollout_id)
            assert rollout is not None
            rollout.status = "running"
    text = client.get("/metrics").text
    assert 'roadsign_rollouts{status="paused"} 0.0' in text
    assert 'roadsign_rollouts{status="running"} 2.0' in text


def test_a_nul_character_in_the_path_or_query_is_refused_not_a_server_error(
    client: TestClient,
) -> None:
    for url in ("/api/v1/readings?device_id=%00", "/api/v1/devices/veh%001", "/?x%00=1"):
        response = client.get(url, headers=_auth())
        assert response.status_code == 400, url
        assert "NUL" in response.json()["detail"]
    assert client.get("/api/v1/readings?device_id=veh-1", headers=_auth()).status_code == 200


def test_a_nul_character_in_a_body_is_refused_naming_the_field(client: TestClient) -> None:
    response = client.post(
        "/api/v1/devices", json={"device_id": "veh-9", "profile": "a\x00b"}, headers=_auth()
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "profile"
    _ = client.post("/api/v1/devices", json={"device_id": "veh-9"}, headers=_auth())
    response = client.put("/api/v1/devices/veh-9/tags", json={"tags": ["\x00"]}, headers=_auth())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "tags"
