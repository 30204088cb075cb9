"""Issuing API tokens, for the API (``POST /api/v1/tokens``) and ``roadsign-fleet tokens issue``."""

from __future__ import annotations

from sqlmodel import Session

from fleet_server import crud
from fleet_server.exceptions import TokenError
from fleet_server.models import ApiTokenCreate, ApiTokenIssued, utcnow
from fleet_server.security import generate_token, hash_token


def issue_token(
    session: Session, *, body: ApiTokenCreate, created_by_id: int | None
) -> ApiTokenIssued:
    """Make a token as `body` asks and store its hash; the result holds the secret, once."""
    now = utcnow()
    expires_at = body.expiry(now)
    if expires_at is not None and expires_at <= now:
        raise TokenError("expires_at is not in the future")
    secret = generate_token()
    row = crud.create_token(
        session,
        name=body.name,
        role=body.role,
        token_hash=hash_token(secret),
        expires_at=expires_at,
        created_by_id=created_by_id,
    )
    return ApiTokenIssued.model_validate({**row.model_dump(), "token": secret})
