"""The repository's metadata in the database: load the newest versions, store what changed.

Every replica serves from these rows; writers hold the repository's advisory lock for their
transaction (`crud.lock_repository`), so two replicas never sign the same version twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session
from tuf.api.exceptions import RepositoryError as TufRepositoryError
from tuf.api.serialization import DeserializationError

from fleet_server import crud
from fleet_server.exceptions import RepositoryError, RepositoryNotInitialised
from fleet_server.repository.builder import BIN_PREFIX, DIRECTOR, RepoState
from fleet_server.repository.tuf_api import (
    Metadata,
    Root,
    Snapshot,
    SuccinctRoles,
    Targets,
    Timestamp,
)


def _parse(role: str, content: bytes) -> Metadata[Any]:
    try:
        return Metadata.from_bytes(content)
    except (DeserializationError, TufRepositoryError, ValueError) as e:
        raise RepositoryError(f"stored {role} metadata cannot be read: {e}") from e


def director_bins(content: bytes) -> SuccinctRoles:
    """The hash-bin delegation of stored director metadata; RepositoryError if it has none.

    Its bit length is fixed when the repository is initialised, so any version serves.
    """
    signed = _parse(DIRECTOR, content).signed
    delegations = signed.delegations if isinstance(signed, Targets) else None
    if delegations is None or delegations.succinct_roles is None:
        raise RepositoryError("the stored director delegates to no hash bins")
    return delegations.succinct_roles


def load_state(session: Session) -> RepoState:
    """The newest version of every role, as Metadata objects."""
    rows = crud.latest_metadata(session)
    if Root.type not in rows:
        raise RepositoryNotInitialised(
            "the TUF repository is not initialised: run `roadsign-fleet keys init`"
        )
    parsed = {role: _parse(role, row.content) for role, row in rows.items()}
    needed = (Targets.type, Snapshot.type, Timestamp.type, DIRECTOR)
    missing = [role for role in needed if role not in parsed]
    if missing:
        raise RepositoryError(f"the repository lacks {', '.join(missing)} metadata")
    return RepoState(
        root=parsed[Root.type],
        targets=parsed[Targets.type],
        snapshot=parsed[Snapshot.type],
        timestamp=parsed[Timestamp.type],
        director=parsed[DIRECTOR],
        bins={role: md for role, md in parsed.items() if role.startswith(BIN_PREFIX + "-")},
    )


def is_initialised(session: Session) -> bool:
    """Whether root metadata is stored."""
    return crud.latest_role_metadata(session, role=Root.type) is not None


def store(session: Session, changed: Sequence[tuple[str, Metadata[Any]]]) -> None:
    """Store each re-signed role as its new version."""
    for role, metadata in changed:
        crud.add_metadata(
            session,
            role=role,
            version=metadata.signed.version,
            content=metadata.to_bytes(),
            expires=metadata.signed.expires,
        )


def store_state(session: Session, state: RepoState) -> None:
    """Store every role of a new repository."""
    store(session, list(state.roles().items()))
