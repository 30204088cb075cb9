"""A ``roadsign-fleet serve`` replica killed (SIGKILL) in the middle of a stage leaves its rollout
resumable: a second replica, started afterwards on the same database, carries it to the end.

Real processes on a real PostgreSQL and Mosquitto; the devices are simulated as rows written
the way ingestion writes them (driver_support), stamped around the real clock, since the
replicas' drivers read the time themselves.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from fleet_server.db import session_scope
from fleet_server.models import DeviceSelector, RolloutCreate, utcnow
from fleet_server.rollouts.gates import GatePolicy
from fleet_server.rollouts.requests import create_rollout
from fleet_server.rollouts.values import Desired, RolloutStatus, StageSpec
from fleet_server.settings import DatabaseSettings
from tests.fleet_server.auth_support import ADMIN
from tests.fleet_server.repository.support import ONLINE_PASSPHRASE
from tests.fleet_server.rollouts.driver_support import (
    DEVICES,
    NEW_VERSION,
    Fleet,
    event_kinds,
    make_fleet,
    report,
    signed_assignments,
    simulate,
    stored_state,
)
from tests.mosquitto import Broker, free_port
from tests.waiting import wait_until

RID = "r-replica-kill"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


def _replica(
    fleet: Fleet, database: DatabaseSettings, broker: Broker, work: Path, name: str
) -> subprocess.Popen[bytes]:
    """A `serve` process with the rollout driver on, ticking every 0.3 s."""
    port = free_port()
    config = work / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http": {"port": port},
                "database": {"url": database.url},
                "broker": {"url": broker.url},
                "auth": {"bootstrap_admin_token": ADMIN},
                "tuf": {
                    "online_key_file": str(fleet.settings.tuf.online_key_file),
                    "online_key_passphrase": ONLINE_PASSPHRASE,
                },
                "rollouts": {"enabled": True, "tick_s": 0.3, "window_s": 1800},
            }
        )
    )
    log = (work / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "fleet_server.cli", "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    wait_until(lambda: _answers(port, process), 60, f"{name} to answer")
    return process


def _answers(port: int, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "the replica exited"
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _assigned(engine: Engine) -> set[str]:
    state = stored_state(engine, RID)
    return {r.device_id for r in state.devices if r.desired is Desired.NEW}


def _install(fleet: Fleet, device_ids: list[str]) -> None:
    """The devices report the new model active now, then 20 healthy minutes on it."""
    now = utcnow()
    report(fleet, device_ids, state="active", rollout_id=RID, received_at=now)
    simulate(fleet, device_ids, start=now, end=now + timedelta(minutes=20))


@pytest.mark.slow
def test_a_replica_killed_mid_stage_leaves_the_rollout_for_the_next_one_to_finish(
    database: DatabaseSettings, engine: Engine, tmp_path: Path, broker: Broker
) -> None:
    fleet = make_fleet(database, engine, tmp_path)
    # The devices' recent past on the old model: the before-windows of the real clock.
    simulate(fleet, DEVICES, start=utcnow() - timedelta(minutes=25), end=utcnow())
    body = RolloutCreate(
        rollout_id=RID,
        model_name="roadsign-test",
        model_version=NEW_VERSION,
        selector=DeviceSelector(all=True),
        stages=[StageSpec(count=3, soak_s=1), StageSpec(percent=100, soak_s=1)],
        policy=GatePolicy(
            min_finished_installs=1,
            min_devices_with_data=1,
            min_window_hours=0.1,
            min_driving_hours=0.1,
            min_readings=5,
        ),
    )
    with session_scope(engine) as session:
        create_rollout(session, body, utcnow())  # as the CLI does: left to the drivers

    first = _replica(fleet, database, broker, tmp_path, "replica-1")
    try:
        canaries = wait_until(lambda: _assigned(engine), 30, "replica 1 to start stage 1")
        wait_until(lambda: set(signed_assignments(engine)) == canaries, 30, "stage 1 signed")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    assert stored_state(engine, RID).stage == 0  # killed mid-stage: no install reported yet

    _install(fleet, sorted(canaries))
    second = _replica(fleet, database, broker, tmp_path, "replica-2")
    try:
        everyone = wait_until(
            lambda: _assigned(engine) if len(_assigned(engine)) == len(DEVICES) else set(),
            60,
            "replica 2 to pass stage 1 and start stage 2",
        )
        _install(fleet, sorted(everyone - canaries))
        wait_until(
            lambda: stored_state(engine, RID).status is RolloutStatus.COMPLETED,
            60,
            "replica 2 to complete the rollout",
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    kinds = event_kinds(engine, RID)
    # Each stage started once: the second replica resumed the stored stage, it did not redo it.
    assert [stage for kind, stage in kinds if kind == "stage_started"] == [0, 1]
    assert [kind for kind, _ in kinds][-1] == "completed"
    assignments = signed_assignments(engine)
    assert set(assignments) == set(DEVICES)
    assert {a["rollout_id"] for a in assignments.values()} == {RID}
