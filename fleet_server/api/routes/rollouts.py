"""Staged rollouts: create, list, inspect, read the audit log, and pause, resume, abort or
roll back. Commands step the rollout under its row lock (as the driver does), and their
actions are carried out at once, after the command's commit."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from fleet_server import crud
from fleet_server.api.deps import (
    AdminDep,
    EngineDep,
    NudgeDep,
    ReaderDep,
    SessionDep,
    SettingsDep,
)
from fleet_server.db import session_scope
from fleet_server.exceptions import (
    RolloutCommandRefused,
    RolloutConflict,
    RolloutNotFound,
    RolloutRequestInvalid,
    RolloutStateInvalid,
)
from fleet_server.models import (
    RolloutCreate,
    RolloutDetail,
    RolloutEventPublic,
    RolloutPublic,
    utcnow,
)
from fleet_server.rollouts import requests
from fleet_server.rollouts.driver import carry_out
from fleet_server.rollouts.values import RolloutCommand

router = APIRouter(prefix="/api/v1/rollouts", tags=["rollouts"])

OPERATOR_COMMANDS = {
    RolloutCommand.START,
    RolloutCommand.PAUSE,
    RolloutCommand.RESUME,
    RolloutCommand.ABORT,
    RolloutCommand.ROLLBACK,
}


def _http_error(e: Exception) -> HTTPException:
    if isinstance(e, RolloutNotFound):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(e))
    if isinstance(e, RolloutCommandRefused | RolloutConflict):
        return HTTPException(status.HTTP_409_CONFLICT, str(e))
    if isinstance(e, RolloutRequestInvalid):
        return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e))
    return HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"stored rollout unusable: {e}")


@router.post(
    "",
    response_model=RolloutDetail,
    status_code=status.HTTP_201_CREATED,
    summary="Create (and start) a staged rollout",
    responses={
        409: {"description": "The id is taken, or another open rollout covers these devices"},
        422: {"description": "Unknown model version, or the selector moves no device"},
    },
)
def create(
    body: RolloutCreate,
    engine: EngineDep,
    settings: SettingsDep,
    publisher: NudgeDep,
    _: AdminDep,
) -> RolloutDetail:
    """Resolve the selector into devices (each with the model it runs now, to roll back to),
    store the rollout and, with ``start``, assign its first stage."""
    now = utcnow()
    try:
        with session_scope(engine) as session:
            row = requests.create_rollout(session, body, now)
            rollout_id = row.id
    except (RolloutRequestInvalid, RolloutConflict) as e:
        raise _http_error(e) from e
    carry_out(engine, settings, publisher, now, [rollout_id])
    with session_scope(engine) as session:
        return requests.detail(requests.existing(session, rollout_id))


@router.get("", response_model=list[RolloutPublic], summary="List rollouts")
def list_rollouts(session: SessionDep, _: ReaderDep) -> list[RolloutPublic]:
    """Every rollout, newest first."""
    return [requests.public(row) for row in crud.list_rollouts(session)]


@router.get(
    "/{rollout_id}",
    response_model=RolloutDetail,
    summary="A rollout: status, stage, verdicts, progress, every device",
    responses={404: {"description": "No such rollout"}},
)
def show(rollout_id: str, session: SessionDep, _: ReaderDep) -> RolloutDetail:
    """Status, stage, pause reason, the latest gate verdicts, progress counts and each device's
    desired against reported state."""
    try:
        return requests.detail(requests.existing(session, rollout_id))
    except (RolloutNotFound, RolloutStateInvalid) as e:
        raise _http_error(e) from e


@router.get(
    "/{rollout_id}/events",
    response_model=list[RolloutEventPublic],
    summary="A rollout's audit log",
    responses={404: {"description": "No such rollout"}},
)
def events(
    rollout_id: str,
    session: SessionDep,
    _: ReaderDep,
    after_id: Annotated[int, Query(ge=0, description="Only events after this id.")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[RolloutEventPublic]:
    """The events in order (page on with ``after_id``)."""
    try:
        requests.existing(session, rollout_id)
    except RolloutNotFound as e:
        raise _http_error(e) from e
    rows = crud.rollout_events(session, rollout_id=rollout_id, after_id=after_id, limit=limit)
    return [RolloutEventPublic.model_validate(row, from_attributes=True) for row in rows]


@router.post(
    "/{rollout_id}/{command}",
    response_model=RolloutDetail,
    summary="Start, pause, resume, abort or roll back a rollout",
    responses={
        404: {"description": "No such rollout or command"},
        409: {"description": "The rollout's status does not allow the command"},
    },
)
def command(
    rollout_id: str,
    command: RolloutCommand,
    engine: EngineDep,
    settings: SettingsDep,
    publisher: NudgeDep,
    _: AdminDep,
) -> RolloutDetail:
    """start: a draft begins its first stage; pause: stop advancing; resume: go on (a
    rolled-back stage is assigned afresh); abort: stop for good, devices keep what they were
    assigned; rollback: every device the rollout moved returns to what it ran before."""
    if command not in OPERATOR_COMMANDS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no command {command}")
    try:
        return requests.run_command(engine, settings, publisher, rollout_id, command, utcnow())
    except (RolloutNotFound, RolloutCommandRefused, RolloutStateInvalid) as e:
        raise _http_error(e) from e
