"""Devices: list and filter, one device, enrol, tags, decommission."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy.exc import IntegrityError

from fleet_server import crud
from fleet_server.api.deps import AdminDep, ReaderDep, SessionDep
from fleet_server.models import Device, DeviceCreate, DevicePublic, DeviceTagsUpdate

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])


def _found(device: Device | None, device_id: str) -> Device:
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    return device


@router.get("", response_model=list[DevicePublic], summary="List devices")
def list_devices(
    session: SessionDep,
    _: ReaderDep,
    tag: str | None = None,
    profile: str | None = None,
    status: str | None = None,
) -> list[Device]:
    """Devices, optionally only those with a tag, a profile or a status."""
    return crud.list_devices(session, tag=tag, profile=profile, status=status)


@router.get(
    "/{device_id}",
    response_model=DevicePublic,
    summary="One device",
    responses={404: {"description": "No such device"}},
)
def get_device(device_id: str, session: SessionDep, _: ReaderDep) -> Device:
    """A device and its last known state."""
    return _found(crud.get_device(session, device_id=device_id), device_id)


@router.post(
    "",
    response_model=DevicePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Enrol a device",
    responses={409: {"description": "Already enrolled"}},
)
def enrol(body: DeviceCreate, session: SessionDep, _: AdminDep) -> Device:
    """Add a device to the fleet; its messages are accepted from now on."""
    try:
        device = crud.create_device(session, device=body)
    except IntegrityError as e:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"{body.device_id} is enrolled") from e
    return device


@router.put(
    "/{device_id}/tags",
    response_model=DevicePublic,
    summary="Replace tags",
    responses={404: {"description": "No such device"}},
)
def set_tags(device_id: str, body: DeviceTagsUpdate, session: SessionDep, _: AdminDep) -> Device:
    """Replace the device's tags."""
    return _found(crud.set_tags(session, device_id=device_id, tags=body.tags), device_id)


@router.post(
    "/{device_id}/decommission",
    response_model=DevicePublic,
    summary="Decommission",
    responses={404: {"description": "No such device"}},
)
def decommission(device_id: str, session: SessionDep, _: AdminDep) -> Device:
    """Retire a device: its messages are rejected from now on."""
    return _found(crud.decommission(session, device_id=device_id), device_id)
