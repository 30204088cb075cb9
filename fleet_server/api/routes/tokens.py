"""API tokens: issue (the secret is shown once), list (never a secret), revoke. Admins only.

A token never outlives the admin token that issued it, and revoking one revokes what it issued
(`fleet_server.services.tokens`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from fleet_server import crud
from fleet_server.api.deps import AdminDep, SessionDep
from fleet_server.exceptions import IssuerNotLive, TokenError
from fleet_server.models import (
    ApiToken,
    ApiTokenCreate,
    ApiTokenIssued,
    ApiTokenPublic,
    ApiTokenRevoked,
    utcnow,
)
from fleet_server.services.tokens import issue_token, revoke_token_and_issued

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])
MAX_ID = 2**31 - 1  # token ids are 32-bit integers


@router.post(
    "",
    response_model=ApiTokenIssued,
    status_code=status.HTTP_201_CREATED,
    summary="Issue a token",
)
def create(body: ApiTokenCreate, session: SessionDep, caller: AdminDep) -> ApiTokenIssued:
    """A new admin or reader token, optionally expiring; its secret is in this answer only.

    It expires no later than the caller's token (asked for later, or never, it gets that
    expiry) and is revoked with it.
    """
    try:
        return issue_token(session, body=body, issuer_id=caller.token.id)
    except IssuerNotLive as e:  # revoked or expired while this request ran
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(e), headers={"WWW-Authenticate": "Bearer"}
        ) from e
    except TokenError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from e


@router.get("", response_model=list[ApiTokenPublic], summary="List tokens")
def list_tokens(session: SessionDep, _: AdminDep) -> list[ApiToken]:
    """Every token, live, expired or revoked, without secrets."""
    return crud.list_tokens(session)


@router.delete(
    "/{token_id}",
    response_model=ApiTokenRevoked,
    summary="Revoke a token and the tokens it issued",
    responses={404: {"description": "No such token"}},
)
def revoke(
    token_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep, _: AdminDep
) -> ApiTokenRevoked:
    """The token stops working at once, on every route, its dashboard sessions and live feeds,
    and so does every token it issued, directly or through others."""
    token = revoke_token_and_issued(session, token_id=token_id, now=utcnow())
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
    return token
