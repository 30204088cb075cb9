"""Model versions: what is published, with lineage and where it runs; signing assignments."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from fleet_server import crud
from fleet_server.api.deps import AdminDep, NudgeDep, ReaderDep, SessionDep, SettingsDep
from fleet_server.exceptions import RepositoryError, RepositoryNotInitialised
from fleet_server.models import (
    AssignmentRequest,
    AssignmentsSigned,
    ModelVersion,
    ModelVersionPublic,
)
from fleet_server.repository import service
from fleet_server.rollouts.driver import nudge_assigned

router = APIRouter(prefix="/api/v1/models", tags=["models"])


def public(model: ModelVersion, running_on: list[str]) -> ModelVersionPublic:
    """The API shape of a stored model version."""
    return ModelVersionPublic.model_validate({**model.model_dump(), "running_on": running_on})


@router.get("", response_model=list[ModelVersionPublic], summary="List model versions")
def list_models(session: SessionDep, _: ReaderDep) -> list[ModelVersionPublic]:
    """Published model versions, newest release first, each with its lineage and the devices
    whose latest health report names it."""
    models = crud.list_model_versions(session)
    running = crud.devices_running(session, versions=[m.version for m in models])
    return [public(model, running.get(model.version, [])) for model in models]


@router.post(
    "/{name}/{version}/assignments",
    response_model=AssignmentsSigned,
    summary="Assign a model version to devices",
    responses={
        404: {"description": "No such model version, or devices not enrolled"},
        503: {"description": "The repository is not initialised or holds no online key"},
    },
)
def assign(
    name: str,
    version: str,
    body: AssignmentRequest,
    session: SessionDep,
    settings: SettingsDep,
    publisher: NudgeDep,
    _: AdminDep,
) -> AssignmentsSigned:
    """Sign, in the director's bins, that each device must run this version.

    The devices find it on their next TUF refresh; each is also nudged (an OTA command on its
    ota/command topic) to look now.
    """
    model = crud.find_model_version(session, name=name, version=version)
    if model is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model version {name} {version}")
    known = crud.enrolled_device_ids(session, device_ids=body.device_ids)
    unknown = [device_id for device_id in body.device_ids if device_id not in known]
    if unknown:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"not enrolled: {', '.join(sorted(set(unknown))[:20])}"
        )
    try:
        signed = service.assign(
            session,
            settings,
            body.device_ids,
            model.target_path,
            body.rollback,
            body.rollout_id,
        )
        # Nudge only once the assignments are committed: a device that looks before would
        # find the old ones.
        session.commit()
    except RepositoryNotInitialised as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(e)) from e
    except RepositoryError as e:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"cannot sign: {e}") from e
    nudge_assigned(
        publisher,
        device_ids=signed.device_ids,
        model_version=model.version,
        target_path=model.target_path,
        rollback=body.rollback,
        rollout_id=body.rollout_id,
    )
    return signed
