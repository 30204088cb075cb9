"""Request dependencies: the database session and the caller's API token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server import crud
from fleet_server.models import ApiToken
from fleet_server.security import Role, hash_token, role_allows

bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/login", auto_error=False)


def get_session(request: Request) -> Iterator[Session]:
    """A session for the request, committed if the handler succeeds."""
    engine: Engine = request.app.state.engine
    with Session(engine, expire_on_commit=False) as session:
        yield session
        session.commit()


SessionDep = Annotated[Session, Depends(get_session)]


def _caller(
    session: SessionDep, request: Request, token: Annotated[str | None, Depends(bearer)]
) -> ApiToken:
    presented = token or request.cookies.get("roadsign_token")
    found = crud.find_token(session, token_hash=hash_token(presented)) if presented else None
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a valid API token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


def require(role: Role) -> Callable[..., ApiToken]:
    """A dependency that admits tokens allowed to act as `role`."""

    def check(caller: Annotated[ApiToken, Depends(_caller)]) -> ApiToken:
        if not role_allows(caller.role, role):  # type: ignore[arg-type]
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs a {role} token")
        return caller

    return check


ReaderDep = Annotated[ApiToken, Depends(require("reader"))]
AdminDep = Annotated[ApiToken, Depends(require("admin"))]
