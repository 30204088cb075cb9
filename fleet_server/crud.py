"""Every query of the fleet server, as keyword-only functions on a session.

Inserts of device messages (readings, health, OTA status, config reports) ignore (device_id, seq)
pairs already stored and return only what was new, so redeliveries are neither counted nor
republished twice. On PostgreSQL new readings are also announced (NOTIFY) for the live feed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import psycopg
from psycopg.types.json import Json
from sqlalchemy import JSON, ColumnElement, RowMapping, Table, and_, func, select, tuple_, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import defer
from sqlmodel import Session, SQLModel, col

from fleet_server.announcements import READINGS_CHANNEL, announcement_payloads
from fleet_server.models import (
    ApiToken,
    ConfigReport,
    DashboardSession,
    Device,
    DeviceCreate,
    HealthSample,
    OtaStatusEvent,
    Reading,
)


def _table(name: str) -> Table:
    return SQLModel.metadata.tables[name]


def _insert_ignoring_duplicates(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int, int]]:
    """Insert `rows`, skipping (device_id, seq) already stored; the new (device_id, seq, id)."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        return _insert_staged(session, table, rows)
    statement = (
        sqlite.insert(table)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["device_id", "seq"])
        .returning(table.c.device_id, table.c.seq, table.c.id)
    )
    return [(row[0], int(row[1]), int(row[2])) for row in session.execute(statement)]


@lru_cache(maxsize=16)
def _staged_insert_sql(table: Table, names: tuple[str, ...]) -> tuple[str, str, str]:
    # Table and column names come from our own metadata, never from input.
    listed = ", ".join(names)
    staging = f"staged_{table.name}"
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {staging} ON COMMIT DELETE ROWS "  # noqa: S608
        f"AS SELECT {listed} FROM {table.name} WITH NO DATA",
        f"COPY {staging} ({listed}) FROM STDIN",
        f"INSERT INTO {table.name} ({listed}) SELECT {listed} FROM {staging} "  # noqa: S608
        "ON CONFLICT (device_id, seq) DO NOTHING RETURNING device_id, seq, id",
    )


def _insert_staged(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int, int]]:
    # COPY into a per-connection temporary table, then one INSERT ... SELECT that skips what is
    # stored. COPY costs the worker a third of the CPU of binding the rows as parameters (a
    # multi-row VALUES statement, compiled anew for every batch, was half the ingest time).
    names = tuple(rows[0])
    create, copy, insert = _staged_insert_sql(table, names)
    json_columns = [i for i, name in enumerate(names) if isinstance(table.c[name].type, JSON)]
    connection = session.connection().connection.driver_connection
    assert isinstance(connection, psycopg.Connection), "PostgreSQL is reached through psycopg"
    with connection.cursor() as cursor:
        cursor.execute(create)
        with cursor.copy(copy) as staged:
            for row in rows:
                values = [row[name] for name in names]
                for i in json_columns:
                    values[i] = Json(values[i])
                staged.write_row(values)
        cursor.execute(insert)
        return [(device_id, int(seq), int(row_id)) for device_id, seq, row_id in cursor.fetchall()]


