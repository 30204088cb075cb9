"""OTA status of a device: the progress and outcome reports of its OTA commands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_server import crud
from fleet_server.api.deps import ReaderDep, SessionDep, existing_device
from fleet_server.models import OtaStatusEventPublic

router = APIRouter(prefix="/api/v1/devices", tags=["ota"])


@router.get(
    "/{device_id}/ota-status",
    response_model=list[OtaStatusEventPublic],
    summary="OTA status history",
    responses={404: {"description": "No such device"}},
)
def ota_status(
    device_id: str,
    session: SessionDep,
    _: ReaderDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OtaStatusEventPublic]:
    """The device's OTA status reports, newest first."""
    existing_device(session, device_id)
    rows = crud.ota_status_history(session, device_id=device_id, limit=limit)
    return [OtaStatusEventPublic.model_validate(r, from_attributes=True) for r in rows]
