"""Readings: filtered, newest first, with cursor pagination; CSV and NDJSON export."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from fleet_server import crud
from fleet_server.api.deps import ReaderDep, SessionDep
from fleet_server.models import ReadingPublic

router = APIRouter(prefix="/api/v1/readings", tags=["readings"])
EXPORT_LIMIT = 100_000
FIELDS = list(ReadingPublic.model_fields)


class ReadingPage(BaseModel):
    """One page of readings and the cursor of the next."""

    items: list[ReadingPublic]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null at the end."
    )


def _cursor(value: str | None) -> tuple[datetime, int] | None:
    if value is None:
        return None
    try:
        observed, row_id = base64.urlsafe_b64decode(value.encode()).decode().split("|")
        return datetime.fromisoformat(observed), int(row_id)
    except (ValueError, UnicodeDecodeError) as e:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "cursor is not one this API gave") from e


def _encode_cursor(observed: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{observed.isoformat()}|{row_id}".encode()).decode()


def _filter(
    device_id: str | None,
    since: datetime | None,
    until: datetime | None,
    sign_type: str | None,
    value: float | None,
    bbox: str | None,
) -> crud.ReadingFilter:
    area: list[float | None] = [None, None, None, None]
    if bbox is not None:
        try:
            area = [float(v) for v in bbox.split(",")]
        except ValueError:
            area = []
        if len(area) != 4:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "bbox is min_lon,min_lat,max_lon,max_lat"
            )
    min_lon, min_lat, max_lon, max_lat = area
    return crud.ReadingFilter(
        device_id=device_id,
        since=since,
        until=until,
        sign_type=sign_type,
        value=value,
        min_lat=min_lat,
        max_lat=max_lat,
        min_lon=min_lon,
        max_lon=max_lon,
    )


@router.get("", response_model=ReadingPage, summary="Query readings")
def list_readings(
    session: SessionDep,
    _: ReaderDep,
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sign_type: str | None = None,
    value: float | None = None,
    bbox: Annotated[
        str | None,
        Query(description="min_lon,min_lat,max_lon,max_lat", examples=["11.4,48.0,11.7,48.3"]),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> ReadingPage:
    """Readings newest first, filtered by device, time, sign type, value and map area."""
    rows = crud.query_readings(
        session,
        where=_filter(device_id, since, until, sign_type, value, bbox),
        limit=limit + 1,
        before=_cursor(cursor),
    )
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if page else None
    return ReadingPage(
        items=[ReadingPublic.model_validate(r, from_attributes=True) for r in page],
        next_cursor=_encode_cursor(last.observed_at, int(last.id or 0)) if more and last else None,
    )


@router.get(
    "/export",
    summary="Export readings as CSV or NDJSON",
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export(
    session: SessionDep,
    _: ReaderDep,
    format: Literal["csv", "ndjson"] = "csv",
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sign_type: str | None = None,
    value: float | None = None,
    bbox: str | None = None,
) -> StreamingResponse:
    """Every matching reading (up to 100,000), newest first."""
    rows = crud.query_readings(
        session, where=_filter(device_id, since, until, sign_type, value, bbox), limit=EXPORT_LIMIT
    )
    records = [
        ReadingPublic.model_validate(r, from_attributes=True).model_dump(mode="json") for r in rows
    ]

    def ndjson() -> Iterator[str]:
        for record in records:
            yield json.dumps(record) + "\n"

    def as_csv() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS)
        writer.writeheader()
        for record in records:
            writer.writerow(record)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    if format == "ndjson":
        return StreamingResponse(ndjson(), media_type="application/x-ndjson")
    return StreamingResponse(
        as_csv(),
        media_type="text/csv",
        headers={"Content-Disposition": "attachment; filename=readings.csv"},
    )
