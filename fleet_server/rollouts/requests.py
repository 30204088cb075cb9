"""Rollout requests: a model and a device selector resolved into a stored rollout, an
operator's command carried out, and the API's views of stored rollouts. Used by the API
routes, the dashboard and the CLI alike.

Each device's previous model (what a rollback returns it to) is what it runs now: the model
version of its latest health report, matched to the published model versions; a device on a
version the repository never published runs the shipped bundle, release 0.
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.exceptions import RolloutConflict, RolloutNotFound, RolloutRequestInvalid
from fleet_server.models import (
    Device,
    ModelVersion,
    Rollout,
    RolloutCreate,
    RolloutDetail,
    RolloutDevicePublic,
    RolloutPublic,
)
from fleet_server.rollouts import engine as rollout_engine
from fleet_server.rollouts.driver import carry_out, load, step_rollout, store_step
from fleet_server.rollouts.nudge import NudgePublisher
from fleet_server.rollouts.values import (
    Desired,
    ModelTarget,
    Observations,
    RolloutCommand,
    RolloutDevice,
    RolloutSpec,
    RolloutStatus,
)
from fleet_server.settings import ServerSettings

SHIPPED_VERSION = "release-0"
SHIPPED_TARGET = "shipped/release-0"
"""How a rollout names the bundle a device was shipped with: no target of the repository."""

OPEN_STATUSES = (RolloutStatus.DRAFT.value, RolloutStatus.RUNNING.value, RolloutStatus.PAUSED.value)
"""Rollouts that may still move devices: a new one must not share devices with them."""

_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def target_of(model: ModelVersion) -> ModelTarget:
    """A published model version as the engine names it."""
    return ModelTarget(target_path=model.target_path, version=model.version, release=model.release)


def running_target(device: Device, published: dict[str, ModelVersion]) -> ModelTarget:
    """What `device` runs now (see the module docstring)."""
    version = device.model_version
    model = published.get(version or "")
    if model is not None:
        return target_of(model)
    shipped = version if version and _VERSION_RE.fullmatch(version) else SHIPPED_VERSION
    return ModelTarget(target_path=SHIPPED_TARGET, version=shipped, release=0)


def select_devices(session: Session, body: RolloutCreate) -> list[Device]:
    """The enrolled devices the selector picks (every filter given applies), in id order."""
    selector = body.selector
    if not (selector.all or selector.tags or selector.profile or selector.device_ids):
        raise RolloutRequestInvalid(
            "the selector picks nothing: give all, tags, a profile or device ids"
        )
    devices = [d for d in crud.list_devices(session) if d.status != "decommissioned"]
    if selector.device_ids:
        known = {d.device_id for d in devices}
        unknown = sorted(set(selector.device_ids) - known)
        if unknown:
            raise RolloutRequestInvalid(f"not enrolled: {', '.join(unknown[:20])}")
        wanted = set(selector.device_ids)
        devices = [d for d in devices if d.device_id in wanted]
    if selector.tags:
        devices = [d for d in devices if set(d.tags) & set(selector.tags)]
    if selector.profile is not None:
        devices = [d for d in devices if d.profile == selector.profile]
    return devices


def _published(session: Session, name: str) -> dict[str, ModelVersion]:
    """Published versions by version string; of two bundles with one version, the one named
    like the rollout's model, then the newer release, wins."""
    versions: dict[str, ModelVersion] = {}
    for model in sorted(
        crud.list_model_versions(session), key=lambda m: (m.name == name, m.release)
    ):
        versions[model.version] = model
    return versions


def _default_id(version: str, now: datetime) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", version)
    return f"r-{cleaned}-{now:%Y%m%d%H%M%S}"[:64]


