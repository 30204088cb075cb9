"""Queries whose behaviour differs by database: the same results on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server import crud
from fleet_server.db import make_engine, session_scope
from fleet_server.migrate import upgrade
from fleet_server.models import Device, DeviceCreate
from fleet_server.settings import DatabaseSettings

EARLY = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
LATE = EARLY + timedelta(hours=2)


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseSettings:
    if request.param == "postgresql":
        settings: DatabaseSettings = request.getfixturevalue("database")
        return settings
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'fleet.db'}")
    upgrade(settings)
    return settings


DEVICES = ("veh-1", "veh-2", "veh-3")


def _create_devices(engine: Engine) -> None:
    with session_scope(engine) as session:
        for device_id in DEVICES:
            crud.create_device(session, device=DeviceCreate(device_id=device_id))


def _devices(session: Session) -> list[Device]:
    found = [crud.get_device(session, device_id=device_id) for device_id in DEVICES]
    assert all(device is not None for device in found)
    return [device for device in found if device is not None]


def test_last_seen_never_moves_backwards_and_the_model_follows_the_batch(
    store: DatabaseSettings,
) -> None:
    engine = make_engine(store)
    _create_devices(engine)
    with session_scope(engine) as session:
        crud.mark_seen(
            session,
            last_seen={"veh-1": LATE, "veh-2": EARLY},
            models={"veh-1": ("v2", "a" * 64)},
        )
    with session_scope(engine) as session:
        # A late-arriving older message, and a batch with no reading (no model) for veh-1.
        crud.mark_seen(session, last_seen={"veh-1": EARLY, "veh-2": LATE})
    with session_scope(engine) as session:
        one, two, three = _devices(session)
        assert (one.last_seen_at, one.model_version, one.model_sha256) == (LATE, "v2", "a" * 64)
        assert (two.last_seen_at, two.model_version) == (LATE, None)
        assert three.last_seen_at is None  # not in any batch: untouched
    engine.dispose()


def test_readings_and_health_are_stored_once_on_a_migrated_database(
    store: DatabaseSettings,
) -> None:
    from fleet_server.ingest.worker import health_row, reading_row
    from tests.conftest import make_health, make_reading

    engine = make_engine(store)
    with session_scope(engine) as session:
        crud.create_device(session, device=DeviceCreate(device_id="veh-0042"))
    readings = [reading_row(make_reading(seq=seq)) for seq in (1, 2)]
    health = health_row(make_health(seq=3))
    with session_scope(engine) as session:
        assert crud.insert_readings(session, rows=readings) == [("veh-0042", 1), ("veh-0042", 2)]
        assert crud.insert_health(session, rows=[health]) == [("veh-0042", 3)]
    with session_scope(engine) as session:  # a redelivery adds nothing
        assert crud.insert_readings(session, rows=readings[1:]) == []
        ids = crud.query_readings(session, where=crud.ReadingFilter(), limit=10)
        assert sorted(r.seq for r in ids) == [1, 2]
        assert len({r.id for r in ids}) == 2
    engine.dispose()


def test_the_latest_status_of_each_device_wins_and_decommissioned_devices_stay_so(
    store: DatabaseSettings,
) -> None:
    engine = make_engine(store)
    _create_devices(engine)
    with session_scope(engine) as session:
        crud.decommission(session, device_id="veh-3")
    with session_scope(engine) as session:
        crud.set_statuses(
            session,
            changes=[  # out of order, as a batch may hold them
                crud.StatusChange("veh-1", "online", LATE, "0.2.0"),
                crud.StatusChange("veh-1", "offline", EARLY, "0.1.0"),
                crud.StatusChange("veh-2", "offline", EARLY),
                crud.StatusChange("veh-3", "online", LATE, "0.2.0"),
            ],
        )
    with session_scope(engine) as session:
        one, two, three = _devices(session)
        assert (one.status, one.agent_version, one.last_seen_at) == ("online", "0.2.0", LATE)
        assert (two.status, two.agent_version, two.last_seen_at) == ("offline", None, EARLY)
        assert three.status == "decommissioned"
    engine.dispose()
