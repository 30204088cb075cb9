"""What devices report: readings, health samples, OTA status and config reports (inserts and
per-device reads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from fleet_server.announcements import READINGS_CHANNEL, announcement_payloads
from fleet_server.crud._bulk import insert_ignoring_duplicates, new_pairs, table_of
from fleet_server.models import ConfigReport, HealthSample, OtaStatusEvent


def insert_readings(
    session: Session, *, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Store readings; return the (device_id, seq) of those that were new.

    On PostgreSQL the new rows' ids are announced on `READINGS_CHANNEL`, delivered to listeners
    when (and only if) the transaction commits, in commit order.
    """
    inserted = insert_ignoring_duplicates(session, table_of("reading"), rows)
    if inserted and session.get_bind().dialect.name == "postgresql":
        for payload in announcement_payloads(sorted(row_id for _, _, row_id in inserted)):
            session.connection().exec_driver_sql(
                "SELECT pg_notify(%(channel)s, %(payload)s)",
                {"channel": READINGS_CHANNEL, "payload": payload},
            )
    return new_pairs(inserted)


def insert_health(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """Store health samples; return the (device_id, seq) of those that were new."""
    return new_pairs(insert_ignoring_duplicates(session, table_of("healthsample"), rows))


def insert_ota_statuses(
    session: Session, *, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Store OTA status reports; return the (device_id, seq) of those that were new."""
    return new_pairs(insert_ignoring_duplicates(session, table_of("otastatusevent"), rows))


def insert_config_reports(
    session: Session, *, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Store config reports; return the (device_id, seq) of those that were new."""
    return new_pairs(insert_ignoring_duplicates(session, table_of("configreport"), rows))


def ota_status_history(session: Session, *, device_id: str, limit: int) -> list[OtaStatusEvent]:
    """A device's OTA status reports, newest (highest seq) first."""
    statement = (
        select(OtaStatusEvent)
        .where(col(OtaStatusEvent.device_id) == device_id)
        .order_by(col(OtaStatusEvent.seq).desc())
        .limit(limit)
    )
    return list(session.execute(statement).scalars())


def latest_config_report(session: Session, *, device_id: str) -> ConfigReport | None:
    """A device's newest config report (its reported config), if it sent one."""
    statement = (
        select(ConfigReport)
        .where(col(ConfigReport.device_id) == device_id)
        .order_by(col(ConfigReport.seq).desc())
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()


def health_series(
    session: Session, *, device_id: str, since: datetime | None, until: datetime | None, limit: int
) -> list[HealthSample]:
    """A device's health samples, oldest first."""
    statement = select(HealthSample).where(col(HealthSample.device_id) == device_id)
    if since is not None:
        statement = statement.where(col(HealthSample.observed_at) >= since)
    if until is not None:
        statement = statement.where(col(HealthSample.observed_at) < until)
    return list(
        session.execute(statement.order_by(col(HealthSample.observed_at)).limit(limit)).scalars()
    )


def recent_health(session: Session, *, device_id: str, limit: int) -> list[HealthSample]:
    """A device's newest `limit` health samples, oldest first (what its charts draw)."""
    statement = (
        select(HealthSample)
        .where(col(HealthSample.device_id) == device_id)
        .order_by(col(HealthSample.observed_at).desc(), col(HealthSample.seq).desc())
        .limit(limit)
    )
    return list(reversed(session.execute(statement).scalars().all()))


def latest_health(session: Session, *, device_id: str) -> HealthSample | None:
    """The newest health sample of a device."""
    statement = (
        select(HealthSample)
        .where(col(HealthSample.device_id) == device_id)
        .order_by(col(HealthSample.observed_at).desc())
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()
