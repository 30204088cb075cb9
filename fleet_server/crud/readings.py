"""Reading queries: filters, pages, the streamed export, crops and the live feed's reads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, RowMapping, and_, func, select, tuple_
from sqlalchemy.orm import defer
from sqlmodel import Session, col

from fleet_server.crud._bulk import table_of
from fleet_server.models import Reading


def count_readings(session: Session, *, device_ids: Iterable[str] | None = None) -> int:
    """Stored readings, of some devices or all."""
    statement = select(func.count()).select_from(Reading)
    if device_ids is not None:
        statement = statement.where(Reading.device_id.in_(list(device_ids)))  # type: ignore[attr-defined]
    return int(session.execute(statement).scalar_one())


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
    table = table_of("reading")
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
    table = table_of("reading")
    statement = (
        select(*(table.c[name] for name in FEED_COLUMNS))
        .where(table.c.id.in_(list(ids)))
        .order_by(table.c.id)
    )
    return list(session.execute(statement).mappings())
