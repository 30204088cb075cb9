"""Issuing and revoking API tokens, for the API (``/api/v1/tokens``) and ``roadsign-fleet tokens``.

Tokens form a lineage: each one issued through the API records the token that issued it
(``created_by_id``). A token never outlives its issuer, and revoking a token revokes everything
it issued, directly or through others: whoever held a leaked admin token cannot keep its power
through the tokens they made with it. Tokens issued with the CLI (by whoever can reach the
database) and the bootstrap token have no issuer.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from fleet_server import crud
from fleet_server.exceptions import IssuerNotLive, TokenError
from fleet_server.models import ApiTokenCreate, ApiTokenIssued, ApiTokenRevoked, utcnow
from fleet_server.security import bounded_expiry, generate_token, hash_token, is_live


def issue_token(session: Session, *, body: ApiTokenCreate, issuer_id: int | None) -> ApiTokenIssued:
    """Make a token as `body` asks, issued by token `issuer_id` (None: by nobody), and store its
    hash; the result holds the secret, once.

    The issuer is read again under its row lock (`crud.lock_token`), so a revocation that
    committed since the caller was authenticated is seen: IssuerNotLive.
    """
    now = utcnow()
    requested = body.expiry(now)
    if requested is not None and requested <= now:
        raise TokenError("expires_at is not in the future")
    issuer_expiry: datetime | None = None
    if issuer_id is not None:
        issuer = crud.lock_token(session, token_id=issuer_id)
        if issuer is None or not is_live(
            ended_at=issuer.revoked_at, expires_at=issuer.expires_at, now=now
        ):
            raise IssuerNotLive(f"the issuing token {issuer_id} is no longer live")
        issuer_expiry = issuer.expires_at
    secret = generate_token()
    row = crud.create_token(
        session,
        name=body.name,
        role=body.role,
        token_hash=hash_token(secret),
        expires_at=bounded_expiry(requested, issuer_expiry),
        created_by_id=issuer_id,
    )
    return ApiTokenIssued.model_validate({**row.model_dump(), "token": secret})


def revoke_token_and_issued(
    session: Session, *, token_id: int, now: datetime
) -> ApiTokenRevoked | None:
    """Revoke a token and, transitively, every token it issued; None if there is no such token.

    Dashboard sessions and live feeds end with their tokens (they check the token each time).
    Revoking a revoked token again still reaches what it issued.
    """
    token = crud.revoke_token(session, token_id=token_id, now=now)  # locks it first
    if token is None:
        return None
    also = crud.revoke_issued_by(session, token_ids=[token_id], now=now)
    return ApiTokenRevoked.model_validate({**token.model_dump(), "revoked_with_it": also})
