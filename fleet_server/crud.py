"""Every query of the fleet server, as keyword-only functions on a session.

Inserts of readings and health samples ignore (device_id, seq) pairs already stored and return
only what was new, so redeliveries are neither counted nor republished twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, col

from fleet_server.models import Device, DeviceCreate, Reading


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _insert_ignoring_duplicates(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Insert `rows`, skipping (device_id, seq) already stored; return the new pairs."""
    if not rows:
        return []
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(table)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        .returning(table.c.device_id, table.c.seq)
    )
    return [(row[0], int(row[1])) for row in session.execute(statement)]


def insert_readings(
    session: Session, *, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Store readings; return the (device_id, seq) of those that were new."""
    return _insert_ignoring_duplicates(session, _table("reading"), rows)


def insert_health(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """Store health samples; return the (device_id, seq) of those that were new."""
    return _insert_ignoring_duplicates(session, _table("healthsample"), rows)


def create_device(session: Session, *, device: DeviceCreate) -> Device:
    """Add a device to the fleet."""
    row = Device.model_validate(device)
    session.add(row)
    session.flush()
    return row


def enrolled_device_ids(session: Session) -> set[str]:
    """Ids of the devices that may report (enrolled and not decommissioned)."""
    statement = select(col(Device.device_id)).where(col(Device.status) != "decommissioned")
    return set(session.execute(statement).scalars())


def mark_seen(
    session: Session,
    *,
    last_seen: Mapping[str, datetime],
    models: Mapping[str, tuple[str, str]] | None = None,
) -> None:
    """Advance each device's last-seen time (never backwards) and note its current model."""
    # The larger of two values: GREATEST in PostgreSQL, the two-argument MAX in SQLite.
    later = func.greatest if session.get_bind().dialect.name == "postgresql" else func.max
    for device_id, seen in last_seen.items():
        values: dict[str, Any] = {
            "last_seen_at": later(func.coalesce(Device.last_seen_at, seen), seen)
        }
        if models and device_id in models:
            values["model_version"], values["model_sha256"] = models[device_id]
        statement = update(Device).where(Device.device_id == device_id).values(**values)  # type: ignore[arg-type]
        session.execute(statement)


def set_status(
    session: Session, *, device_id: str, status: str, at: datetime, agent_version: str | None = None
) -> None:
    """Record a device going online or offline (decommissioned devices stay so)."""
    values: dict[str, Any] = {"status": status}
    if agent_version:
        values["agent_version"] = agent_version
    session.execute(
        update(Device)
        .where(Device.device_id == device_id, Device.status != "decommissioned")  # type: ignore[arg-type]
        .values(**values)
    )
    mark_seen(session, last_seen={device_id: at})


def count_readings(session: Session, *, device_ids: Iterable[str] | None = None) -> int:
    """Stored readings, of some devices or all."""
    statement = select(func.count()).select_from(Reading)
    if device_ids is not None:
        statement = statement.where(Reading.device_id.in_(list(device_ids)))  # type: ignore[attr-defined]
    return int(session.execute(statement).scalar_one())


def get_device(session: Session, *, device_id: str) -> Device | None:
    """One device by id."""
    return session.execute(select(Device).where(Device.device_id == device_id)).scalar_one_or_none()  # type: ignore[arg-type]
