"""Health time series of a device."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server import crud
from fleet_server.api.deps import ReaderDep, SessionDep, existing_device
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
    existing_device(session, device_id)
    rows = crud.health_series(session, device_id=device_id, since=since, until=until, limit=limit)
    return [HealthPublic.model_validate(r, from_attributes=True) for r in rows]
