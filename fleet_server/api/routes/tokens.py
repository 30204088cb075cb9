"""API tokens: issue (the secret is shown once), list (never a secret), revoke. Admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from fleet_server import crud
from fleet_server.api.deps import AdminDep, SessionDep
from fleet_server.exceptions import TokenError
from fleet_server.models import ApiToken, ApiTokenCreate, ApiTokenIssued, ApiTokenPublic, utcnow
from fleet_server.services.tokens import issue_token

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])
MAX_ID = 2**31 - 1  # token ids are 32-bit integers


@router.post(
    "",
    response_model=ApiTokenIssued,
    status_code=status.HTTP_201_CREATED,
    summary="Issue a token",
)
def create(body: ApiTokenCreate, session: SessionDep, caller: AdminDep) -> ApiTokenIssued:
    """A new admin or reader token, optionally expiring; its secret is in this answer only."""
    try:
        return issue_token(session, body=body, created_by_id=caller.token.id)
    except TokenError as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(e)) from e


@router.get("", response_model=list[ApiTokenPublic], summary="List tokens")
def list_tokens(session: SessionDep, _: AdminDep) -> list[ApiToken]:
    """Every token, live, expired or revoked, without secrets."""
    return crud.list_tokens(session)


@router.delete(
    "/{token_id}",
    response_model=ApiTokenPublic,
    summary="Revoke a token",
    responses={404: {"description": "No such token"}},
)
def revoke(
    token_id: Annotated[int, Path(ge=1, le=MAX_ID)], session: SessionDep, _: AdminDep
) -> ApiToken:
    """The token stops working at once, on every route, its dashboard sessions and live feeds."""
    token = crud.revoke_token(session, token_id=token_id, now=utcnow())
    if token is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no token {token_id}")
    return token
