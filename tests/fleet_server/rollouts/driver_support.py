"""A fleet for the rollout driver's tests: a TUF repository with two published model versions,
ten enrolled devices on the first, and simulated devices whose health, readings and OTA
statuses are written as ingestion writes them (its row mappings, then crud)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update

from fleet_protocol.messages import OtaCommand, OtaStatus
from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.ingest.worker import health_row, ota_status_row, reading_row
from fleet_server.models import Device, DeviceSelector, Rollout, RolloutCreate
from fleet_server.repository import storage
from fleet_server.rollouts.driver import load
from fleet_server.rollouts.gates import GatePolicy
from fleet_server.rollouts.requests import create_rollout
from fleet_server.rollouts.values import Desired, RolloutState, StageSpec
from fleet_server.settings import DatabaseSettings, ServerSettings
from tests.conftest import make_health, make_reading
from tests.fleet_server.repository.support import (
    enrol,
    initialise,
    make_bundle,
    new_keys,
    publish,
    repo_settings,
)

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
DEVICES = [f"cam-{i:02d}" for i in range(10)]
OLD_VERSION = "1.0.0"
NEW_VERSION = "2.0.0"
BUNDLE = "roadsign-test"
_SEQ = itertools.count(1000)


@dataclass
class Fleet:
    """The repository's settings, its two targets, and the engine."""

    settings: ServerSettings
    engine: Engine
    old_target: str
    new_target: str


def make_fleet(database: DatabaseSettings, engine: Engine, tmp_path: Path) -> Fleet:
    """Repository initialised, 1.0.0 (release 1) and 2.0.0 (release 2) published, ten devices
    enrolled that report running 1.0.0, each with an hour of healthy history before T0."""
    settings = repo_settings(database, tmp_path / "keys")
    keys = new_keys(tmp_path / "keys")
    initialise(engine, settings, keys, threshold=1)
    old = publish(engine, settings, keys, make_bundle(tmp_path / "b1", version=OLD_VERSION))
    new = publish(engine, settings, keys, make_bundle(tmp_path / "b2", version=NEW_VERSION))
    enrol(engine, *DEVICES)
    with session_scope(engine) as session:
        session.execute(update(Device).values(model_version=OLD_VERSION, tags=["depot-a"]))
    fleet = Fleet(settings=settings, engine=engine, old_target=old, new_target=new)
    simulate(fleet, DEVICES, start=T0 - timedelta(hours=1), end=T0)
    return fleet


def simulate(
    fleet: Fleet,
    device_ids: Sequence[str],
    *,
    start: datetime,
    end: datetime,
    confidence: float = 0.9,
    every: timedelta = timedelta(minutes=1),
) -> None:
    """Health every minute (camera ok, 30 fps, growing uptime) and a reading every minute of
    `confidence`, over [start, end), for each device."""
    health: list[dict[str, Any]] = []
    readings: list[dict[str, Any]] = []
    for device_id in device_ids:
        at = start
        while at < end:
            uptime = (at - start).total_seconds() + 10
            health.append(
                health_row(
                    make_health(
                        device_id=device_id,
                        seq=next(_SEQ),
                        timestamp=at,
                        uptime_s=uptime,
                        stage_latency_ms={"detect": {"p50_ms": 20.0, "p95_ms": 35.0}},
                    )
                )
            )
            readings.append(
                reading_row(
                    make_reading(
                        device_id=device_id, seq=next(_SEQ), timestamp=at, confidence=confidence
                    )
                )
            )
            at += every
    with session_scope(fleet.engine) as session:
        crud.insert_health(session, rows=health)
        crud.insert_readings(session, rows=readings)


def report(
    fleet: Fleet,
    device_ids: Sequence[str],
    *,
    state: str,
    rollout_id: str,
    received_at: datetime,
    version: str = NEW_VERSION,
) -> None:
    """OTA statuses as the devices send them, received (server clock) at `received_at`."""
    rows = []
    for device_id in device_ids:
        message = OtaStatus.model_validate(
            {
                "device_id": device_id,
                "seq": next(_SEQ),
                "timestamp": received_at,
                "command_id": "00000000-0000-4000-8000-000000000001",
                "state": state,
                "model_version": version,
                "rollout_id": rollout_id,
            }
        )
        rows.append({**ota_status_row(message), "received_at": received_at})
    with session_scope(fleet.engine) as session:
        crud.insert_ota_statuses(session, rows=rows)


def stored_state(engine: Engine, rollout_id: str) -> RolloutState:
    """The rollout's stored engine state."""
    with session_scope(engine) as session:
        row = session.get(Rollout, rollout_id)
        assert row is not None
        return load(row)


def signed_assignments(engine: Engine) -> dict[str, dict[str, Any]]:
    """Every device's signed assignment (its roadsign custom), read back from the stored bins."""
    with session_scope(engine) as session:
        state = storage.load_state(session)
    found: dict[str, dict[str, Any]] = {}
    for metadata in state.bins.values():
        for target in metadata.signed.targets.values():
            custom = target.unrecognized_fields.get("custom", {}).get("roadsign", {})
            found[custom["device_id"]] = custom
    return found


def pending_action_count(engine: Engine) -> int:
    """Outbox actions not carried out."""
    with session_scope(engine) as session:
        return len(crud.pending_actions(session))


def event_kinds(engine: Engine, rollout_id: str) -> list[tuple[str, int]]:
    """(kind, stage) of the rollout's audit log, in order."""
    with session_scope(engine) as session:
        return [(e.kind, e.stage) for e in crud.rollout_events(session, rollout_id=rollout_id)]


@dataclass
class RecordingPublisher:
    """A NudgePublisher that keeps what it was given (the MQTT one is tested on a broker)."""

    sent: list[OtaCommand] = field(default_factory=list)

    def publish(self, command: OtaCommand) -> None:
        self.sent.append(command)


RID = "r-test"
"""The rollout `start_rollout` creates: all ten devices, three stages, gates that decide on
minutes of data."""
TICK = timedelta(minutes=20)
POLICY = GatePolicy(
    min_finished_installs=1,
    min_devices_with_data=1,
    min_window_hours=0.25,
    min_driving_hours=0.25,
    min_readings=5,
)
STAGES = [
    StageSpec(count=2, soak_s=600),
    StageSpec(count=5, soak_s=600),
    StageSpec(percent=100, soak_s=600),
]


def start_rollout(fleet: Fleet, now: datetime = T0) -> None:
    """Create (and start) rollout RID of NEW_VERSION over every device."""
    body = RolloutCreate(
        rollout_id=RID,
        model_name="roadsign-test",
        model_version=NEW_VERSION,
        selector=DeviceSelector(all=True),
        stages=STAGES,
        policy=POLICY,
    )
    with session_scope(fleet.engine) as session:
        create_rollout(session, body, now)


def newly_assigned(fleet: Fleet, now: datetime) -> list[str]:
    """The devices of RID assigned the new model at `now`."""
    state = stored_state(fleet.engine, RID)
    return [r.device_id for r in state.devices if r.desired is Desired.NEW and r.assigned_at == now]


def install(fleet: Fleet, device_ids: list[str], now: datetime, confidence: float = 0.9) -> None:
    """The devices install at once and run 40 minutes on the new model."""
    report(
        fleet, device_ids, state="active", rollout_id=RID, received_at=now + timedelta(minutes=1)
    )
    simulate(fleet, device_ids, start=now, end=now + 2 * TICK, confidence=confidence)
