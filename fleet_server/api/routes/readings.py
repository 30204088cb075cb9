"""Readings: filtered, newest first, with cursor pagination; CSV and NDJSON export; a reading's
crop; the live feed (server-sent events).

Lists and exports never read the crops (up to 32 KiB each); an export streams from a server-side
cursor, so 100,000 rows cost the memory of one chunk.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine, RowMapping
from starlette.types import Receive, Scope, Send

from fleet_server import crud
from fleet_server.api.deps import Caller, ReaderDep, SessionDep, still_authorised
from fleet_server.db import session_scope
from fleet_server.exceptions import LiveFeedError, LiveFeedFullError, StorageError
from fleet_server.live_feed import LiveFeed, Subscription
from fleet_server.models import ReadingPublic

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/readings", tags=["readings"])
EXPORT_LIMIT = 100_000
EXPORT_CHUNK = 500
"""Rows fetched from the database at a time while exporting."""
SEND_CHARS = 64 * 1024
"""About how much of an export's body is sent at a time."""
FIELDS = list(ReadingPublic.model_fields)
MAX_ID = 2**63 - 1  # ids are 64-bit; larger ones cannot exist
FEED_IDLE_S = 1.0
"""Longest wait for new readings before the live feed checks that its client is still there."""
FEED_PAGE = 500


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


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _export_records(engine: Engine, where: crud.ReadingFilter) -> Iterator[dict[str, object]]:
    # A session of its own, opened when the body is first read and closed when it ends: the
    # server-side cursor lives as long as the stream, not as long as the handler.
    with session_scope(engine) as session:
        for row in crud.stream_readings(
            session, where=where, columns=FIELDS, limit=EXPORT_LIMIT, chunk=EXPORT_CHUNK
        ):
            yield ReadingPublic.model_validate(dict(row)).model_dump(mode="json")


@router.get(
    "/export",
    summary="Export readings as CSV or NDJSON",
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
)
def export(
    request: Request,
    _: ReaderDep,
    format: Literal["csv", "ndjson"] = "csv",
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    sign_type: str | None = None,
    value: float | None = None,
    bbox: str | None = None,
) -> StreamingResponse:
    """Every matching reading (up to 100,000), newest first, without the crops."""
    where = _filter(device_id, since, until, sign_type, value, bbox)
    records = _export_records(request.app.state.engine, where)

    # The body goes out in pieces of about SEND_CHARS: one per row cost a thread hop and a
    # write per row, most of an export's time.
    def ndjson() -> Iterator[str]:
        buffer = io.StringIO()
        for record in records:
            buffer.write(json.dumps(record) + "\n")
            if buffer.tell() >= SEND_CHARS:
                yield _drain(buffer)
        yield _drain(buffer)

    def as_csv() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS)
        writer.writeheader()
        for record in records:
            writer.writerow(record)
            if buffer.tell() >= SEND_CHARS:
                yield _drain(buffer)
        yield _drain(buffer)

    if format == "ndjson":
        return StreamingResponse(ndjson(), media_type="application/x-ndjson")
    return StreamingResponse(
        as_csv(),
        media_type="text/csv",
        headers={"Content-Disposition": "attachment; filename=readings.csv"},
    )


def _feed_rows(engine: Engine, ids: list[int]) -> list[RowMapping]:
    with session_scope(engine) as session:
        return crud.feed_readings(session, ids=ids)


def _event(row: RowMapping) -> str:
    # The id field is the reading's id: a client can tell a reading it already has. It is no
    # resume point: ids do not follow commit order, so a Last-Event-ID is not honoured.
    payload = {**row, "observed_at": row["observed_at"].isoformat()}
    return f"id: {row['id']}\ndata: {json.dumps(payload)}\n\n"


def _still_authorised(engine: Engine, caller: Caller) -> bool:
    with session_scope(engine) as session:
        return still_authorised(session, caller)


class _FeedResponse(StreamingResponse):
    """A stream that gives its subscription back however it ends, even before its first byte
    (a client that leaves at once cancels the response before the body's generator starts, and
    a generator that never started never runs its ``finally``)."""

    def __init__(self, content: AsyncIterator[str], subscription: Subscription) -> None:
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
        self._subscription = subscription

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._subscription.close()


@router.get(
    "/stream",
    summary="Live readings (server-sent events)",
    responses={
        200: {"content": {"text/event-stream": {}}},
        503: {"description": "As many live streams are open as the server serves"},
    },
)
async def stream(request: Request, caller: ReaderDep) -> StreamingResponse:
    """Each reading as one event once its transaction commits: all of them, once each.

    An event's ``id`` is the reading's id and its ``data`` the reading. The ``: connected``
    comment comes when the feed follows the database: every reading committed after it is sent
    once, even one whose transaction commits after one with higher ids (see
    `fleet_server.live_feed`). A reconnecting client starts
    afresh: what committed between the old stream's end and the new ``: connected`` is not sent
    (``Last-Event-ID`` is ignored; list ``/api/v1/readings`` for it). The feed ends when its
    token or dashboard session no longer holds (checked at least every `FEED_IDLE_S`; the
    client's reconnect then gets 401), when the client falls too far behind, or when the server
    loses the database. At most ``http.max_live_streams`` are open at once: beyond, 503.
    """
    engine: Engine = request.app.state.engine
    feed: LiveFeed = request.app.state.live_feed
    try:
        subscription = await feed.subscribe()
    except LiveFeedFullError as e:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, str(e), headers={"Retry-After": "30"}
        ) from e
    except (StorageError, LiveFeedError) as e:
        # The stream ends at once, without ": connected"; an EventSource tries again by itself
        # (it gives up on an error status).
        log.warning("live feed unavailable: %s", e)
        return StreamingResponse(iter(()), media_type="text/event-stream")

    async def events() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while not await request.is_disconnected():
                if not await run_in_threadpool(_still_authorised, engine, caller):
                    return
                ids = await subscription.next_ids(timeout=FEED_IDLE_S)
                for start in range(0, len(ids), FEED_PAGE):
                    page = ids[start : start + FEED_PAGE]
                    for row in await run_in_threadpool(_feed_rows, engine, page):
                        yield _event(row)
        except (StorageError, LiveFeedError) as e:
            # The stream ends; the browser's EventSource connects again by itself.
            log.warning("live feed stream ended: %s", e)
        finally:
            subscription.close()

    return _FeedResponse(events(), subscription)


@router.get(
    "/{reading_id}/crop",
    summary="The crop of a reading",
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "No crop"}},
)
def crop(
    reading_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep, _: ReaderDep
) -> Response:
    """The small JPEG the device attached to the reading."""
    jpeg = crud.reading_crop(session, reading_id=reading_id)
    if jpeg is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no crop for that reading")
    return Response(jpeg, media_type="image/jpeg")
