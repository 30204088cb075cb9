"""Health time series of a device."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from fleet_server import crud
from fleet_server.api.deps import ReaderDep, SessionDep
from fleet_server.models import HealthPublic

router = APIRouter(prefix="/api/v1/devices", tags=["health"])


@router.get(
    "/{device_id}/health",
    response_model=list[HealthPublic],
    summary="Health series",
    responses={404: {"description": "No such device"}},
)
def health_series(
    device_id: str,
    session: SessionDep,
    _: ReaderDep,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[HealthPublic]:
    """The device's health reports in time order."""
    if crud.get_device(session, device_id=device_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    rows = crud.health_series(session, device_id=device_id, since=since, until=until, limit=limit)
    return [HealthPublic.model_validate(r, from_attributes=True) for r in rows]
