"""What ``roadsign-fleet rollouts ...`` does, behind the argument parsing: against the
configured database, as ``models publish`` does.

Commands step the rollout under its row lock, exactly as the API does, and store its actions
in the outbox; the rollout driver of a ``serve`` process (``rollouts.enabled``) carries them out
on its next tick, with the online key and the broker connection this command does not need.
Every command prints JSON: the rollout (or the list) as the API shows it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError
from sqlalchemy import Engine

from fleet_server import crud
from fleet_server.db import session_scope
from fleet_server.exceptions import RolloutRequestInvalid
from fleet_server.models import DeviceSelector, RolloutCreate, utcnow
from fleet_server.rollouts import requests
from fleet_server.rollouts.driver import step_rollout
from fleet_server.rollouts.gates import GatePolicy
from fleet_server.rollouts.values import RolloutCommand, StageSpec
from fleet_server.settings import ServerSettings


def parse_stages(text: str, soak_s: float) -> list[StageSpec]:
    """Stages from ``1%,10%,50%,100%`` (shares) or ``2,5,10`` (device counts), each soaking
    `soak_s` seconds."""
    stages = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if part.endswith("%"):
                stages.append(StageSpec(percent=float(part[:-1]), soak_s=soak_s))
            else:
                stages.append(StageSpec(count=int(part), soak_s=soak_s))
        except (ValueError, ValidationError) as e:
            raise RolloutRequestInvalid(f"stage {part!r}: {e}") from e
    return stages


def read_policy(path: Path | None) -> GatePolicy:
    """The gate policy of a JSON file (GatePolicy's fields); the defaults without one."""
    if path is None:
        return GatePolicy()
    try:
        return GatePolicy.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise RolloutRequestInvalid(f"policy file {path}: {e}") from e


def create(
    settings: ServerSettings,
    engine: Engine,
    *,
    model_name: str,
    model_version: str,
    rollout_id: str | None,
    select_all: bool,
    tags: Sequence[str],
    profile: str | None,
    device_ids: Sequence[str],
    stages: str,
    soak_s: float,
    policy_file: Path | None,
    start: bool,
) -> str:
    """Resolve and store a rollout; its detail as JSON."""
    try:
        body = RolloutCreate(
            rollout_id=rollout_id,
            model_name=model_name,
            model_version=model_version,
            selector=DeviceSelector(
                all=select_all, tags=list(tags), profile=profile, device_ids=list(device_ids)
            ),
            stages=parse_stages(stages, soak_s),
            policy=read_policy(policy_file),
            start=start,
        )
    except ValidationError as e:
        raise RolloutRequestInvalid(str(e)) from e
    with session_scope(engine) as session:
        row = requests.create_rollout(session, body, utcnow())
        return requests.detail(row).model_dump_json()


def list_all(engine: Engine) -> str:
    """Every rollout as a JSON list."""
    with session_scope(engine) as session:
        rows = [requests.public(row).model_dump(mode="json") for row in crud.list_rollouts(session)]
    return json.dumps(rows)


def show(engine: Engine, rollout_id: str) -> str:
    """One rollout's detail as JSON."""
    with session_scope(engine) as session:
        return requests.detail(requests.existing(session, rollout_id)).model_dump_json()


def command(
    settings: ServerSettings, engine: Engine, rollout_id: str, command: RolloutCommand
) -> str:
    """start, pause, resume, abort or rollback; the rollout's detail afterwards as JSON."""
    with session_scope(engine) as session:
        step_rollout(session, settings, rollout_id, utcnow(), command)
    return show(engine, rollout_id)
