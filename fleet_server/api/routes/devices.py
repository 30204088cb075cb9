"""Devices: list and filter, one device, enrol, tags, decommission."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, HTTPException, Request, status
from sqlalchemy.exc import IntegrityError

from fleet_server import crud
from fleet_server.api.deps import (
    AdminDep,
    ReaderDep,
    SessionDep,
    existing_device,
    found_device,
)
from fleet_server.credentials import mosquitto_hash, new_password
from fleet_server.exceptions import BrokerAuthError
from fleet_server.models import Device, DeviceBundle, DeviceCreate, DevicePublic, DeviceTagsUpdate
from fleet_server.services.broker_auth import BrokerSync
from fleet_server.settings import ServerSettings

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])
log = logging.getLogger(__name__)


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
    return existing_device(session, device_id)


def _broker(request: Request) -> BrokerSync | None:
    broker: BrokerSync | None = request.app.state.broker_sync
    return broker


def _take_back(broker: BrokerSync, device_id: str) -> None:
    """Best effort: remove what an undone enrolment may have left at the broker.

    A request whose answer was lost may have been applied (they are QoS 0); what stays is
    replaced by the device's next enrolment, which sets its password.
    """
    try:
        broker.reconcile(devices=[device_id])
    except BrokerAuthError as e:
        log.warning("the broker may still hold %s from an undone enrolment: %s", device_id, e)


@router.post(
    "",
    response_model=DeviceBundle,
    status_code=status.HTTP_201_CREATED,
    summary="Enrol a device",
    responses={409: {"description": "Already enrolled"}},
)
def enrol(body: DeviceCreate, request: Request, session: SessionDep, _: AdminDep) -> DeviceBundle:
    """Add a device; returns its credentials (shown once) and what it must trust.

    Where the server manages the broker's accounts, the device gets its own password and the
    broker lets it publish and subscribe under its own topics only, from this moment.
    """
    settings: ServerSettings = request.app.state.settings
    broker = _broker(request)
    if broker is not None and body.device_id in broker.reserved:
        raise HTTPException(status.HTTP_409_CONFLICT, f"{body.device_id} is a reserved broker user")
    password = new_password() if broker is not None else None
    digest = mosquitto_hash(password) if password is not None else None  # slow: before the lock
    try:
        device = crud.create_device(session, device=body)
        device.broker_password_hash = digest
        session.add(device)
        session.commit()  # the broker is told committed state only, never a transaction's
    except IntegrityError as e:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, f"{body.device_id} is enrolled") from e
    if broker is not None and password is not None:
        try:
            broker.reconcile(devices=[device.device_id], passwords={device.device_id: password})
        except BrokerAuthError as e:
            # Undone, so that nobody holds a device whose password was never shown.
            crud.delete_device(session, device_id=device.device_id)
            session.commit()
            _take_back(broker, device.device_id)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"enrolment undone: {e}"
            ) from e
    enrolment = settings.enrolment
    ca = enrolment.ca_file.read_text() if enrolment.ca_file else None
    # The repository's current root: what the device bootstraps its TUF client with.
    root_row = crud.latest_role_metadata(session, role="root")
    root = json.loads(root_row.content) if root_row is not None else None
    return DeviceBundle(
        device=DevicePublic.model_validate(device, from_attributes=True),
        username=device.device_id,
        password=password,
        broker_url=enrolment.broker_public_url,
        ca_certificate=ca,
        tuf_root=root,
    )


@router.put(
    "/{device_id}/tags",
    response_model=DevicePublic,
    summary="Replace tags",
    responses={404: {"description": "No such device"}},
)
def set_tags(device_id: str, body: DeviceTagsUpdate, session: SessionDep, _: AdminDep) -> Device:
    """Replace the device's tags."""
    return found_device(crud.set_tags(session, device_id=device_id, tags=body.tags), device_id)


@router.post(
    "/{device_id}/decommission",
    response_model=DevicePublic,
    summary="Decommission",
    responses={404: {"description": "No such device"}},
)
def decommission(device_id: str, request: Request, session: SessionDep, _: AdminDep) -> Device:
    """Retire a device: the broker refuses its credentials and its messages are rejected."""
    device = found_device(crud.decommission(session, device_id=device_id), device_id)
    session.commit()
    broker = _broker(request)
    if broker is not None:
        try:
            broker.reconcile(devices=[device_id])
        except BrokerAuthError as e:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"{device_id} is decommissioned, but the broker may still accept it ({e}); "
                "repeat the request",
            ) from e
    return device
