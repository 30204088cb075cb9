"""The TUF repository's rows: signed metadata versions, target files, published model versions.

Target bytes are read in slices (``substr`` on the stored bytea), so serving a model never holds
a whole bundle per download in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlmodel import Session, col

from fleet_server.models import Device, ModelVersion, TufMetadata, TufTarget

REPOSITORY_LOCK_KEY = 0x524F_5453_5455_4601
"""pg_advisory_xact_lock key of the repository ("ROTSTUF" + 1): one signer at a time."""


def lock_repository(session: Session) -> None:
    """Hold the repository's advisory lock until the transaction ends (PostgreSQL only).

    Two replicas signing at once would both make snapshot N+1 from the same N: one would fail
    on the unique (role, version), or worse, clients would see two different versions N+1.
    SQLite serialises writers itself.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REPOSITORY_LOCK_KEY})


def latest_metadata(session: Session) -> dict[str, TufMetadata]:
    """The newest stored version of every role, by role."""
    newest = (
        select(col(TufMetadata.role), func.max(col(TufMetadata.version)).label("version"))
        .group_by(col(TufMetadata.role))
        .subquery()
    )
    statement = select(TufMetadata).join(
        newest,
        (col(TufMetadata.role) == newest.c.role) & (col(TufMetadata.version) == newest.c.version),
    )
    return {row.role: row for row in session.execute(statement).scalars()}


def latest_role_metadata(session: Session, *, role: str) -> TufMetadata | None:
    """The newest version of one role."""
    statement = (
        select(TufMetadata)
        .where(col(TufMetadata.role) == role)
        .order_by(col(TufMetadata.version).desc())
        .limit(1)
    )
    return session.execute(statement).scalar_one_or_none()


def role_metadata(session: Session, *, role: str, version: int) -> TufMetadata | None:
    """One version of one role."""
    statement = select(TufMetadata).where(
        col(TufMetadata.role) == role, col(TufMetadata.version) == version
    )
    return session.execute(statement).scalar_one_or_none()


def add_metadata(
    session: Session, *, role: str, version: int, content: bytes, expires: datetime
) -> None:
    """Store one signed version of a role (a duplicate version fails the transaction)."""
    session.add(TufMetadata(role=role, version=version, content=content, expires=expires))
    session.flush()


def add_target(
    session: Session, *, path: str, sha256: str, content: bytes, custom: dict[str, Any]
) -> TufTarget:
    """Store a target file's bytes."""
    row = TufTarget(path=path, sha256=sha256, length=len(content), content=content, custom=custom)
    session.add(row)
    session.flush()
    return row


def target_head(session: Session, *, path: str) -> tuple[int, str, int] | None:
    """(id, sha256, length) of the target at `path`, without its bytes."""
    statement = select(col(TufTarget.id), col(TufTarget.sha256), col(TufTarget.length)).where(
        col(TufTarget.path) == path
    )
    found = session.execute(statement).one_or_none()
    return None if found is None else (int(found[0]), str(found[1]), int(found[2]))


def target_sha256s(session: Session, *, paths: Sequence[str]) -> dict[str, str]:
    """The sha256 of each stored target among `paths` (what devices verify), by path."""
    if not paths:
        return {}
    statement = select(col(TufTarget.path), col(TufTarget.sha256)).where(
        col(TufTarget.path).in_(list(paths))
    )
    return {str(path): str(sha256) for path, sha256 in session.execute(statement)}


def target_slice(session: Session, *, target_id: int, offset: int, size: int) -> bytes:
    """`size` bytes of a target from `offset` (0-based): fewer at its end."""
    # substr counts from 1, on bytea (PostgreSQL) as on blobs (SQLite).
    statement = select(func.substr(TufTarget.content, offset + 1, size)).where(
        col(TufTarget.id) == target_id
    )
    data = session.execute(statement).scalar_one()
    return bytes(data)


def next_release(session: Session) -> int:
    """The release number the next published model version gets (1 for the first)."""
    highest = session.execute(select(func.max(ModelVersion.release))).scalar_one()
    return int(highest or 0) + 1


def add_model_version(session: Session, *, model: ModelVersion) -> ModelVersion:
    """Store a published model version."""
    session.add(model)
    session.flush()
    return model


def find_model_version(session: Session, *, name: str, version: str) -> ModelVersion | None:
    """The published model version `name` `version`."""
    statement = select(ModelVersion).where(
        col(ModelVersion.name) == name, col(ModelVersion.version) == version
    )
    return session.execute(statement).scalar_one_or_none()


def list_model_versions(session: Session) -> list[ModelVersion]:
    """Every published model version, newest release first."""
    statement = select(ModelVersion).order_by(col(ModelVersion.release).desc())
    return list(session.execute(statement).scalars())


def devices_running(session: Session, *, versions: Sequence[str]) -> dict[str, list[str]]:
    """Per model version, the devices whose latest health report names it (sorted ids)."""
    if not versions:
        return {}
    statement = (
        select(col(Device.model_version), col(Device.device_id))
        .where(col(Device.model_version).in_(list(versions)))
        .order_by(col(Device.device_id))
    )
    running: dict[str, list[str]] = {}
    for version, device_id in session.execute(statement):
        running.setdefault(str(version), []).append(device_id)
    return running


def enrolled_device_ids(session: Session, *, device_ids: Sequence[str]) -> set[str]:
    """Those of `device_ids` that are enrolled and not decommissioned."""
    if not device_ids:
        return set()
    statement = select(col(Device.device_id)).where(
        col(Device.device_id).in_(list(device_ids)), col(Device.status) != "decommissioned"
    )
    return set(session.execute(statement).scalars())
