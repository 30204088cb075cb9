"""OTA status and config reports: stored from a real broker, counted, served by the API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr

from fleet_protocol.messages import OtaState, OtaStatus, ReportedConfig
from fleet_protocol.topics import MessageKind
from fleet_server import crud
from fleet_server.api.main import create_app
from fleet_server.db import session_scope
from fleet_server.security import generate_token, hash_token
from fleet_server.settings import AuthSettings, DatabaseSettings
from tests.conftest import MODEL
from tests.fleet_server.ingest_rig import ingest_rig
from tests.waiting import wait_until

ADMIN = "rsf_events-admin-token"
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
COMMAND = uuid.UUID("5f0c6c1e-9a43-4d59-9a57-7b0c1f1e2d3c")


def _ota(seq: int, state: OtaState, **fields: object) -> OtaStatus:
    return OtaStatus.model_validate(
        {
            "device_id": "rsu-1",
            "seq": seq,
            "timestamp": T0 + timedelta(seconds=seq),
            "command_id": COMMAND,
            "state": state,
            "model_version": "2026.12.0",
            **fields,
        }
    )


def _config(seq: int, version: int, *errors: str) -> ReportedConfig:
    return ReportedConfig(
        device_id="rsu-1",
        seq=seq,
        timestamp=T0 + timedelta(seconds=seq),
        config_version=version,
        applied=not errors,
        errors=list(errors),
    )


def test_ota_status_and_config_reports_are_stored_once_counted_and_served(
    database: DatabaseSettings, tmp_path: Path
) -> None:
    with ingest_rig(database, tmp_path, devices=["rsu-1", "rsu-2"]) as rig:
        rig.publish(MessageKind.OTA_STATUS, _ota(1, OtaState.DOWNLOADING))
        rig.publish(MessageKind.CONFIG_REPORTED, _config(2, 3, "camera.fps_cap: must be > 0"))
        rig.publish(
            MessageKind.OTA_STATUS,
            _ota(3, OtaState.ROLLED_BACK, detail="health gate: fps 4.1 < 20", running_model=MODEL),
        )
        rig.publish(MessageKind.OTA_STATUS, _ota(3, OtaState.ROLLED_BACK))  # redelivered seq
        rig.publish(MessageKind.CONFIG_REPORTED, _config(4, 4))
        wait_until(
            lambda: rig.count("otastatusevent") == 2 and rig.count("configreport") == 2,
            10,
            "two OTA status rows and two config reports",
        )
        wait_until(lambda: rig.value("roadsign_ingest_duplicates_total") == 1, 10, "the redelivery")
        assert rig.value("roadsign_ingested_total", kind="ota_status") == 2
        assert rig.value("roadsign_ingested_total", kind="config_reported") == 2
        with session_scope(rig.engine) as session:
            device = crud.get_device(session, device_id="rsu-1")
            assert device is not None
            assert device.last_seen_at == T0 + timedelta(seconds=4)

        reader = generate_token()
        with session_scope(rig.engine) as session:
            crud.create_token(session, name="viewer", role="reader", token_hash=hash_token(reader))
        settings = rig.settings.model_copy(
            update={"auth": AuthSettings(bootstrap_admin_token=SecretStr(ADMIN))}
        )
        auth = {"Authorization": f"Bearer {reader}"}
        with TestClient(create_app(settings, rig.engine)) as api:
            history = api.get("/api/v1/devices/rsu-1/ota-status", headers=auth)
            reported = api.get("/api/v1/devices/rsu-1/config/reported", headers=auth)
            none_yet = api.get("/api/v1/devices/rsu-2/config/reported", headers=auth)
            no_device = api.get("/api/v1/devices/nope/ota-status", headers=auth)
            anonymous = api.get("/api/v1/devices/rsu-1/ota-status")

    assert history.status_code == 200
    assert [(e["seq"], e["state"]) for e in history.json()] == [
        (3, "rolled_back"),
        (1, "downloading"),
    ]
    newest = history.json()[0]
    assert newest["command_id"] == str(COMMAND)
    assert newest["detail"] == "health gate: fps 4.1 < 20"
    assert newest["running_model_version"] == MODEL.version
    assert newest["running_model_sha256"] == MODEL.sha256
    assert reported.status_code == 200
    assert {k: reported.json()[k] for k in ("seq", "config_version", "applied", "errors")} == {
        "seq": 4,
        "config_version": 4,
        "applied": True,
        "errors": [],
    }
    assert none_yet.status_code == 404
    assert no_device.status_code == 404
    assert anonymous.status_code == 401
