"""The device registry: enrolment, status and last-seen updates, tags, decommissioning and the
broker accounts derived from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from fleet_server.models import Device, DeviceCreate


def create_device(session: Session, *, device: DeviceCreate) -> Device:
    """Add a device to the fleet."""
    row = Device.model_validate(device)
    session.add(row)
    session.flush()
    return row


def device_statuses(session: Session, *, device_ids: Iterable[str] | None = None) -> dict[str, str]:
    """The status of every device, or of those of `device_ids` that exist, by id."""
    statement = select(col(Device.device_id), col(Device.status))
    if device_ids is not None:
        statement = statement.where(col(Device.device_id).in_(list(device_ids)))
    return {str(device_id): str(status) for device_id, status in session.execute(statement)}


def mark_seen(
    session: Session,
    *,
    last_seen: Mapping[str, datetime],
    models: Mapping[str, tuple[str, str]] | None = None,
) -> None:
    """Advance each device's last-seen time (never backwards) and note its current model."""
    if not last_seen:
        return
    if session.get_bind().dialect.name == "postgresql":
        _mark_seen_in_one_statement(session, last_seen=last_seen, models=models or {})
        return
    # SQLite (the demo's store): one small UPDATE per device; the two-argument MAX is the larger.
    for device_id, seen in last_seen.items():
        values: dict[str, Any] = {
            "last_seen_at": func.max(func.coalesce(Device.last_seen_at, seen), seen)
        }
        if models and device_id in models:
            values["model_version"], values["model_sha256"] = models[device_id]
        statement = update(Device).where(Device.device_id == device_id).values(**values)  # type: ignore[arg-type]
        session.execute(statement)


MARK_SEEN_SQL = """
UPDATE device SET
    last_seen_at = greatest(coalesce(device.last_seen_at, batch.seen), batch.seen),
    model_version = coalesce(batch.model_version, device.model_version),
    model_sha256 = coalesce(batch.model_sha256, device.model_sha256)
FROM unnest(%(ids)s::varchar[], %(seen)s::timestamptz[], %(versions)s::varchar[],
            %(digests)s::varchar[]) AS batch(device_id, seen, model_version, model_sha256)
WHERE device.device_id = batch.device_id
"""


def _mark_seen_in_one_statement(
    session: Session,
    *,
    last_seen: Mapping[str, datetime],
    models: Mapping[str, tuple[str, str]],
) -> None:
    # One UPDATE for the whole batch: a statement per device cost a round trip each, and a
    # fleet of a thousand devices touches a thousand rows per batch. Arrays keep the statement
    # one shape (prepared once). Rows are listed in device-id order so that concurrent ingest
    # replicas lock them in the same order.
    ids = sorted(last_seen)
    session.connection().exec_driver_sql(
        MARK_SEEN_SQL,
        {
            "ids": ids,
            "seen": [last_seen[i] for i in ids],
            "versions": [models[i][0] if i in models else None for i in ids],
            "digests": [models[i][1] if i in models else None for i in ids],
        },
    )


@dataclass(frozen=True)
class StatusChange:
    """A device said it went online or offline (its birth, last will or shutdown message)."""

    device_id: str
    status: str
    at: datetime
    agent_version: str | None = None


SET_STATUS_SQL = """
UPDATE device SET status = batch.status,
    agent_version = coalesce(batch.agent_version, device.agent_version)
FROM unnest(%(ids)s::varchar[], %(statuses)s::varchar[], %(versions)s::varchar[])
    AS batch(device_id, status, agent_version)
WHERE device.device_id = batch.device_id AND device.status != 'decommissioned'
"""


def set_statuses(session: Session, *, changes: Sequence[StatusChange]) -> None:
    """Record devices going online or offline, the latest change of each device winning.

    Decommissioned devices stay so. The devices' last-seen times move as `mark_seen` does.
    """
    latest: dict[str, StatusChange] = {}
    for change in sorted(changes, key=lambda c: c.at):
        latest[change.device_id] = change
    if not latest:
        return
    ids = sorted(latest)  # one lock order for concurrent replicas, as in mark_seen
    if session.get_bind().dialect.name == "postgresql":
        # One statement: a thousand devices reconnecting at once are a thousand births.
        session.connection().exec_driver_sql(
            SET_STATUS_SQL,
            {
                "ids": ids,
                "statuses": [latest[i].status for i in ids],
                "versions": [latest[i].agent_version for i in ids],
            },
        )
    else:
        for device_id in ids:
            change = latest[device_id]
            values: dict[str, Any] = {"status": change.status}
            if change.agent_version:
                values["agent_version"] = change.agent_version
            session.execute(
                update(Device)
                .where(Device.device_id == device_id, Device.status != "decommissioned")  # type: ignore[arg-type]
                .values(**values)
            )
    mark_seen(session, last_seen={i: latest[i].at for i in ids})


def get_device(session: Session, *, device_id: str) -> Device | None:
    """One device by id."""
    return session.execute(select(Device).where(Device.device_id == device_id)).scalar_one_or_none()  # type: ignore[arg-type]


def list_devices(
    session: Session,
    *,
    tag: str | None = None,
    profile: str | None = None,
    status: str | None = None,
) -> list[Device]:
    """Devices, filtered by a tag, a profile and a status, in id order."""
    statement = select(Device).order_by(col(Device.device_id))
    if profile is not None:
        statement = statement.where(col(Device.profile) == profile)
    if status is not None:
        statement = statement.where(col(Device.status) == status)
    devices = list(session.execute(statement).scalars())
    # Tags are a short JSON list: filtering here keeps the query portable across databases.
    return [d for d in devices if tag is None or tag in d.tags]


def set_tags(session: Session, *, device_id: str, tags: list[str]) -> Device | None:
    """Replace a device's tags."""
    device = get_device(session, device_id=device_id)
    if device is not None:
        device.tags = sorted(set(tags))
        session.add(device)
        session.flush()
    return device


def decommission(session: Session, *, device_id: str) -> Device | None:
    """Mark a device decommissioned: its messages are rejected from now on."""
    device = get_device(session, device_id=device_id)
    if device is not None:
        device.status = "decommissioned"
        session.add(device)
        session.flush()
    return device


def count_devices_by_status(session: Session) -> dict[str, int]:
    """How many devices are in each status."""
    rows = session.execute(select(Device.status, func.count()).group_by(Device.status))  # type: ignore[call-overload]
    return {str(status): int(count) for status, count in rows}


def broker_users(session: Session) -> dict[str, str]:
    """Broker user -> password hash of every device still allowed to connect."""
    statement = select(Device.device_id, Device.broker_password_hash).where(  # type: ignore[call-overload]
        col(Device.status) != "decommissioned", col(Device.broker_password_hash).is_not(None)
    )
    return {str(device_id): str(digest) for device_id, digest in session.execute(statement)}


BROKER_ACCOUNTS_LOCK = 0x52534642  # "RSFB": one advisory-lock key for the whole fleet
"""Held while a server replica brings the broker's accounts to the committed fleet."""


def lock_broker_accounts(session: Session) -> None:
    """Serialise broker-account changes across server replicas until this transaction ends.

    PostgreSQL only; SQLite serves one process, whose own lock suffices.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(BROKER_ACCOUNTS_LOCK)))


def delete_device(session: Session, *, device_id: str) -> None:
    """Remove a device that never got going (its enrolment was undone)."""
    device = get_device(session, device_id=device_id)
    if device is not None:
        session.delete(device)
        session.flush()
