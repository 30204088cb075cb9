"""A device's configuration as it reported it: what it did with the newest desired config."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from fleet_server import crud
from fleet_server.api.deps import ReaderDep, SessionDep, existing_device
from fleet_server.models import ConfigReportPublic

router = APIRouter(prefix="/api/v1/devices", tags=["config"])


@router.get(
    "/{device_id}/config/reported",
    response_model=ConfigReportPublic,
    summary="Reported config",
    responses={404: {"description": "No such device, or it reported no config yet"}},
)
def reported_config(device_id: str, session: SessionDep, _: ReaderDep) -> ConfigReportPublic:
    """The device's newest config report: the version it handled, applied or not, and why."""
    existing_device(session, device_id)
    report = crud.latest_config_report(session, device_id=device_id)
    if report is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{device_id!r} reported no config yet")
    return ConfigReportPublic.model_validate(report, from_attributes=True)
