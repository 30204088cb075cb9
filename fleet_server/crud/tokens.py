"""API tokens and dashboard sessions (only their hashes are stored)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import Session, col

from fleet_server.models import ApiToken, DashboardSession


def create_token(
    session: Session,
    *,
    name: str,
    role: str,
    token_hash: str,
    kind: str = "issued",
    expires_at: datetime | None = None,
    created_by_id: int | None = None,
) -> ApiToken:
    """Store an API token's hash."""
    row = ApiToken(
        name=name,
        role=role,
        token_hash=token_hash,
        kind=kind,
        expires_at=expires_at,
        created_by_id=created_by_id,
    )
    session.add(row)
    session.flush()
    return row


def find_token(session: Session, *, token_hash: str) -> ApiToken | None:
    """The token with this hash, revoked or expired or not (`security.is_live` decides)."""
    statement = select(ApiToken).where(col(ApiToken.token_hash) == token_hash)
    return session.execute(statement).scalar_one_or_none()


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, oldest first."""
    return list(session.execute(select(ApiToken).order_by(col(ApiToken.id))).scalars())


def lock_token(session: Session, *, token_id: int) -> ApiToken | None:
    """The token as committed now, its row locked until the transaction ends; None if none.

    Issuing under the issuer's lock and revoking under the revoked token's lock serialise the
    two: a token revoked while it issues another either sees that child (and revokes it) or
    makes the issue fail, never leaves it live. (SQLite has no row locks; its writes serialise.)
    """
    statement = (
        select(ApiToken)
        .where(col(ApiToken.id) == token_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.execute(statement).scalar_one_or_none()


def revoke_token(session: Session, *, token_id: int, now: datetime) -> ApiToken | None:
    """Revoke a token (a revoked one keeps its first revocation time); None if there is none.

    Only that token: `revoke_issued_by` reaches the tokens it issued.
    """
    token = lock_token(session, token_id=token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = now
        session.add(token)
        session.flush()
    return token


def revoke_issued_by(session: Session, *, token_ids: Sequence[int], now: datetime) -> list[int]:
    """Revoke every live token that `token_ids` issued, directly or through others.

    The walk goes through tokens already revoked, so revoking again reaches a child that a
    revocation once left live. It must run after the issuers are locked (`lock_token`), as a
    statement of its own, to see a child committed while it waited. The ids revoked, in order.
    """
    if not token_ids:
        return []
    issued = (
        select(col(ApiToken.id).label("id"))
        .where(col(ApiToken.created_by_id).in_(token_ids))
        .cte("issued", recursive=True)
    )
    # UNION, not UNION ALL: a cycle (only a hand-edited table can have one) ends the walk.
    issued = issued.union(
        select(col(ApiToken.id)).join(issued, col(ApiToken.created_by_id) == issued.c.id)
    )
    statement = (
        update(ApiToken)
        .where(col(ApiToken.id).in_(select(issued.c.id)), col(ApiToken.revoked_at).is_(None))
        .values(revoked_at=now)
        .returning(col(ApiToken.id))
    )
    return sorted(int(token_id) for token_id in session.execute(statement).scalars())


def revoke_tokens_of_kind(session: Session, *, kind: str, keep_id: int, now: datetime) -> list[int]:
    """Revoke every live token of `kind` but one; return the ids revoked."""
    statement = (
        update(ApiToken)
        .where(
            col(ApiToken.kind) == kind,
            col(ApiToken.id) != keep_id,
            col(ApiToken.revoked_at).is_(None),
        )
        .values(revoked_at=now)
        .returning(col(ApiToken.id))
    )
    return [int(token_id) for token_id in session.execute(statement).scalars()]


def create_dashboard_session(
    session: Session, *, session_hash: str, token_id: int, expires_at: datetime
) -> DashboardSession:
    """Store a dashboard login (the hash of its id)."""
    row = DashboardSession(session_hash=session_hash, token_id=token_id, expires_at=expires_at)
    session.add(row)
    session.flush()
    return row


def find_dashboard_session(
    session: Session, *, session_hash: str
) -> tuple[DashboardSession, ApiToken] | None:
    """The dashboard session with this hash and its token, ended or not."""
    statement = (
        select(DashboardSession, ApiToken)
        .join(ApiToken, col(ApiToken.id) == col(DashboardSession.token_id))
        .where(col(DashboardSession.session_hash) == session_hash)
    )
    row = session.execute(statement).one_or_none()
    return None if row is None else (row[0], row[1])


def end_dashboard_session(session: Session, *, session_id: int, now: datetime) -> None:
    """Mark a dashboard session ended (logout): its cookie is refused from now on."""
    session.execute(
        update(DashboardSession)
        .where(col(DashboardSession.id) == session_id, col(DashboardSession.ended_at).is_(None))
        .values(ended_at=now)
    )