def create_rollout(session: Session, body: RolloutCreate, now: datetime) -> Rollout:
    """Resolve and store a rollout (started when `body.start`); raises RolloutRequestInvalid
    (unknown model, nothing to move), RolloutConflict (id taken, devices in another open
    rollout)."""
    model = crud.find_model_version(session, name=body.model_name, version=body.model_version)
    if model is None:
        raise RolloutRequestInvalid(
            f"no published model version {body.model_name} {body.model_version}"
        )
    target = target_of(model)
    selected = select_devices(session, body)
    if not selected:
        raise RolloutRequestInvalid("the selector matches no enrolled device")
    published = _published(session, body.model_name)
    devices = []
    for device in selected:
        previous = running_target(device, published)
        # Already on it (or on something newer, which a rollout never downgrades): left out.
        if previous.version != target.version and previous.release < target.release:
            devices.append(RolloutDevice(device_id=device.device_id, previous=previous))
    if not devices:
        raise RolloutRequestInvalid(
            f"all {len(selected)} selected devices already run {model.version} or a newer release"
        )
    rollout_id = body.rollout_id or _default_id(model.version, now)
    crud.lock_rollout_creation(session)
    if crud.get_rollout(session, rollout_id=rollout_id) is not None:
        raise RolloutConflict(f"rollout {rollout_id!r} exists")
    ids = {d.device_id for d in devices}
    for other in crud.list_rollouts(session, statuses=OPEN_STATUSES):
        shared = sorted(ids & {r.device_id for r in load(other).devices})
        if shared:
            raise RolloutConflict(
                f"rollout {other.id!r} ({other.status}) already covers {len(shared)} of these "
                f"devices: {', '.join(shared[:10])}"
            )
    try:
        spec = RolloutSpec(
            rollout_id=rollout_id,
            model=target,
            devices=tuple(devices),
            stages=tuple(body.stages),
            policy=body.policy,
            spread_by_hash=body.spread_by_hash,
        )
    except ValidationError as e:
        raise RolloutRequestInvalid(f"the rollout cannot be built: {e}") from e
    state = rollout_engine.new_rollout(spec)
    row = crud.add_rollout(
        session,
        rollout=Rollout(
            id=rollout_id,
            model_name=model.name,
            model_version=model.version,
            target_path=model.target_path,
            status=state.status.value,
            stage=state.stage,
            state=rollout_engine.dump_state(state),
            created_at=now,
            updated_at=now,
        ),
    )
    if body.start:
        result = rollout_engine.step(state, Observations(), now, RolloutCommand.START)
        store_step(session, row, result, now)
    return row


def run_command(
    engine: Engine,
    settings: ServerSettings,
    publisher: NudgePublisher | None,
    rollout_id: str,
    command: RolloutCommand,
    now: datetime,
) -> RolloutDetail:
    """Step the rollout with an operator's `command` under its row lock, then carry out what
    the step stored (after its commit, as the driver does); the rollout as it is then.

    Raises RolloutNotFound, RolloutCommandRefused (its status does not allow the command) and
    RolloutStateInvalid.
    """
    with session_scope(engine) as session:
        step_rollout(session, settings, rollout_id, now, command)
    carry_out(engine, settings, publisher, now, [rollout_id])
    with session_scope(engine) as session:
        return detail(existing(session, rollout_id))


def existing(session: Session, rollout_id: str, *, for_update: bool = False) -> Rollout:
    """The rollout, or RolloutNotFound."""
    row = crud.get_rollout(session, rollout_id=rollout_id, for_update=for_update)
    if row is None:
        raise RolloutNotFound(f"no rollout {rollout_id!r}")
    return row


def public(row: Rollout) -> RolloutPublic:
    """A rollout as the API lists it."""
    state = load(row)
    return RolloutPublic(
        rollout_id=row.id,
        model_name=row.model_name,
        model_version=row.model_version,
        target_path=row.target_path,
        status=state.status,
        stage=state.stage,
        stages=len(state.stage_ends),
        pause_reason=state.pause_reason,
        devices=len(state.devices),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def detail(row: Rollout) -> RolloutDetail:
    """A rollout with its verdicts, progress and every device's desired and reported state."""
    state = load(row)
    spec = state.spec
    devices = []
    for r in state.devices:
        desired_target = {
            Desired.NEW: spec.model.target_path,
            Desired.PREVIOUS: r.previous.target_path,
        }.get(r.desired)
        devices.append(
            RolloutDevicePublic(
                device_id=r.device_id,
                stage=r.stage,
                desired=r.desired,
                desired_target=desired_target,
                previous_version=r.previous.version,
                reported=r.reported.value if r.reported else None,
                reported_version=r.reported_version,
                reported_at=r.reported_at,
                outcome=rollout_engine.outcome(r, spec),
            )
        )
    progress = Counter(d.outcome.value for d in devices if d.desired is Desired.NEW)
    progress.update(f"desired_{d.desired.value}" for d in devices)
    return RolloutDetail(
        **public(row).model_dump(),
        verdicts=list(state.verdicts),
        progress=dict(progress),
        device_states=devices,
    )