def _new_pairs(inserted: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
    return [(device_id, seq) for device_id, seq, _ in inserted]


def insert_readings(
    session: Session, *, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Store readings; return the (device_id, seq) of those that were new.

    On PostgreSQL the new rows' ids are announced on `READINGS_CHANNEL`, delivered to listeners
    when (and only if) the transaction commits, in commit order.
    """
    inserted = _insert_ignoring_duplicates(session, _table("reading"), rows)
    if inserted and session.get_bind().dialect.name == "postgresql":
        for payload in announcement_payloads(sorted(row_id for _, _, row_id in inserted)):
            session.connection().exec_driver_sql(
                "SELECT pg_notify(%(channel)s, %(payload)s)",
                {"channel": READINGS_CHANNEL, "payload": payload},
            )
    return _new_pairs(inserted)


def insert_health(session: Session, *, rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """Store health samples; return the (device_id, seq) of those that were new."""
    return _new_pairs(_insert_ignoring_duplicates(session, _table("healthsample"), rows))


def insert_ota_statuses(
    session: Session, *, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Store OTA status reports; return the (device_id, seq) of those that were new."""
    return _new_pairs(_insert_ignoring_duplicates(session, _table("otastatusevent"), rows))


def insert_config_reports(
    session: Session, *, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, int]]:
    """Store config reports; return the (device_id, seq) of those that were new."""
    return _new_pairs(_insert_ignoring_duplicates(session, _table("configreport"), rows))


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


def count_readings(session: Session, *, device_ids: Iterable[str] | None = None) -> int:
    """Stored readings, of some devices or all."""
    statement = select(func.count()).select_from(Reading)
    if device_ids is not None:
        statement = statement.where(Reading.device_id.in_(list(device_ids)))  # type: ignore[attr-defined]
    return int(session.execute(statement).scalar_one())


def get_device(session: Session, *, device_id: str) -> Device | None:
    """One device by id."""
    return session.execute(select(Device).where(Device.device_id == device_id)).scalar_one_or_none()  # type: ignore[arg-type]


def create_token(
    session: Session,
    *,
    name: str,
    role: str,
    token_hash: str,
    kind: str = "issued",
    expires_at: datetime | None = None,
    created_by_id: int | None = None,
) -> ApiToken:
    """Store an API token's hash."""
    row = ApiToken(
        name=name,
        role=role,
        token_hash=token_hash,
        kind=kind,
        expires_at=expires_at,
        created_by_id=created_by_id,
    )
    session.add(row)
    session.flush()
    return row


def find_token(session: Session, *, token_hash: str) -> ApiToken | None:
    """The token with this hash, revoked or expired or not (`security.is_live` decides)."""
    statement = select(ApiToken).where(col(ApiToken.token_hash) == token_hash)
    return session.execute(statement).scalar_one_or_none()


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, oldest first."""
    return list(session.execute(select(ApiToken).order_by(col(ApiToken.id))).scalars())


def revoke_token(session: Session, *, token_id: int, now: datetime) -> ApiToken | None:
    """Revoke a token (a revoked one keeps its first revocation time); None if there is none."""
    token = session.get(ApiToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = now
        session.add(token)
        session.flush()
    return token


def revoke_tokens_of_kind(session: Session, *, kind: str, keep_id: int, now: datetime) -> list[int]:
    """Revoke every live token of `kind` but one; return the ids revoked."""
    statement = (
        update(ApiToken)
        .where(
            col(ApiToken.kind) == kind,
            col(ApiToken.id) != keep_id,
            col(ApiToken.revoked_at).is_(None),
        )
        .values(revoked_at=now)
        .returning(col(ApiToken.id))
    )
    return [int(token_id) for token_id in session.execute(statement).scalars()]


def create_dashboard_session(
    session: Session, *, session_hash: str, token_id: int, expires_at: datetime
) -> DashboardSession:
    """Store a dashboard login (the hash of its id)."""
    row = DashboardSession(session_hash=session_hash, token_id=token_id, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def find_dashboard_session(
    session: Session, *, session_hash: str
) -> tuple[DashboardSession, ApiToken] | None:
    """The dashboard session with this hash and its token, ended or not."""
    statement = (
        select(DashboardSession, ApiToken)
        .join(ApiToken, col(ApiToken.id) == col(DashboardSession.token_id))
        .where(col(DashboardSession.session_hash) == session_hash)
    )
    row = session.execute(statement).one_or_none()
    return None if row is None else (row[0], row[1])


def end_dashboard_session(session: Session, *, session_id: int, now: datetime) -> None:
    """Mark a dashboard session ended (logout): its cookie is refused from now on."""
    session.execute(
        update(DashboardSession)
        .where(col(DashboardSession.id) == session_id, col(DashboardSession.ended_at).is_(None))
        .values(ended_at=now)
    )


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


@dataclass(frozen=True)
class ReadingFilter:
    """What a readings query asks for."""

    device_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    sign_type: str | None = None
    value: float | None = None
    min_lat: float | None = None
    max_lat: float | None = None
    min_lon: float | None = None
    max_lon: float | None = None


def _reading_conditions(where: ReadingFilter) -> list[ColumnElement[bool]]:
    conditions = []
    if where.device_id is not None:
        conditions.append(col(Reading.device_id) == where.device_id)
    if where.since is not None:
        conditions.append(col(Reading.observed_at) >= where.since)
    if where.until is not None:
        conditions.append(col(Reading.observed_at) < where.until)
    if where.sign_type is not None:
        conditions.append(col(Reading.sign_type) == where.sign_type)
    if where.value is not None:
        conditions.append(col(Reading.value) == where.value)
    if where.min_lat is not None:
        conditions.append(col(Reading.lat) >= where.min_lat)
    if where.max_lat is not None:
        conditions.append(col(Reading.lat) <= where.max_lat)
    if where.min_lon is not None:
        conditions.append(col(Reading.lon) >= where.min_lon)
    if where.max_lon is not None:
        conditions.append(col(Reading.lon) <= where.max_lon)
    return conditions


NEWEST_FIRST = (col(Reading.observed_at).desc(), col(Reading.id).desc())


def query_readings(
    session: Session,
    *,
    where: ReadingFilter,
    limit: int,
    before: tuple[datetime, int] | None = None,
) -> list[Reading]:
    """Newest first; `before` (observed_at, id) continues after the last row of a page.

    The crop is not loaded (up to 32 KiB a row, and lists never show it): `reading_crop` and
    `readings_with_crops` read it.
    """
    conditions = _reading_conditions(where)
    if before is not None:
        observed, row_id = before
        conditions.append(
            tuple_(col(Reading.observed_at), col(Reading.id)) < tuple_(observed, row_id)
        )
    without_crop = defer(Reading.crop_jpeg, raiseload=True)  # type: ignore[arg-type]
    statement = select(Reading).options(without_crop).order_by(*NEWEST_FIRST)
    if conditions:
        statement = statement.where(and_(*conditions))
    return list(session.execute(statement.limit(limit)).scalars())


def stream_readings(
    session: Session, *, where: ReadingFilter, columns: Sequence[str], limit: int, chunk: int
) -> Iterator[RowMapping]:
    """Matching readings newest first, as rows of `columns`, `chunk` at a time from the database.

    A server-side cursor on PostgreSQL: an export of 100,000 rows holds `chunk` of them.
    """
    table = _table("reading")
    statement = select(*(table.c[name] for name in columns)).order_by(*NEWEST_FIRST)
    conditions = _reading_conditions(where)
    if conditions:
        statement = statement.where(and_(*conditions))
    result = session.execute(statement.limit(limit).execution_options(yield_per=chunk))
    yield from result.mappings()


def reading_crop(session: Session, *, reading_id: int) -> bytes | None:
    """The crop JPEG of a reading (None where it has none, or there is no such reading)."""
    statement = select(col(Reading.crop_jpeg)).where(col(Reading.id) == reading_id)
    return session.execute(statement).scalar_one_or_none()


def readings_with_crops(session: Session, *, ids: Iterable[int]) -> set[int]:
    """Which of the readings `ids` have a crop (without reading the crops)."""
    statement = select(col(Reading.id)).where(
        col(Reading.id).in_(list(ids)), col(Reading.crop_jpeg).is_not(None)
    )
    return {int(row_id) for row_id in session.execute(statement).scalars()}


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


def count_devices_by_status(session: Session) -> dict[str, int]:
    """How many devices are in each status."""
    rows = session.execute(select(Device.status, func.count()).group_by(Device.status))  # type: ignore[call-overload]
    return {str(status): int(count) for status, count in rows}


def latest_health(session: Session, *, device_id: str) -> HealthSample | None:
    """The newest health sample of a device."""
    statement = (
        select(HealthSample)
        .where(col(HealthSample.device_id) == device_id)
        .order_by(col(HealthSample.observed_at).desc())
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()


FEED_COLUMNS = ("id", "device_id", "sign_type", "value", "unit", "confidence", "observed_at")
"""What the live feed shows of a reading."""


def max_reading_id(session: Session) -> int:
    """The highest reading id stored (0 when none)."""
    return int(session.execute(select(func.coalesce(func.max(Reading.id), 0))).scalar_one())


def reading_ids_after(session: Session, *, after_id: int, limit: int) -> list[int]:
    """Ids of the readings stored after `after_id`, in id order."""
    statement = select(col(Reading.id)).where(col(Reading.id) > after_id).order_by(col(Reading.id))
    return [int(row_id) for row_id in session.execute(statement.limit(limit)).scalars()]


def feed_readings(session: Session, *, ids: Sequence[int]) -> list[RowMapping]:
    """`FEED_COLUMNS` of the readings `ids`, in id order."""
    table = _table("reading")
    statement = (
        select(*(table.c[name] for name in FEED_COLUMNS))
        .where(table.c.id.in_(list(ids)))
        .order_by(table.c.id)
    )
    return list(session.execute(statement).mappings())


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
