"""What the token and dashboard-session tests share: settings, logins, and the app's API routes."""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, update

from fleet_server.api.deps import COOKIE
from fleet_server.db import session_scope
from fleet_server.models import ApiToken
from fleet_server.settings import AuthSettings, DatabaseSettings, ServerSettings

AnyClient = httpx.Client | TestClient  # a real server's client or the in-process one
ADMIN = "rsf_auth-tests-bootstrap-admin"
NO_SUCH_ID = "999999"  # fills every path parameter: no route finds anything to change


def settings_for(database: DatabaseSettings, **auth: object) -> ServerSettings:
    """Development settings on `database` with the test bootstrap token and `auth` fields."""
    fields: dict[str, object] = {"bootstrap_admin_token": SecretStr(ADMIN), **auth}
    return ServerSettings(database=database, auth=AuthSettings.model_validate(fields))


def bearer(token: str) -> dict[str, str]:
    """Headers that present `token` as a bearer token."""
    return {"Authorization": f"Bearer {token}"}


def cookie(value: str) -> dict[str, str]:
    """Headers that present a dashboard session cookie."""
    return {"Cookie": f"{COOKIE}={value}"}


def login(client: AnyClient, token: str) -> str:
    """Log in on the dashboard form; the session cookie's value (the client keeps no cookies)."""
    response = client.post("/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/"
    value = response.cookies[COOKIE]
    client.cookies.clear()
    return value


def csrf_of(client: AnyClient, session_cookie: str) -> str:
    """The CSRF token the dashboard gives the session (from its pages' meta tag)."""
    page = client.get("/", headers=cookie(session_cookie))
    assert page.status_code == 200
    found = re.search(r"<meta name='csrf-token' content='([^']+)'>", page.text)
    assert found is not None, "the page carries no CSRF token"
    return found.group(1)


def issue(
    client: AnyClient, *, role: str = "admin", by: str = ADMIN, **fields: object
) -> dict[str, object]:
    """Issue a token through the API as the admin token `by`; the answer (with the secret)."""
    response = client.post(
        "/api/v1/tokens", json={"name": "test", "role": role, **fields}, headers=bearer(by)
    )
    assert response.status_code == 201, response.text
    issued: dict[str, object] = response.json()
    return issued


def change_token(engine: Engine, token_id: object, **values: datetime | None) -> None:
    """Set columns of a token directly in the database (an expiry in the past, say)."""
    with session_scope(engine) as session:
        session.execute(update(ApiToken).where(ApiToken.id == token_id).values(**values))  # type: ignore[arg-type]


class ApiCall(NamedTuple):
    """One operation of the API, its path parameters filled."""

    method: str
    path: str
    streams: bool  # an endless event stream, which a test client cannot read to its end


def api_calls(app: FastAPI) -> list[ApiCall]:
    """Every operation of the app's OpenAPI document.

    A route added later is covered without editing a list.
    """
    calls = []
    for template, operations in app.openapi()["paths"].items():
        path = re.sub(r"\{[^}]+\}", NO_SUCH_ID, template)
        for method, operation in operations.items():
            streams = "text/event-stream" in str(operation.get("responses", {}))
            calls.append(ApiCall(method.upper(), path, streams))
    return calls
